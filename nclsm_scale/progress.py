"""One progress display for a whole run: slides, block tasks, fibres found and an ETA.

Stage drivers count their Dask tasks through :func:`nclsm_scale.cluster.fan_out`.
Outside a run, each call shows its own bar. Inside ``run``, every slide's thread
sets :data:`current` to the run's :class:`RunProgress` and the slide's name; ``fan_out`` then reports
to it instead, and the run shows one bar whose unit is a slide stage: a stage in
progress counts as the share of its tasks finished, so the ETA moves with the
blocks, not only when a slide ends.

Every bar of the tool draws only on a terminal and never after ``--quiet``
(:func:`set_quiet`, :func:`bar_disabled`).
"""

from __future__ import annotations

import contextvars
import threading

__all__ = ["RunProgress", "bar_disabled", "current", "set_quiet"]

_quiet = [False]  # set by the command line's --quiet

#: The run progress of the calling thread and the key of its slide (None outside ``run``).
current: contextvars.ContextVar[tuple[RunProgress, str] | None] = contextvars.ContextVar(
    "nclsm_progress", default=None)


def set_quiet(quiet: bool) -> None:
    """Hide every progress bar of this process (the command line's ``--quiet``)."""
    _quiet[0] = quiet


def bar_disabled(show: bool | None = None) -> bool | None:
    """Tqdm's ``disable`` for a bar: hidden when quiet or ``show`` is False, else only on a terminal (None).

    >>> bar_disabled(False)
    True
    """
    if _quiet[0] or show is False:
        return True
    return None


class RunProgress:
    """Thread-safe counts of a run, drawn as one tqdm bar.

    Parameters
    ----------
    n_slides : int
        Slides in the run.
    n_stages : int
        Stages per slide; the bar's total is ``n_slides * n_stages``.
    disable : bool, optional
        ``None`` draws the bar only on a terminal (and never when quiet, :func:`set_quiet`).
    """

    def __init__(self, n_slides: int, n_stages: int, *, disable: bool | None = None) -> None:
        from tqdm.auto import tqdm

        self.n_slides, self.n_stages = n_slides, n_stages
        self.slides_done = self.slides_failed = 0
        self.stages_done = 0
        self.tasks_done = self.tasks_total = 0
        self.fibres = 0
        self._tasks: dict[str, tuple[int, int]] = {}  # per slide key: its current stage's (done, total) tasks
        self._lock = threading.Lock()
        self.bar = tqdm(total=n_slides * n_stages, desc="run", unit="stage",
                        disable=True if disable else bar_disabled(),
                        bar_format="{l_bar}{bar}| {n:.1f}/{total} stages [{elapsed}<{remaining}]{postfix}")

    def close(self) -> None:
        """Close the bar."""
        self.bar.close()

    def _draw(self) -> None:
        self.bar.n = self.stages_done + sum(d / t for d, t in self._tasks.values() if t)
        self.bar.set_postfix_str(
            f"slides {self.slides_done}/{self.n_slides} done, {self.slides_failed} failed; "
            f"blocks {self.tasks_done}/{self.tasks_total}; fibres {self.fibres}",
            refresh=True,
        )

    def tasks_added(self, key: str, n: int) -> None:
        """``n`` more tasks are counted for ``key`` (one slide's current stage)."""
        with self._lock:
            self.tasks_total += n
            done, total = self._tasks.get(key, (0, 0))
            self._tasks[key] = (done, total + n)
            self._draw()

    def task_done(self, key: str) -> None:
        """One task of ``key`` finished."""
        with self._lock:
            self.tasks_done += 1
            done, total = self._tasks[key]
            self._tasks[key] = (done + 1, total)
            self._draw()

    def stage_finished(self, key: str, n: int = 1) -> None:
        """``n`` stages of slide ``key`` are complete (or will not run); its task counts are cleared."""
        with self._lock:
            self._tasks.pop(key, None)
            self.stages_done += n
            self._draw()

    def fibres_found(self, n: int) -> None:
        """A slide's segmentation found ``n`` fibres."""
        with self._lock:
            self.fibres += n
            self._draw()

    def slide_finished(self, failed: bool) -> None:
        """A slide ended, done or failed."""
        with self._lock:
            if failed:
                self.slides_failed += 1
            else:
                self.slides_done += 1
            self._draw()
