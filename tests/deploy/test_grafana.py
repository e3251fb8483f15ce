"""The Grafana dashboard in deploy/grafana: valid JSON, a Prometheus data source, only metrics the tool exports.

A real scrape of ``/metrics`` checks the same names, Dask's included, in tests/test_metrics.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from nclsm_scale.metrics import METRIC_NAMES

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "nclsm-run.json"


def test_the_dashboard_parses_and_queries_only_exported_nclsm_metrics():
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "nclsm-scale-run" and board["panels"]
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource", "job"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    exported = set(METRIC_NAMES) | {"nclsm_stage_seconds_sum", "nclsm_stage_seconds_count"}
    used = set()
    for panel in board["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
            used |= set(re.findall(r"\b(nclsm_[a-z_]+)", target["expr"]))
    assert used <= exported, used - exported
    assert {"nclsm_slides", "nclsm_blocks_in_flight", "nclsm_stages_skipped_total"} <= used
