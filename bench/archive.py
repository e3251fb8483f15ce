"""Benchmark: an archive of 8 synthetic slides through ``run``, against the same slides one by one.

Both parts use the same two-worker ``LocalCluster`` (its start-up is timed in
neither). The baseline runs each slide alone (its own run directory,
``archive.max_concurrent_slides=1``) and sums its stage times (convert, segment,
measure, curate) from the state store. The archive run processes all 8 slides
with the default concurrency; its stage wall time runs from the first stage's
start to the last stage's end (the archive's aggregate + report is reported
separately, as ``setup_and_report_s``). ``ratio`` = archive stage wall / baseline sum
(target <= 0.7 on 2 cores: while one slide's driver does serial work, another
slide's blocks keep the workers busy).

Scheduler overhead per block: ``overhead_ms_per_task`` is the wall time per task
of 2,000 no-op tasks sent through the drivers' own path
(:func:`nclsm_scale.cluster.fan_out`), i.e. what the scheduler and the client add to every block task;
``busy_fraction`` is the share of the workers' thread time spent computing
during the archive run (Dask's task stream).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, emit  # noqa: E402

N_SLIDES = 8


def _noop(i: int) -> int:
    return i


def _stage_span(run_dir: Path) -> tuple[float, float, int]:
    """(sum of stage seconds, wall from first start to last end, stages) of the per-slide stages."""
    from nclsm_scale.run import ARCHIVE_KEY
    from nclsm_scale.state import StateStore

    recs = [r for r in StateStore(run_dir / "state.sqlite").records()
            if r.slide != ARCHIVE_KEY and r.status == "done"]
    return (sum(r.seconds for r in recs), max(r.finished for r in recs) - min(r.started for r in recs),
            len(recs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=1536, help="slide edge in px at 0.5 um/px")
    ap.add_argument("--quick", action="store_true", help="768 px slides")
    args = ap.parse_args()
    size = 768 if args.quick else args.size

    from distributed import Client, LocalCluster

    from nclsm_scale.cluster import fan_out
    from nclsm_scale.config import RunConfig
    from nclsm_scale.run import run_archive
    from nclsm_scale.synth import write_section

    cfg = RunConfig.model_validate({
        "synth": {"size_px": [size, size]},
        "convert": {"chunk_px": 512, "min_level_px": 128},
        "grid": {"block_px": 512},
        "report": {"thumbnail_px": 400},
    })
    work = RESULTS / "archive_work"
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    archive = work / "archive"
    for i in range(N_SLIDES):
        (archive / f"p{i}").mkdir(parents=True)
        write_section(archive / f"p{i}" / f"S{i}.ome.tiff", cfg.synth.model_copy(update={"seed": 100 + i}))

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cl, \
            Client(cl) as client:
        # warm up: the model plugin and imports on the workers, once, outside both timings
        run_archive(archive / "p0", work / "warmup", cfg, client, progress=False)

        one = cfg.model_copy(update={"archive": cfg.archive.model_copy(update={"max_concurrent_slides": 1})})
        baseline_s = 0.0
        for i in range(N_SLIDES):
            run_dir = work / f"alone{i}"
            result = run_archive(archive / f"p{i}", run_dir, one, client, progress=False)
            if not result.ok:
                raise SystemExit(f"baseline run of S{i} failed: {result.summary()}")
            baseline_s += _stage_span(run_dir)[0]

        t0 = time.perf_counter()
        from distributed import get_task_stream

        with get_task_stream(client) as ts:
            result = run_archive(archive, work / "all", cfg, client, progress=False)
        total_s = time.perf_counter() - t0
        if not result.ok:
            raise SystemExit(f"archive run failed: {result.summary()}")
        stage_sum_s, archive_s, n_stages = _stage_span(work / "all")
        compute_s = sum(s["stop"] - s["start"] for t in ts.data for s in t["startstops"]
                        if s["action"] == "compute")
        threads = sum(w["nthreads"] for w in client.scheduler_info()["workers"].values())

        n_noop = 2000
        t = time.perf_counter()
        fan_out(client, _noop, [(i,) for i in range(n_noop)], desc="noop")
        overhead_ms = (time.perf_counter() - t) / n_noop * 1e3

    emit({
        "bench": "archive",
        "slides": N_SLIDES,
        "size_px": size,
        "baseline_stage_sum_s": round(baseline_s, 1),
        "archive_stage_wall_s": round(archive_s, 1),
        "archive_stage_sum_s": round(stage_sum_s, 1),
        "setup_and_report_s": round(total_s - archive_s, 1),
        "stages": n_stages,
        "ratio": round(archive_s / baseline_s, 3),
        "target": "<= 0.7",
        "busy_fraction": round(compute_s / (archive_s * threads), 3),
        "overhead_ms_per_task": round(overhead_ms, 2),
    })


if __name__ == "__main__":
    main()
