"""Run one function over many genes: in this process, in forked local workers, or on a Dask cluster."""

from __future__ import annotations

import ctypes
import functools
import multiprocessing
import os
import signal
import sys
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

from tqdm.auto import tqdm

from .inputs import InputError

if TYPE_CHECKING:
    from distributed import Client

T = TypeVar("T")
PR_SET_PDEATHSIG = 1  # prctl(2) option: the signal a process gets when its parent dies


def map_tasks(func: Callable[[T], Any], tasks: Sequence[T], *, workers: int = 1, scheduler: str | Client | None = None,
              progress: bool = True, desc: str = "genes") -> list[Any]:
    """func over tasks with a progress bar; results in task order; the first error stops the run.

    `workers` > 1 forks local worker processes (where the platform allows) through Dask's multiprocessing
    scheduler: they start in milliseconds with everything imported, where a LocalCluster spends seconds
    spawning and importing. `scheduler` (an address, or a Client from `connected`) runs on a running
    dask.distributed cluster instead; an address nothing answers at is a one-line InputError (see `connect`).
    """
    if isinstance(scheduler, str):  # connected before the progress bar starts
        with connect(scheduler) as client:
            return map_tasks(func, tasks, workers=workers, scheduler=client, progress=progress, desc=desc)
    with tqdm(total=len(tasks), desc=desc, unit="gene", disable=not progress, file=sys.stderr) as bar:
        if scheduler:
            return _run_distributed(func, tasks, scheduler, bar.update)
        if workers <= 1 or len(tasks) <= 1:
            return [_finished(func(task), bar.update) for task in tasks]
        import dask
        from dask.callbacks import Callback

        context = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with dask.config.set({"multiprocessing.context": context}), Callback(posttask=lambda *_: bar.update()):
            return list(dask.compute(*[dask.delayed(func, pure=False)(t) for t in tasks], scheduler="processes",
                                     num_workers=workers, initializer=dying_with_this_process()))


def dying_with_this_process() -> Callable[[], None]:
    """An initializer for a child process (pool worker, or subprocess preexec_fn) that makes it die with this one."""
    return functools.partial(_die_with, os.getpid())


def _die_with(parent: int) -> None:
    """In the child: on Linux the kernel kills it when its parent dies (kill -9, OOM killer), so no orphan
    goes on writing the store (and holding its lock) after the command is gone."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above ran
        os._exit(1)


def _finished(result: Any, done: Callable[[], None]) -> Any:
    """Report one finished task and pass its result on."""
    done()
    return result


def connect(address: str) -> Client:
    """A Client of the dask.distributed scheduler at `address`, or a one-line InputError naming --scheduler and the fix.

    It waits up to dask's `distributed.comm.timeouts.connect` (30 s unless configured, e.g. with the environment
    variable DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT=10s) for the scheduler to answer.
    """
    import dask
    from distributed import Client

    timeout = dask.config.get("distributed.comm.timeouts.connect")
    fix = "start one (`dask scheduler`) and give the address it prints, e.g. tcp://HOST:8786"
    before = _default_client()
    try:
        return Client(address, timeout=timeout)
    except (ValueError, OSError, TimeoutError) as error:
        failed = _default_client()
        if failed is not None and failed is not before:
            failed.close()  # a Client that failed to start stays dask's default (and its scheduler) until closed
        if isinstance(error, ValueError):
            raise InputError(f"--scheduler {address}: not a scheduler address ({_first_line(error)}); {fix}") from None
        raise InputError(f"--scheduler {address}: no dask scheduler answered there within {timeout} ({_first_line(error)}); {fix}") from None


def _default_client() -> Client | None:
    """dask.distributed's default Client, or None when there is none."""
    from distributed import default_client

    try:
        return default_client()
    except ValueError:
        return None


def _first_line(error: BaseException) -> str:
    """An exception's message's first line, or its type's name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def connected(address: str | None) -> AbstractContextManager[Client | None]:
    """`connect(address)` as a context manager that closes the Client, or None when no address is given."""
    return connect(address) if address else nullcontext(None)


def _run_distributed(func: Callable[[T], Any], tasks: Sequence[T], client: Client, done: Callable[[], None]) -> list[Any]:
    """Run tasks on a running dask.distributed cluster; cancel the rest on the first error."""
    from distributed import as_completed

    futures = client.map(func, tasks, pure=False)
    results = {}
    try:
        for future in as_completed(futures):
            results[future.key] = _finished(future.result(), done)
    except BaseException:
        client.cancel(futures)
        raise
    return [results[future.key] for future in futures]
