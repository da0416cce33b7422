"""Run one function over many genes: in this process, in forked local workers, or on a Dask cluster."""

from __future__ import annotations

import ctypes
import functools
import multiprocessing
import os
import signal
import sys
from typing import Any, Callable, Sequence, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
PR_SET_PDEATHSIG = 1  # prctl(2) option: the signal a process gets when its parent dies


def map_tasks(func: Callable[[T], Any], tasks: Sequence[T], *, workers: int = 1, scheduler: str | None = None,
              progress: bool = True, desc: str = "genes") -> list[Any]:
    """func over tasks with a progress bar; results in task order; the first error stops the run.

    `workers` > 1 forks local worker processes (where the platform allows) through Dask's multiprocessing
    scheduler: they start in milliseconds with everything imported, where a LocalCluster spends seconds
    spawning and importing. `scheduler` runs on a running dask.distributed cluster instead.
    """
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


def _run_distributed(func: Callable[[T], Any], tasks: Sequence[T], address: str, done: Callable[[], None]) -> list[Any]:
    """Run tasks on a running dask.distributed cluster; cancel the rest on the first error."""
    from distributed import Client, as_completed

    with Client(address) as client:
        futures = client.map(func, tasks, pure=False)
        results = {}
        try:
            for future in as_completed(futures):
                results[future.key] = _finished(future.result(), done)
        except BaseException:
            client.cancel(futures)
            raise
        return [results[future.key] for future in futures]
