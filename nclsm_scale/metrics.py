"""Prometheus metrics of the run itself, served by the Dask scheduler's ``/metrics``.

:class:`RunMetricsPlugin` is a scheduler plugin: on the scheduler process it
registers one collector in ``prometheus_client.REGISTRY`` (the registry the
scheduler's ``/metrics`` handler serialises next to the ``dask_*`` metrics) and
keeps the counts it reports:

- ``nclsm_slides_done_total``, ``nclsm_slides_failed_total{stage}``,
  ``nclsm_fibres_total`` and ``nclsm_stage_seconds{stage}`` (a summary:
  ``_count`` and ``_sum``), fed by :func:`report_event` from the client side
  through ``Client.log_event`` on the topic :data:`TOPIC`;
- ``nclsm_blocks_done_total{stage}`` and ``nclsm_blocks_failed_total{stage}``,
  counted by the plugin itself from the transitions of the segment driver's
  block tasks (:data:`BLOCK_TASKS`).

:func:`register_metrics` and :func:`report_slide` never raise: metrics must never
break a run, so their failures are logged and the run goes on.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

__all__ = [
    "BLOCK_TASKS",
    "PLUGIN_NAME",
    "TOPIC",
    "RunMetricsPlugin",
    "register_metrics",
    "report_event",
    "report_slide",
]

logger = logging.getLogger(__name__)

#: Event topic the client reports on and the plugin listens to.
TOPIC = "nclsm-metrics"
#: Name the plugin is registered under on the scheduler.
PLUGIN_NAME = "nclsm-metrics"
#: Segment driver task functions (key prefixes) -> ``stage`` label of the block counters.
BLOCK_TASKS = {"seeds_task": "seeds", "assign_task": "assign", "maps_task": "maps"}
#: Event kinds -> the values each one requires.
_KINDS = {"slide_done": {"fibres"}, "slide_failed": {"stage"}, "stage": {"stage", "seconds"}}

#: Plugins started in this process, latest last; the collector reports the latest
#: (several schedulers in one process, as in tests, run one after another).
_LIVE: list[RunMetricsPlugin] = []
_collector_registered = False


class RunMetricsPlugin(SchedulerPlugin):
    """Scheduler plugin holding the run's counts and exposing them to Prometheus."""

    idempotent = True
    name = PLUGIN_NAME

    def __init__(self) -> None:
        self.slides_done = 0
        self.slides_failed: Counter[str] = Counter()
        self.fibres = 0
        self.stage_count: Counter[str] = Counter()
        self.stage_sum_s: dict[str, float] = defaultdict(float)
        self.blocks_done: Counter[str] = Counter()
        self.blocks_failed: Counter[str] = Counter()

    async def start(self, scheduler: Any) -> None:
        """Make this plugin the one the process-wide collector reports."""
        global _collector_registered
        import prometheus_client

        if not _collector_registered:
            prometheus_client.REGISTRY.register(_Collector())
            _collector_registered = True
        _LIVE.append(self)

    async def close(self) -> None:
        """Stop reporting this plugin's counts."""
        if self in _LIVE:
            _LIVE.remove(self)

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        """Count segment blocks that finished (processing -> memory) or failed (-> erred)."""
        if start != "processing" or finish not in ("memory", "erred"):
            return
        from dask.utils import key_split

        stage = BLOCK_TASKS.get(key_split(key))
        if stage is not None:
            (self.blocks_done if finish == "memory" else self.blocks_failed)[stage] += 1

    def log_event(self, topic: str, msg: Any) -> None:
        """Apply one :func:`report_event` message."""
        if topic != TOPIC:
            return
        kind = msg["kind"]
        if kind == "slide_done":
            self.slides_done += 1
            self.fibres += int(msg["fibres"])
        elif kind == "slide_failed":
            self.slides_failed[str(msg["stage"])] += 1
        elif kind == "stage":
            stage = str(msg["stage"])
            self.stage_count[stage] += 1
            self.stage_sum_s[stage] += float(msg["seconds"])


class _Collector:
    """Prometheus collector reading the latest live :class:`RunMetricsPlugin`."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, SummaryMetricFamily

        if not _LIVE:
            return
        p = _LIVE[-1]
        yield CounterMetricFamily("nclsm_slides_done", "Slides that finished every stage.",
                                  value=p.slides_done)
        failed = CounterMetricFamily("nclsm_slides_failed", "Slides failed, by failing stage.",
                                     labels=["stage"])
        for stage, n in sorted(p.slides_failed.items()):
            failed.add_metric([stage], n)
        yield failed
        yield CounterMetricFamily("nclsm_fibres", "Fibres in the tables of the slides done.",
                                  value=p.fibres)
        seconds = SummaryMetricFamily("nclsm_stage_seconds", "Stage wall time, by stage.",
                                      labels=["stage"])
        for stage, n in sorted(p.stage_count.items()):
            seconds.add_metric([stage], count_value=n, sum_value=p.stage_sum_s[stage])
        yield seconds
        for name, counts, what in (("nclsm_blocks_done", p.blocks_done, "finished"),
                                   ("nclsm_blocks_failed", p.blocks_failed, "failed")):
            family = CounterMetricFamily(name, f"Segment block tasks {what}, by stage.",
                                         labels=["stage"])
            for stage, n in sorted(counts.items()):
                family.add_metric([stage], n)
            yield family


def register_metrics(client: Any) -> bool:
    """Register :class:`RunMetricsPlugin` on ``client``'s scheduler (idempotent).

    Returns False, with a logged warning, when registration failed.
    """
    try:
        client.register_plugin(RunMetricsPlugin())
    except Exception:  # metrics must never stop a run
        logger.warning("could not register the metrics plugin on the scheduler", exc_info=True)
        return False
    return True


def report_event(client: Any, kind: str, **values: Any) -> None:
    """Update the scheduler's run metrics.

    Parameters
    ----------
    client : distributed.Client
    kind : str
        ``"slide_done"`` (``fibres=int``), ``"slide_failed"`` (``stage=str``) or
        ``"stage"`` (``stage=str, seconds=float``).
    **values
        The values ``kind`` requires (msgpack-serialisable).

    Raises
    ------
    ValueError
        Unknown ``kind`` or missing values.
    """
    needed = _KINDS.get(kind)
    if needed is None:
        raise ValueError(f"unknown metrics event kind {kind!r}; expected one of {sorted(_KINDS)}")
    if missing := needed - values.keys():
        raise ValueError(f"metrics event {kind!r} needs {sorted(missing)}")
    client.log_event(TOPIC, {"kind": kind, **values})


def report_slide(client: Any, outcome: Any, state: Any) -> None:
    """Report one finished or failed slide: its stages' seconds, then done (with fibres) or failed.

    Parameters
    ----------
    client : distributed.Client
    outcome : nclsm_scale.run.SlideOutcome
    state : nclsm_scale.state.StateStore
        Where the seconds of the stages in ``outcome.ran`` are read.
    """
    try:
        for stage in outcome.ran:
            rec = state.get(outcome.name, stage)
            if rec is not None and rec.seconds is not None:
                report_event(client, "stage", stage=stage, seconds=float(rec.seconds))
        if outcome.status == "done":
            report_event(client, "slide_done", fibres=int(outcome.fibres))
        else:
            report_event(client, "slide_failed", stage=outcome.stage)
    except Exception:  # metrics must never stop a run
        logger.warning("%s: could not report metrics", outcome.name, exc_info=True)
