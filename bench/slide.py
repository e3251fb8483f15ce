"""Whole slides end to end in bounded memory: ``nclsm-scale run`` on one slide per size, RSS of every process.

For each ``--sizes`` edge (default 16384 and 32768 px; synthetic sections at 1 um/px,
so level 0 is the segmentation level, rendered once with ``synth.write_section`` chunk
by chunk and cached under ``bench/results/slide-cache/<size>/``), the command line
``nclsm-scale run`` runs in a fresh subprocess, the network on the CPU, on a local
cluster of ``--workers`` workers x 1 thread. Every ``--interval`` seconds the resident
set size of its whole process tree is sampled with psutil: the CLI process (the client;
a local cluster keeps its scheduler in the same process) and every process below it
(Dask's nannies and their worker processes, multiprocessing helpers).

Per size it prints the wall time, each stage's seconds (from the run's
``state.sqlite``), the peak RSS of the client (overall and while each stage ran) and
of the largest other process.
``ratio`` is the largest size's peak over the smallest's, the larger of client and
workers (flat memory: about 1); ``peak_over_target`` is the highest peak of any
process over the 2 GiB target.

    python bench/slide.py [--sizes 16384 32768] [--workers 2] [--interval 0.5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, emit  # noqa: E402

TARGET_GIB = 2.0
GIB = 2**30


def prepare(size: int) -> Path:
    """The cached archive folder holding one ``size``² section (rendered on first use)."""
    from nclsm_scale.config import SynthConfig
    from nclsm_scale.synth import write_section

    cache = RESULTS / "slide-cache" / str(size)
    if not (cache / "done").is_file():
        shutil.rmtree(cache, ignore_errors=True)
        (cache / "archive").mkdir(parents=True)
        t = time.perf_counter()
        write_section(cache / "archive" / f"W{size}.ome.tiff",
                      SynthConfig(size_px=(size, size), seed=5, pixel_size_um=1.0, folds=1))
        print(f"rendered {size}² in {time.perf_counter() - t:.0f} s", flush=True)
        (cache / "done").write_text("ok\n")
    return cache / "archive"


class Sampler(threading.Thread):
    """Peak RSS of a process and of each of its descendants, sampled every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peaks: dict[int, tuple[int, str]] = {}  # pid -> (peak bytes, name)
        self.client: list[tuple[float, int]] = []  # (epoch seconds, RSS bytes) of the root process
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        """Sample until ``done`` is set or the process is gone."""
        import psutil

        root = psutil.Process(self.pid)
        while not self.done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for p in procs:
                try:
                    rss = p.memory_info().rss
                    name = "helper" if "resource_tracker" in " ".join(p.cmdline()) else "worker"
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                if rss > self.peaks.get(p.pid, (0, ""))[0]:
                    self.peaks[p.pid] = (rss, name)
                if p.pid == self.pid:
                    self.client.append((time.time(), rss))
            self.samples += 1
            self.done.wait(self.interval)


def stage_times(run_dir: Path) -> list[tuple[str, float, float, float]]:
    """``(stage, started, finished, seconds)`` of every finished stage (slide stages and the archive's)."""
    with sqlite3.connect(run_dir / "state.sqlite") as db:
        rows = db.execute("SELECT stage, started, finished, seconds FROM stages WHERE seconds IS NOT NULL").fetchall()
    return [(stage, float(t0), float(t1), float(s)) for stage, t0, t1, s in rows]


def client_by_stage(
    samples: list[tuple[float, int]], stages: list[tuple[str, float, float, float]]
) -> dict[str, float]:
    """Peak client RSS (GiB) while each stage ran."""
    return {stage: round(max((rss for t, rss in samples if t0 <= t <= t1), default=0) / GIB, 3)
            for stage, t0, t1, _ in stages}


def run_one(size: int, workers: int, interval: float) -> dict[str, Any]:
    archive = prepare(size)
    run_dir = RESULTS / "slide-work" / str(size)
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "nclsm_scale", "run", str(archive), "--out", str(run_dir),
           "--workers", str(workers), "--set", "cluster.threads_per_worker=1"]
    load = round(os.getloadavg()[0], 2)
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = Sampler(proc.pid, interval)
    sampler.start()
    out, err = proc.communicate()
    sampler.done.set()
    sampler.join()
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"run of the {size}² slide failed ({proc.returncode}): {err.strip()[-2000:]}")
    client = sampler.peaks.get(proc.pid, (0, ""))[0]
    stages = stage_times(run_dir)
    others = sorted(((rss, name) for pid, (rss, name) in sampler.peaks.items() if pid != proc.pid), reverse=True)
    result = {
        "size_px": size, "mpx": round(size * size / 1e6, 1), "wall_s": round(wall, 1), "load_at_start": load,
        "stage_s": {stage: round(sec, 1) for stage, _, _, sec in stages}, "samples": sampler.samples,
        "client_peak_by_stage_gib": client_by_stage(sampler.client, stages),
        "client_peak_gib": round(client / GIB, 3),
        "other_peak_gib": round(others[0][0] / GIB, 3) if others else 0.0,
        "processes": [[name, round(rss / GIB, 3)] for rss, name in others],
    }
    print(f"{size}²: {wall:.0f} s, client peak {result['client_peak_gib']} GiB "
          f"(by stage {result['client_peak_by_stage_gib']}), largest other process "
          f"{result['other_peak_gib']} GiB; stages {result['stage_s']}", flush=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[16384, 32768], help="slide edges in px (1 um/px)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between RSS samples")
    args = ap.parse_args()
    runs = [run_one(size, args.workers, args.interval) for size in sorted(args.sizes)]
    peak = [max(r["client_peak_gib"], r["other_peak_gib"]) for r in runs]
    emit({
        "bench": "slide",
        "ratio": round(peak[-1] / peak[0], 3),
        "target": 1.0,
        "metric": "peak RSS of any process, largest slide over smallest (flat: ~1)",
        "peak_over_target": round(max(peak) / TARGET_GIB, 3),
        "target_gib": TARGET_GIB,
        "workers": args.workers,
        "runs": runs,
    })


if __name__ == "__main__":
    main()
