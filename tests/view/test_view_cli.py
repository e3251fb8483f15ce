"""``nclsm-scale view`` as a user runs it: prints its URL, serves, stops on Ctrl-C; one-line error without tables."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys


def test_view_serves_until_ctrl_c(view_run, http) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "nclsm_scale", "view", str(view_run["layout"].root), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        url = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        assert url, line + proc.stderr.read()
        assert json.loads(http(url[1] + "api/slides")[1]) == {"slides": ["V1"]}
        status, body, _ = http(url[1])
        assert status == 200 and b"openseadragon" in body  # / redirects to the first slide's page
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "viewer stopped" in out
    assert "Traceback" not in err and "interrupted (SIGINT)" in err


def test_view_of_a_run_without_tables_is_a_one_line_error(tmp_path, run_cli) -> None:
    (tmp_path / "slides").mkdir()
    res = run_cli("view", str(tmp_path), "--port", "0", timeout=120)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'tables'}: no fibre tables or slide statistics; run `nclsm-scale run` (or curate and "
        "report) on this run directory first."
    ]


def test_the_report_names_each_slides_viewer_page(view_run) -> None:
    html = (view_run["layout"].report / "index.html").read_text()
    root = view_run["layout"].root
    assert f"nclsm-scale view {root.name}</code>, then open <code>/slide/V1</code>" in html
    assert str(root) not in html  # the run folder's name, no local path


def test_view_help_lists_its_options(run_cli) -> None:
    res = run_cli("view", "--help")
    assert res.returncode == 0 and "--port" in res.stdout and "--host" in res.stdout
