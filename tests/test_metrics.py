"""Run metrics in a real scrape of the scheduler's ``/metrics`` on a loopback LocalCluster."""

from __future__ import annotations

import re
import time
import urllib.request

import pytest

from nclsm_scale.metrics import register_metrics, report_event


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


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address="127.0.0.1:0", host="127.0.0.1") as cl:
        with Client(cl) as c:
            yield c


def _scrape(client) -> dict[str, float]:
    port = client.scheduler_info()["services"]["dashboard"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    samples = {}
    for line in text.splitlines():
        if m := re.fullmatch(r"(\S+) (\S+)", line):
            samples[m[1]] = float(m[2])
    return samples


def test_scrape_has_reported_events_block_counts_and_dask_metrics(client):
    assert register_metrics(client)
    report_event(client, "stage", stage="convert", seconds=1.5)
    report_event(client, "stage", stage="convert", seconds=2.0)
    report_event(client, "stage", stage="segment", seconds=4.0)
    report_event(client, "slide_done", fibres=120)
    report_event(client, "slide_done", fibres=30)
    report_event(client, "slide_failed", stage="measure")
    assert register_metrics(client)  # idempotent: the counts are neither reset nor doubled
    client.gather(client.map(seeds_task, range(3), pure=False))
    client.gather(client.map(other_task, range(4), pure=False))
    failing = client.map(assign_task, range(4), pure=False)
    client.gather(failing, errors="skip")

    deadline = time.monotonic() + 10
    while (s := _scrape(client)).get('nclsm_blocks_failed_total{stage="assign"}') != 2.0:
        assert time.monotonic() < deadline, "block counts never reached the scrape"
        time.sleep(0.1)
    assert s["nclsm_slides_done_total"] == 2.0
    assert s['nclsm_slides_failed_total{stage="measure"}'] == 1.0
    assert s["nclsm_fibres_total"] == 150.0
    assert s['nclsm_stage_seconds_count{stage="convert"}'] == 2.0
    assert s['nclsm_stage_seconds_sum{stage="convert"}'] == 3.5
    assert s['nclsm_stage_seconds_count{stage="segment"}'] == 1.0
    assert s['nclsm_blocks_done_total{stage="seeds"}'] == 3.0
    assert s['nclsm_blocks_done_total{stage="assign"}'] == 2.0
    assert not any(k.startswith("nclsm_blocks_") and "other" in k for k in s)
    assert sum(v for k, v in s.items() if k.startswith("dask_scheduler_workers{state=")) == 1.0
    assert s["dask_scheduler_clients"] >= 1.0


def test_report_event_rejects_unknown_kind_and_missing_values(client):
    with pytest.raises(ValueError, match="unknown metrics event kind"):
        report_event(client, "slide_exploded")
    with pytest.raises(ValueError, match=r"needs \['seconds'\]"):
        report_event(client, "stage", stage="convert")
