"""The run's one progress display, fed by ``fan_out`` on a real LocalCluster."""

from __future__ import annotations

import pytest

from nclsm_scale.cluster import fan_out
from nclsm_scale.progress import RunProgress, current


def _square(x: int) -> int:
    return x * x


def _fail_on(x: int, bad: int) -> int:
    if x == bad:
        raise ValueError(f"task {x} failed")
    return x


def test_fan_out_reports_to_the_run_progress_of_its_thread(client):
    progress = RunProgress(n_slides=2, n_stages=4, disable=True)
    token = current.set((progress, "S1"))
    try:
        assert fan_out(client, _square, [(x,) for x in range(6)], desc="test") == [x * x for x in range(6)]
        assert (progress.tasks_done, progress.tasks_total) == (6, 6)
        assert progress.bar.n == 1.0  # one stage's worth: its tasks are all done
        fan_out(client, _square, [(6,), (7,)], desc="test")
        assert (progress.tasks_done, progress.tasks_total) == (8, 8)
    finally:
        current.reset(token)
    progress.stage_finished("S1")
    assert progress.bar.n == 1.0  # the finished stage replaces its partial share
    progress.stage_finished("S2", 4)  # a failed slide's remaining stages
    progress.fibres_found(120)
    progress.slide_finished(failed=False)
    progress.slide_finished(failed=True)
    assert (progress.bar.n, progress.bar.total) == (5.0, 8)
    assert (progress.slides_done, progress.slides_failed, progress.fibres) == (1, 1, 120)
    assert "slides 1/2 done, 1 failed; blocks 8/8; fibres 120" in str(progress.bar.postfix)
    progress.close()


def test_fan_out_outside_a_run_returns_results_in_call_order(client):
    assert current.get() is None
    assert fan_out(client, _square, [(x,) for x in (3, 1, 2)], desc="test") == [9, 1, 4]
    assert fan_out(client, _square, [], desc="test") == []


def test_fan_out_reraises_the_first_task_error(client):
    with pytest.raises(ValueError, match="task 2 failed"):
        fan_out(client, _fail_on, [(x, 2) for x in range(5)], desc="test", retries=1)


def test_fan_out_without_a_client_runs_here_in_order():
    assert fan_out(None, _square, [(2,), (3,)], desc="test") == [4, 9]
