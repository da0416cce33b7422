"""Local worker processes: results in order, and no worker outlives a killed command."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from performer_store.parallel import map_tasks


def test_workers_return_results_in_task_order():
    """Forked workers give the same results, in the same order, as this process."""
    assert map_tasks(abs, [-3, 1, -2, 5], workers=2, progress=False) == [3, 1, 2, 5]


SLEEPING_CHILD = ("import subprocess, sys; from performer_store.parallel import dying_with_this_process; "
                  "subprocess.run([sys.executable, '-c', 'import time; time.sleep(60)'], preexec_fn=dying_with_this_process())")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
@pytest.mark.parametrize("command, children", [
    ("import time; from performer_store.parallel import map_tasks; map_tasks(time.sleep, [60] * 4, workers=2)", 2),
    (SLEEPING_CHILD, 1),  # as `pstore run` starts its training
])
def test_workers_die_with_a_killed_parent(command, children):
    """kill -9 of the command (as the OOM killer does) takes its workers with it: none goes on writing."""
    parent = psutil.Process(subprocess.Popen([sys.executable, "-c", command]).pid)
    deadline = time.monotonic() + 60
    while len(workers := parent.children()) < children and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(workers) == children, "the workers never started"
    parent.kill()
    parent.wait(10)
    gone, alive = psutil.wait_procs(workers, timeout=10)
    alive = [w for w in alive if w.status() != psutil.STATUS_ZOMBIE]  # dead, waiting for init to reap it
    for worker in alive:
        worker.kill()
    assert not alive, f"workers {[w.pid for w in alive]} outlived their parent"


def unused_port() -> int:
    """A localhost TCP port nothing listens on (bound once by the OS, then closed)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_scheduler_address_nothing_answers_at_is_a_one_line_error(tiny, tiny_store, tmp_path):
    """A malformed --scheduler and one where no scheduler listens: InputError naming the address and the fix (within
    the configured connect timeout) for enet, query and build; build --force leaves the store as it was."""
    import shutil

    import dask
    import dask.array
    from conftest import build_args, pstore

    from performer_store.inputs import InputError
    from performer_store.parallel import connect
    from performer_store.store import Store
    from performer_store.validate import validate_store

    import distributed  # noqa: F401 (its config defaults, before dask.config.set below: leaving the block restores them)

    unreachable = f"tcp://127.0.0.1:{unused_port()}"
    store = tmp_path / "store.zarr"
    shutil.copytree(tiny_store, store)
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        started = time.monotonic()
        with pytest.raises(InputError, match=f"--scheduler {unreachable}: no dask scheduler answered there within 1s"):
            connect(unreachable)
        assert time.monotonic() - started < 20
        for command, address in ((["enet", "--store", str(store), "--quiet"], "bogus"),
                                 (["query", "--store", str(store), "--out", str(tmp_path / "q.tsv")], unreachable),
                                 (build_args(tiny, store, "--force"), "bogus")):
            result = pstore(*command, "--scheduler", address, expect=1)
            assert isinstance(result.exception, SystemExit), result.exception
            why = "not a scheduler address (missing port number" if address == "bogus" else "no dask scheduler answered there within 1s"
            assert result.output.startswith(f"Error: --scheduler {address}: {why}")
            assert "start one (`dask scheduler`) and give the address it prints" in result.output
    assert not (tmp_path / "q.tsv").exists() and validate_store(store) == [] and len(Store(store).genes) == 4
    assert not (store / "genes" / "ENSG00000000001.1" / "results").exists()
    assert dask.config.get("scheduler", None) is None  # the failed Clients left dask's default scheduler alone
    assert dask.array.ones(3).sum().compute() == 3
