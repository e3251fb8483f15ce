"""Run metrics in a real scrape of the scheduler's ``/metrics`` on a loopback LocalCluster."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest

from nclsm_scale.metrics import METRIC_NAMES, RunMetricsPlugin, register_metrics, report_event

GRAFANA = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "nclsm-run.json"


def seeds_task(i: int) -> int:
    """Named like the segment driver's block task, so the plugin counts it."""
    return i


def assign_task(i: int) -> int:
    """Named like the segment driver's block task; fails on odd input."""
    if i % 2:
        raise RuntimeError("odd block")
    return i


def other_task(i: int) -> int:
    """Not a block task: must not be counted."""
    return i


def measure_task(path: str) -> int:
    """Named like measure's block task; waits until ``path`` exists so the test sees it in flight."""
    deadline = time.monotonic() + 60
    while not Path(path).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return 1


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address="127.0.0.1:0", host="127.0.0.1") as cl:
        with Client(cl) as c:
            yield c


def _scrape(client, scrape) -> dict[str, float]:
    port = client.scheduler_info()["services"]["dashboard"]
    return scrape(f"http://127.0.0.1:{port}/metrics")


def _wait_for(client, scrape, key: str, value: float) -> dict[str, float]:
    deadline = time.monotonic() + 20
    while (s := _scrape(client, scrape)).get(key) != value:
        assert time.monotonic() < deadline, f"{key} never reached {value} in the scrape: {s.get(key)}"
        time.sleep(0.1)
    return s


def test_scrape_has_reported_events_block_counts_and_dask_metrics(client, scrape):
    assert register_metrics(client)
    report_event(client, "run_started", slides=3)
    report_event(client, "slide_started", slide="a")
    report_event(client, "stage", stage="convert", seconds=1.5)
    report_event(client, "stage", stage="convert", seconds=2.0)
    report_event(client, "stage", stage="segment", seconds=4.0)
    report_event(client, "stage_skipped", stage="measure")
    report_event(client, "slide_done", slide="a", fibres=120, skipped=False)
    report_event(client, "slide_started", slide="b")
    report_event(client, "slide_done", slide="b", fibres=0, skipped=True)
    report_event(client, "slide_started", slide="c")
    report_event(client, "slide_failed", slide="c", stage="measure")
    assert register_metrics(client)  # idempotent: the counts are neither reset nor doubled
    client.gather(client.map(seeds_task, range(3), pure=False))
    client.gather(client.map(other_task, range(4), pure=False))
    failing = client.map(assign_task, range(4), pure=False)
    client.gather(failing, errors="skip")

    s = _wait_for(client, scrape, 'nclsm_blocks_failed_total{stage="assign"}', 2.0)
    assert s["nclsm_slides_done_total"] == 1.0
    assert s["nclsm_slides_skipped_total"] == 1.0
    assert s['nclsm_slides_failed_total{stage="measure"}'] == 1.0
    assert s["nclsm_fibres_total"] == 120.0
    assert [s[f'nclsm_slides{{state="{k}"}}'] for k in ("pending", "running", "done", "failed")] == [0, 0, 2, 1]
    assert s['nclsm_stage_seconds_count{stage="convert"}'] == 2.0
    assert s['nclsm_stage_seconds_sum{stage="convert"}'] == 3.5
    assert s['nclsm_stage_seconds_count{stage="segment"}'] == 1.0
    assert s['nclsm_stages_skipped_total{stage="measure"}'] == 1.0
    assert s['nclsm_blocks_done_total{stage="seeds"}'] == 3.0
    assert s['nclsm_blocks_done_total{stage="assign"}'] == 2.0
    assert s['nclsm_blocks_in_flight{stage="assign"}'] == 0.0
    assert not any(k.startswith("nclsm_blocks_") and "other" in k for k in s)
    assert sum(v for k, v in s.items() if k.startswith("dask_scheduler_workers{state=")) == 1.0
    assert s["dask_scheduler_clients"] >= 1.0
    exported = {k.removeprefix("# TYPE ").removesuffix("_total") for k in s if k.startswith("# TYPE nclsm_")}
    assert exported == {n.removesuffix("_total") for n in METRIC_NAMES}  # the list in the docs is complete


def test_block_tasks_in_flight_are_a_gauge_and_a_new_run_resets_the_slide_gauge(client, scrape, tmp_path):
    assert register_metrics(client)
    report_event(client, "run_started", slides=2)
    s = _wait_for(client, scrape, 'nclsm_slides{state="pending"}', 2.0)
    assert s['nclsm_slides{state="done"}'] == 0.0  # the previous test's slides are not this run's
    release = tmp_path / "release"
    future = client.submit(measure_task, str(release), pure=False)
    _wait_for(client, scrape, 'nclsm_blocks_in_flight{stage="measure"}', 1.0)
    threading.Timer(0.2, release.touch).start()
    assert future.result(timeout=60) == 1
    _wait_for(client, scrape, 'nclsm_blocks_in_flight{stage="measure"}', 0.0)
    report_event(client, "slide_started", slide="x")
    s = _wait_for(client, scrape, 'nclsm_slides{state="running"}', 1.0)
    assert s['nclsm_slides{state="pending"}'] == 1.0


def _dashboard_metrics() -> set[str]:
    exprs = [t["expr"] for p in json.loads(GRAFANA.read_text())["panels"] for t in p["targets"]]
    return {name for e in exprs for name in re.findall(r"\b((?:nclsm|dask)_[a-z_]+)", e)}


def test_the_grafana_dashboard_uses_only_metrics_a_scrape_has(client, scrape):
    assert register_metrics(client)
    s = _scrape(client, scrape)
    families = {k.removeprefix("# TYPE ") for k in s if k.startswith("# TYPE ")}
    names = families | {k.split("{")[0] for k in s if not k.startswith("#")}
    summaries = {f + suffix for f in families for suffix in ("_sum", "_count")}
    counters = {f + "_total" for f in families}
    used = _dashboard_metrics()
    assert {"nclsm_slides", "nclsm_blocks_in_flight", "nclsm_stage_seconds_sum"} <= used
    assert used <= names | summaries | counters, used - (names | summaries | counters)


def test_the_plugin_counts_a_slide_again_only_in_the_gauge():
    p = RunMetricsPlugin()
    p.log_event("nclsm-metrics", {"kind": "run_started", "slides": 1})
    p.log_event("nclsm-metrics", {"kind": "slide_done", "slide": "a", "fibres": 0, "skipped": True})
    assert (p.slides_done, p.slides_skipped, p.slides()["done"]) == (0, 1, 1)
    p.transition("measure_task-abc", "waiting", "processing")
    p.transition("measure_task-abc", "processing", "released")  # a lost worker: no longer in flight, not done
    assert (p.blocks_in_flight["measure"], p.blocks_done["measure"]) == (0, 0)
    p.log_event("other-topic", {"kind": "nonsense"})


def test_report_event_rejects_unknown_kind_and_missing_values(client):
    with pytest.raises(ValueError, match="unknown metrics event kind"):
        report_event(client, "slide_exploded")
    with pytest.raises(ValueError, match=r"needs \['seconds'\]"):
        report_event(client, "stage", stage="convert")
