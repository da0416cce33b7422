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
