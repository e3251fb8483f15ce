"""Shared helpers for benchmarks: the JSON-line result convention and peak memory.

Every benchmark prints one JSON line with at least ``bench``, ``ratio`` and
``target`` and writes the same object to ``bench/results/<bench>.json``. Ratios
compare against a baseline measured in the same run, because absolute times drift
on a shared machine.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    """One line describing the machine the numbers were measured on."""
    import os

    try:
        import psutil

        mem = f"{psutil.virtual_memory().total / 2**30:.0f} GiB"
    except ImportError:
        mem = "? GiB"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {mem}, {platform.system()}"


def emit(result: dict[str, Any]) -> dict[str, Any]:
    """Print ``result`` as one JSON line and store it under ``bench/results``."""
    result = {"machine": machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%S"), **result}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{result['bench']}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result), flush=True)
    return result


def peak_rss_of(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd`` in a fresh wrapper process; return (peak RSS in GiB, wall seconds).

    The wrapper reports ``RUSAGE_CHILDREN`` of its own children only, so each
    call measures just ``cmd``: the largest resident set of any process in its
    tree (Dask workers included, once reaped).
    """
    wrapper = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "subprocess.run(sys.argv[1:], check=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t)"
    )
    out = subprocess.run(
        [sys.executable, "-c", wrapper, *cmd], check=True, capture_output=True, text=True
    ).stdout.split()
    return int(out[-2]) / 2**20, float(out[-1])


def python() -> str:
    """The interpreter running the benchmark (use it for subprocesses)."""
    return sys.executable
