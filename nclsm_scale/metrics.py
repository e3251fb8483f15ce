"""Prometheus metrics of the run itself, served by the Dask scheduler's ``/metrics``.

:class:`RunMetricsPlugin` is a scheduler plugin: on the scheduler process it
registers one collector in ``prometheus_client.REGISTRY`` (the registry the
scheduler's ``/metrics`` handler serialises next to the ``dask_*`` metrics) and
keeps the counts it reports. From :func:`report_event` (the client's
``Client.log_event`` on the topic :data:`TOPIC`):

- ``nclsm_slides{state}``, a gauge of the latest run's slides ``pending``,
  ``running``, ``done`` and ``failed`` (``run_started`` sets the total; slides
  whose every stage was already done count as done);
- ``nclsm_stage_seconds{stage}``, a summary (``_count``, ``_sum``) observed as
  each stage ends, only for stages computed now;
- ``nclsm_stages_skipped_total{stage}``: stages found done by an earlier run;
- ``nclsm_slides_done_total``, ``nclsm_slides_skipped_total`` (nothing left to
  do), ``nclsm_slides_failed_total{stage}`` and ``nclsm_fibres_total`` (fibres
  segmented now), so a resumed run never counts earlier work again.

From the transitions of the stages' block tasks (:data:`BLOCK_TASKS`), by the
plugin itself: ``nclsm_blocks_in_flight{stage}`` (a gauge: tasks processing on a
worker now), ``nclsm_blocks_done_total{stage}`` and
``nclsm_blocks_failed_total{stage}``. :data:`METRIC_NAMES` lists every family.

:func:`register_metrics`, :func:`notify` and :func:`report_slide` never raise:
metrics must never break a run, so their failures are logged and the run goes on.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

__all__ = [
    "BLOCK_TASKS",
    "METRIC_NAMES",
    "PLUGIN_NAME",
    "TOPIC",
    "RunMetricsPlugin",
    "notify",
    "register_metrics",
    "report_event",
    "report_slide",
]

logger = logging.getLogger(__name__)

#: Event topic the client reports on and the plugin listens to.
TOPIC = "nclsm-metrics"
#: Name the plugin is registered under on the scheduler.
PLUGIN_NAME = "nclsm-metrics"
#: Block task functions of the stages (key prefixes) -> ``stage`` label of the block metrics.
BLOCK_TASKS = {"convert_region": "convert", "maps_task": "maps", "seeds_task": "seeds",
               "assign_task": "assign", "measure_task": "measure", "fold_counts_task": "curate"}
#: Event kinds -> the values each one requires.
_KINDS = {"run_started": {"slides"}, "slide_started": {"slide"}, "slide_done": {"slide", "fibres", "skipped"},
          "slide_failed": {"slide", "stage"}, "stage": {"stage", "seconds"}, "stage_skipped": {"stage"}}
#: The ``state`` labels of ``nclsm_slides``.
SLIDE_STATES = ("pending", "running", "done", "failed")
#: Every metric family the plugin exports, as Prometheus names it (counters with ``_total``;
#: the summary ``nclsm_stage_seconds`` adds ``_count`` and ``_sum``).
METRIC_NAMES = ("nclsm_slides", "nclsm_slides_done_total", "nclsm_slides_skipped_total",
                "nclsm_slides_failed_total", "nclsm_fibres_total", "nclsm_stage_seconds",
                "nclsm_stages_skipped_total", "nclsm_blocks_in_flight", "nclsm_blocks_done_total",
                "nclsm_blocks_failed_total")

#: Plugins started in this process, latest last; the collector reports the latest
#: (several schedulers in one process, as in tests, run one after another).
_LIVE: list[RunMetricsPlugin] = []
_collector_registered = False


class RunMetricsPlugin(SchedulerPlugin):
    """Scheduler plugin holding the run's counts and exposing them to Prometheus."""

    idempotent = True
    name = PLUGIN_NAME

    def __init__(self) -> None:
        self.slides_total = 0
        self.slide_state: dict[str, str] = {}
        self.slides_done = 0
        self.slides_skipped = 0
        self.slides_failed: Counter[str] = Counter()
        self.fibres = 0
        self.stage_count: Counter[str] = Counter()
        self.stage_sum_s: dict[str, float] = defaultdict(float)
        self.stages_skipped: Counter[str] = Counter()
        self.blocks_in_flight: Counter[str] = Counter()
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

    def slides(self) -> dict[str, int]:
        """The latest run's slides by state (:data:`SLIDE_STATES`)."""
        counts = Counter(self.slide_state.values())
        out = {state: counts[state] for state in SLIDE_STATES}
        out["pending"] = max(0, self.slides_total - len(self.slide_state))
        return out

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        """Count block tasks starting and leaving a worker, finished (-> memory) or failed (-> erred)."""
        if start != "processing" and finish != "processing":
            return
        from dask.utils import key_split

        stage = BLOCK_TASKS.get(key_split(key))
        if stage is None:
            return
        if finish == "processing":
            self.blocks_in_flight[stage] += 1
            return
        self.blocks_in_flight[stage] = max(0, self.blocks_in_flight[stage] - 1)
        if finish in ("memory", "erred"):
            (self.blocks_done if finish == "memory" else self.blocks_failed)[stage] += 1

    def log_event(self, topic: str, msg: Any) -> None:
        """Apply one :func:`report_event` message."""
        if topic != TOPIC:
            return
        kind = msg["kind"]
        if kind == "run_started":
            self.slides_total, self.slide_state = int(msg["slides"]), {}
        elif kind == "slide_started":
            self.slide_state[str(msg["slide"])] = "running"
        elif kind == "slide_done":
            self.slide_state[str(msg["slide"])] = "done"
            if msg["skipped"]:
                self.slides_skipped += 1
            else:
                self.slides_done += 1
            self.fibres += int(msg["fibres"])
        elif kind == "slide_failed":
            self.slide_state[str(msg["slide"])] = "failed"
            self.slides_failed[str(msg["stage"])] += 1
        elif kind == "stage":
            stage = str(msg["stage"])
            self.stage_count[stage] += 1
            self.stage_sum_s[stage] += float(msg["seconds"])
        elif kind == "stage_skipped":
            self.stages_skipped[str(msg["stage"])] += 1


