import threading
import time
from pathlib import Path

import pytest

from refacex_plugin.batch import Job, default_workers, run_jobs
from refacex_plugin.errors import RefacexError


def _jobs(n):
    return [Job(Path(f"f{i}.png"), Path(f"f{i}.png"), None) for i in range(n)]


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_results_finish_in_job_order_and_failures_do_not_stop_the_run(workers):
    running, peak, started = [0], [0], []
    lock = threading.Lock()

    def work(job):
        i = int(job.src.stem[1:])
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            started.append(i)
        time.sleep(0.02 * ((7 * i) % 3))  # later jobs often finish first
        with lock:
            running[0] -= 1
        if i == 5:
            raise RefacexError(f"{job.src}: corrupt image")
        if i == 8:
            raise ValueError("boom")
        return i

    finished = []
    summary = run_jobs(_jobs(12), work, lambda job, i, s: finished.append(i), progress=False, log=lambda msg: None, workers=workers)
    assert finished == [i for i in range(12) if i not in (5, 8)]
    assert summary.images == 10
    assert summary.failed == [("f5.png", "f5.png: corrupt image"), ("f8.png", "f8.png: unexpected ValueError: boom")]
    assert peak[0] <= workers and (workers == 1 or peak[0] > 1)


def test_memory_stays_bounded_on_a_long_folder():
    """Work is started at most ``workers + 1`` jobs ahead of what has been finished."""
    finished, ahead = [], []

    def work(job):
        ahead.append(int(job.src.stem[1:]) - len(finished))
        return None

    run_jobs(_jobs(40), work, lambda job, r, s: finished.append(job), progress=False, workers=2)
    assert len(finished) == 40 and max(ahead) <= 3


def test_default_workers_is_a_small_positive_number():
    assert 1 <= default_workers() <= 4
