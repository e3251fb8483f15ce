"""The run's one progress display, fed by ``track`` on a real LocalCluster."""

from __future__ import annotations

from nclsm_scale.cluster import track
from nclsm_scale.progress import RunProgress, current


def _square(x: int) -> int:
    return x * x


def test_track_reports_to_the_run_progress_of_its_thread(client):
    progress = RunProgress(n_slides=2, n_stages=4, disable=True)
    token = current.set((progress, "S1"))
    try:
        futures = client.map(_square, range(6), pure=False)
        seen = [f.result() for f in track(futures, "test")]
        assert sorted(seen) == [x * x for x in range(6)]
        assert (progress.tasks_done, progress.tasks_total) == (6, 6)
        assert progress.bar.n == 1.0  # one stage's worth: its tasks are all done
        more = client.map(_square, range(6, 8), pure=False)
        list(track(more, "test"))
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


def test_track_outside_a_run_draws_its_own_bar_and_yields_every_future(client):
    assert current.get() is None
    futures = client.map(_square, range(4), pure=False)
    assert sorted(f.result() for f in track(futures, "test", disable=True)) == [0, 1, 4, 9]