class _Collector:
    """Prometheus collector reading the latest live :class:`RunMetricsPlugin`."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

        if not _LIVE:
            return
        p = _LIVE[-1]
        slides = GaugeMetricFamily("nclsm_slides", "Slides of the latest run, by state.", labels=["state"])
        for state, n in p.slides().items():
            slides.add_metric([state], n)
        yield slides
        yield CounterMetricFamily("nclsm_slides_done", "Slides that finished every stage, some of them computed now.",
                                  value=p.slides_done)
        yield CounterMetricFamily("nclsm_slides_skipped", "Slides found complete by an earlier run (nothing computed).",
                                  value=p.slides_skipped)
        failed = CounterMetricFamily("nclsm_slides_failed", "Slides failed, by failing stage.", labels=["stage"])
        for stage, n in sorted(p.slides_failed.items()):
            failed.add_metric([stage], n)
        yield failed
        yield CounterMetricFamily("nclsm_fibres", "Fibres segmented (computed now) in the slides done.",
                                  value=p.fibres)
        seconds = SummaryMetricFamily("nclsm_stage_seconds", "Wall time of stages computed now, by stage.",
                                      labels=["stage"])
        for stage, n in sorted(p.stage_count.items()):
            seconds.add_metric([stage], count_value=n, sum_value=p.stage_sum_s[stage])
        yield seconds
        skipped = CounterMetricFamily("nclsm_stages_skipped", "Stages found done by an earlier run, by stage.",
                                      labels=["stage"])
        for stage, n in sorted(p.stages_skipped.items()):
            skipped.add_metric([stage], n)
        yield skipped
        in_flight = GaugeMetricFamily("nclsm_blocks_in_flight", "Block tasks processing on a worker now, by stage.",
                                      labels=["stage"])
        for stage in sorted(set(BLOCK_TASKS.values())):
            in_flight.add_metric([stage], p.blocks_in_flight[stage])
        yield in_flight
        for name, counts, what in (("nclsm_blocks_done", p.blocks_done, "finished"),
                                   ("nclsm_blocks_failed", p.blocks_failed, "failed")):
            family = CounterMetricFamily(name, f"Block tasks {what}, by stage.", labels=["stage"])
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
        ``"run_started"`` (``slides=int``), ``"slide_started"`` (``slide=str``),
        ``"slide_done"`` (``slide=str, fibres=int, skipped=bool``: fibres segmented
        now, skipped when nothing was computed), ``"slide_failed"`` (``slide=str,
        stage=str``), ``"stage"`` (``stage=str, seconds=float``: a stage computed
        now) or ``"stage_skipped"`` (``stage=str``).
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


def notify(client: Any, kind: str, **values: Any) -> None:
    """:func:`report_event` that never raises (a failure is logged): for the run's own reports."""
    try:
        report_event(client, kind, **values)
    except Exception:  # metrics must never stop a run
        logger.warning("could not report the metrics event %r", kind, exc_info=True)


def report_slide(client: Any, outcome: Any) -> None:
    """Report one slide that ended: done (with the fibres segmented now) or failed; never raises.

    Parameters
    ----------
    client : distributed.Client
    outcome : nclsm_scale.run.SlideOutcome
        ``ran`` empty means every stage was done before: counted as skipped.
    """
    if outcome.status == "done":
        fibres = int(outcome.fibres) if "segment" in outcome.ran else 0
        notify(client, "slide_done", slide=outcome.name, fibres=fibres, skipped=not outcome.ran)
    else:
        notify(client, "slide_failed", slide=outcome.name, stage=outcome.stage)
