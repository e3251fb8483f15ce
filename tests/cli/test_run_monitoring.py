"""Monitoring a real ``nclsm-scale run``: its ``/metrics`` scraped over HTTP while it runs, its run.json, a quiet end.

The command runs in a subprocess on its own local cluster (two small synthetic
slides, one at a time, so one waits while the other runs); the test polls the
scheduler's ``/metrics`` at the address it configured until the run exits.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest

#: Small chunks and pyramid, small blocks: a quick run.
FAST = ("--set", "convert.chunk_px=256", "--set", "convert.min_level_px=64", "--set", "grid.block_px=256",
        "--set", "report.thumbnail_px=300", "--workers", "2")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    from nclsm_scale.config import SynthConfig
    from nclsm_scale.synth import write_section

    root = tmp_path_factory.mktemp("archive")
    for i in (1, 2):
        write_section(root / f"S{i}.ome.tiff", SynthConfig(size_px=(512, 512), seed=i))
    return root


def _gauges(s: dict[str, float]) -> tuple[int, ...]:
    return tuple(int(s.get(f'nclsm_slides{{state="{k}"}}', -1)) for k in ("pending", "running", "done", "failed"))


@pytest.fixture(scope="module")
def monitored(archive, tmp_path_factory, scrape):
    """The run's exit, stdout, stderr, run directory and every scrape taken while it ran."""
    run_dir = tmp_path_factory.mktemp("run") / "run"
    port = _free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    logs = run_dir.parent
    with open(logs / "stdout", "w") as out, open(logs / "stderr", "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nclsm_scale", "run", str(archive), "--out", str(run_dir), *FAST,
             "--set", "archive.max_concurrent_slides=1", "--set", f"cluster.dashboard_address=127.0.0.1:{port}"],
            stdout=out, stderr=err, text=True, env=env)
        samples: list[tuple[float, dict[str, float]]] = []
        t0 = time.monotonic()
        try:
            while proc.poll() is None:
                assert time.monotonic() - t0 < 600, "the run took over 10 minutes"
                try:
                    samples.append((time.monotonic() - t0, scrape(url)))
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass  # not up yet, or already closing
                time.sleep(0.25)
        finally:
            if proc.poll() is None:
                proc.kill()
    return proc.returncode, (logs / "stdout").read_text(), (logs / "stderr").read_text(), run_dir, port, samples


def test_the_gauges_move_from_pending_to_running_to_done_in_a_real_scrape(monitored):
    code, stdout, stderr, run_dir, port, samples = monitored
    assert code == 0, stderr
    states = [_gauges(s) for _, s in samples if 'nclsm_slides{state="pending"}' in s]
    distinct = list(dict.fromkeys(states))
    print(f"{len(samples)} scrapes; slide gauges (pending, running, done, failed) in order seen: {distinct}")
    assert (1, 1, 0, 0) in states  # one slide running, the other waiting
    assert (0, 1, 1, 0) in states  # the first done, the second running
    assert states[-1] == (0, 0, 2, 0)
    assert states.index((1, 1, 0, 0)) < states.index((0, 1, 1, 0)) < states.index((0, 0, 2, 0))
    in_flight = max(sum(v for k, v in s.items() if k.startswith("nclsm_blocks_in_flight{")) for _, s in samples)
    assert in_flight >= 1
    # a stage's duration is observed when it ends, before its slide is done
    early = [s for _, s in samples if s.get('nclsm_stage_seconds_count{stage="convert"}', 0) >= 1
             and s.get('nclsm_slides{state="done"}', 0) == 0]
    assert early, "convert's duration appeared only once a slide was done"
    last = samples[-1][1]
    assert last['nclsm_stage_seconds_count{stage="segment"}'] == 2.0
    assert last["nclsm_slides_done_total"] == 2.0 and last["nclsm_slides_skipped_total"] == 0.0


def test_run_json_holds_the_dashboard_and_metrics_urls_printed_once(monitored):
    code, stdout, stderr, run_dir, port, samples = monitored
    record = json.loads((run_dir / "run.json").read_text())
    base = f"http://127.0.0.1:{port}"
    assert record["monitoring"] == {"dashboard": f"{base}/status", "metrics": f"{base}/metrics"}
    assert record["config"]["cluster"]["dashboard_address"] == f"127.0.0.1:{port}"
    lines = [line for line in stderr.splitlines() if base in line]
    assert lines == [f"Dask dashboard: {base}/status  Prometheus metrics: {base}/metrics"]


def test_the_run_ends_quietly_with_one_summary(monitored):
    code, stdout, stderr, run_dir, port, samples = monitored
    assert "WARNING" not in stderr and "still alive" not in stderr, stderr
    assert "Traceback" not in stderr
    assert "\r" not in stderr and "stage/s" not in stderr and "stages [" not in stderr  # no bar off a terminal
    assert stdout.count("2 of 2 slide(s) done") == 1 and "slide(s) done" not in stderr
