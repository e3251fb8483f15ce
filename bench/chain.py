"""The CPU chain after the network: stored maps -> labels, fibre table, classes, report, in Mpx/s per core.

One synthetic section (``--size``, default 8192² px at 1 um/px; ``--quick``: 2048²) is
rendered once (``synth.write_section``, chunk by chunk) and cached under
``bench/results/chain-cache/<size>/`` with its maps. The maps are made from the ground
truth (``maps_from_labels``: blur 1 px, noise 0.05), not by the network, so the chain's
time is the CPU chain's alone. Then, on a LocalCluster from ``open_client`` with
``cluster.n_workers`` = 2 (1 thread each), each stage is timed on its own:

* ``convert``: OME-TIFF -> OME-Zarr (reported beside the chain, not in it);
* ``segment``: ``segment_slide`` from the stored maps (seeds, IDs, assignment, labels,
  label pyramid, region mask);
* ``measure``: ``measure_slide`` (fibre table);
* ``curate``: ``curate_slide`` (folds, classes, types);
* ``report``: ``aggregate_run`` + ``build_report`` (slide tables, HTML report).

Before the timed run the same workers take a 1024² section through every stage, untimed
(imports, numba compilation: once per worker process; ``--no-warmup`` times cold workers).

Each stage prints Mpx/s per core = segmentation-level pixels / wall seconds / cores
(cores = workers x threads); ``overall`` is the same over segment + measure + curate +
report. ``network_mpx_per_s`` is the production engine (``load_engine``, default
``ModelConfig``: bundled weights, ``model.cpu_path`` auto) on a region of the same slide
in this process with all torch threads, on ``--device`` (CPU here: the CPU network's
figure). ``cores_to_feed_network`` = network Mpx/s / overall Mpx/s per core: the CPU cores
the chain needs to keep up with one such device.

``--profile`` samples the workers with Dask's statistical profiler (``client.profile``
over each stage's window) and the client with cProfile, and lists the top self-time
functions per stage (``profile`` in the JSON; ``--profile-top`` rows).

Profile of the first 8192² run (2026-12-07, ``--profile``; 1-minute load average 4.9-6.7 on
the 2 shared cores; worker shares are % of Dask's profiler samples in the stage's window, which
has 1 s granularity, so a stage's neighbours leak in by a few %). Where the >= 10 Mpx/s/core
target has to come from, stage by stage (seconds of the 166 s chain):

* measure (90.5 s, 55 %): ``fibres._intensities`` 84 % inclusive: ``intensity.channel_medians``
  32 % self, ``intensity.holes`` 26 %, ``_intensities`` itself 16 %; geometry is a few %.
* report (50.3 s, 30 %): the GeoJSON trace of every fibre on the workers, ``geojson.trace_block``
  92 % inclusive, of which ``geojson._simplify`` 58 % self and ``np.argmax`` 14 %; on the client
  (cProfile) it waits 48 s and no function takes over 0.4 s of self time (PNG encoding the most).
* segment (20.8 s, 13 %): the workers wait 60 % of the time (4 blocks of 4096² px for 2
  workers, seed pass then assignment pass, one block escalated): load balance first; then
  ``assign.assign_block`` 15 % self, reading the stored maps (``maps.maps``) 26 % inclusive,
  label pyramid (``levels.write``) 22 % inclusive.
* curate (4.2 s, 3 %): fold counts on the workers, the fold score's Gaussian filtering on the
  client (2.7 s of ``correlate1d``).
* convert (7.5 s, beside the chain): ``shards.write_block`` (calls the zstd encoder) 46 % self,
  TIFF reads 34 % inclusive.

Profile after the first round of changes (2026-12-07, ``--profile``, load 1.3-2.6; medians by a
packed-integer sort, since replaced by the compiled selection, and the compiled Douglas-Peucker;
chain 30.8 s): measure (15.3 s) ``intensity.group_medians`` 24 % self, ``_intensities`` 22 %,
waiting 10 %; report (5.8 s) ``geojson.fibre_polygons`` 38 % self (contour tracing), the
contours' signed areas 16 %, waiting 26 %; segment (6.8 s) waiting 61 % (still 4 blocks).

    python bench/chain.py [--size 8192] [--quick] [--device auto|cpu|cuda] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, emit  # noqa: E402

from nclsm_scale.config import RunConfig  # noqa: E402

STAGES = ("convert", "segment", "measure", "curate", "report")
WARMUP_PX = 1024  # the untimed warm-up section
CHAIN = ("segment", "measure", "curate", "report")  # after the network; convert is reported beside it


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _config(size: int, maps: str | None = None) -> RunConfig:
    cfg: dict[str, Any] = {
        "synth": {"size_px": [size, size], "seed": 5, "pixel_size_um": 1.0, "folds": 1},
        "cluster": {"n_workers": 2, "threads_per_worker": 1, "local_gpus": 0},
    }
    if maps is not None:
        cfg["segment"] = {"maps": maps}
    return RunConfig.model_validate(cfg)


def prepare(size: int) -> tuple[Path, Path, dict[str, float]]:
    """Render the section and its ground-truth maps once; return (image path, maps path, seconds)."""
    import tifffile

    from nclsm_scale.segment import maps_from_labels, write_maps
    from nclsm_scale.synth import write_section

    cache = RESULTS / "chain-cache" / str(size)
    image, maps = cache / "C1.ome.tiff", cache / "maps.zarr"
    seconds: dict[str, float] = {}
    if not (cache / "done").is_file():
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True)
        t = time.perf_counter()
        paths = write_section(image, _config(size).synth)
        seconds["synth_s"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        gt = tifffile.imread(paths["fibres"])
        write_maps(str(maps), maps_from_labels(gt, seed=1, noise=0.05, blur_px=1.0))
        seconds["gt_maps_s"] = round(time.perf_counter() - t, 1)
        (cache / "done").write_text("ok\n")
    return image, maps, seconds


def _top(counts: Counter[str], total: float, n: int) -> list[list[Any]]:
    return [[name, round(100 * c / total, 1)] for name, c in counts.most_common(n)] if total else []


def worker_profile(state: dict[str, Any], n: int) -> tuple[list[list[Any]], list[list[Any]]]:
    """Top self-time and top inclusive ``nclsm_scale`` functions of a ``client.profile`` tree, % of samples."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()

    def walk(node: dict[str, Any], stack: frozenset[str]) -> None:
        d = node.get("description", {})
        name = f"{Path(d.get('filename', '?')).name}:{d.get('name', '?')}"
        children = node.get("children", {}).values()
        own[name] += node["count"] - sum(c["count"] for c in children)
        if "nclsm_scale" in d.get("filename", "") and name not in stack:
            incl[name] += node["count"]
        for c in children:
            walk(c, stack | {name})

    walk(state, frozenset())
    own.pop("?:?", None)
    total = float(state.get("count", 0))
    return _top(own, total, n), _top(incl, total, n)


def client_profile(prof: cProfile.Profile, n: int) -> list[list[Any]]:
    """Top self-time functions of the client process (seconds)."""
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    rows = sorted(((v[2], f"{Path(k[0]).name}:{k[2]}") for k, v in stats.items()), reverse=True)[:n]
    return [[name, round(tt, 2)] for tt, name in rows]


def network_rate(slide_path: Path, device: str, region_px: int) -> dict[str, Any]:
    """Mpx/s of the production engine on a region of the slide, in this process (best of 2 after a warm-up)."""
    import torch

    from nclsm_scale.config import ModelConfig
    from nclsm_scale.model.infer import load_engine
    from nclsm_scale.normalise import apply_norm, slide_norm
    from nclsm_scale.slide import open_slide

    slide = open_slide(slide_path)
    norm = slide_norm(slide)
    arr = slide.array(0)
    shape = (int(arr.shape[-2]), int(arr.shape[-1]))
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    engine = load_engine(ModelConfig(device=device))
    y0, x0 = (shape[0] - region_px) // 2, (shape[1] - region_px) // 2

    def read(a: int, b: int, c: int, d: int) -> np.ndarray:
        return apply_norm(slide.read(0, a, b, c, d), norm)

    def once() -> float:
        t = time.perf_counter()
        engine.predict_region(read, shape, y0, x0, y0 + region_px, x0 + region_px)
        if engine.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    once()  # warm-up (and compile, where the path compiles)
    best = min(once() for _ in range(2))
    torch.set_num_threads(threads)
    return {"network_mpx_per_s": round(region_px**2 / 1e6 / best, 3), "network_region_px": region_px,
            "network_device": engine.device.type, "network_path": engine.path,
            "network_torch_threads": os.cpu_count() or 1}


def run_chain(size: int, work: Path, profile: bool, top: int, warmup: bool = True) -> dict[str, Any]:
    """Time each stage on a 2-worker LocalCluster; return seconds, loads and profiles."""
    from nclsm_scale.aggregate import aggregate_run
    from nclsm_scale.cluster import open_client
    from nclsm_scale.convert import convert
    from nclsm_scale.curate import curate_slide
    from nclsm_scale.layout import RunLayout
    from nclsm_scale.measure.driver import measure_slide
    from nclsm_scale.report import build_report
    from nclsm_scale.segment import segment_slide

    image, maps, prep = prepare(size)
    cfg = _config(size, str(maps))
    out: dict[str, Any] = {**prep, "seconds": {}, "load_at_start": {}, "profile": {}}
    state: dict[str, Any] = {}

    def do(stage: str, image: Path, cfg: RunConfig, layout: RunLayout, state: dict[str, Any]) -> None:
        if stage == "convert":
            (res,) = convert([image], layout.slides, cfg.convert, client)
            if res.status == "failed":
                raise RuntimeError(res.message)
            state["store"] = res.store
        elif stage == "segment":
            state["seg"] = segment_slide(state["store"], cfg, client)
        elif stage == "measure":
            measure_slide(state["store"], cfg, client, out_dir=layout.measure_tables)
        elif stage == "curate":
            curate_slide(state["store"], cfg, client, layout=layout)
        else:
            aggregate_run(layout.root, cfg.aggregate, {"C1": {"subject": "P1", "diagnosis": "control"}})
            state["report"] = build_report(layout.root, cfg, client)

    with open_client(cfg.cluster, echo=False) as client:
        info = client.scheduler_info()["workers"].values()
        out["cores"] = sum(int(w.get("nthreads", 1)) for w in info)
        if warmup:  # untimed: imports and numba compilation on the workers, once per process
            t = time.perf_counter()
            w_image, w_maps, _ = prepare(WARMUP_PX)
            w_state: dict[str, Any] = {}
            for stage in STAGES:
                do(stage, w_image, _config(WARMUP_PX, str(w_maps)), RunLayout(work / "warmup"), w_state)
            out["warmup_s"] = round(time.perf_counter() - t, 1)
        layout = RunLayout(work / "run")
        for stage in STAGES:
            out["load_at_start"][stage] = _load()
            prof = cProfile.Profile() if profile else None
            t_wall = time.time()
            t = time.perf_counter()
            if prof is not None:
                prof.enable()
            do(stage, image, cfg, layout, state)
            if prof is not None:
                prof.disable()
            out["seconds"][stage] = round(time.perf_counter() - t, 2)
            if prof is not None:
                own, incl = worker_profile(client.profile(start=t_wall, stop=time.time()), top)
                out["profile"][stage] = {"workers_self_pct": own, "workers_nclsm_inclusive_pct": incl,
                                         "client_self_s": client_profile(prof, top)}
    seg = state["seg"]
    out.update({"n_fibres": seg.n_fibres, "segment_level": seg.level, "segment_block_px": seg.block_px,
                "report_html": str(state["report"])})
    return out


def main() -> None:
    """Run the chain and emit one JSON line (``bench/results/<name>.json``)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8192, help="section edge in px (1 um/px)")
    ap.add_argument("--quick", action="store_true", help="a 2048² section (smoke run)")
    ap.add_argument("--device", default="auto", help="device of the network measurement")
    ap.add_argument("--network-px", type=int, default=2048, help="region edge of the network measurement")
    ap.add_argument("--profile", action="store_true", help="profile workers and client per stage")
    ap.add_argument("--profile-top", type=int, default=8)
    ap.add_argument("--no-warmup", action="store_true", help="time cold workers (numba compiles in segment)")
    ap.add_argument("--name", default="chain", help="result name (bench/results/<name>.json)")
    args = ap.parse_args()
    size = 2048 if args.quick else args.size
    work = RESULTS / "chain-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        res = run_chain(size, work, args.profile, args.profile_top, not args.no_warmup)
        store = work / "run" / "slides" / "C1.ome.zarr"
        net = network_rate(store, args.device, min(args.network_px, size))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mpx, cores = size * size / 1e6, res["cores"]
    per_core = {s: round(mpx / res["seconds"][s] / cores, 3) for s in STAGES}
    chain_s = sum(res["seconds"][s] for s in CHAIN)
    overall = mpx / chain_s / cores
    need = net["network_mpx_per_s"] / overall
    rows = [f"{s:>8}  {res['seconds'][s]:8.1f} s  {per_core[s]:7.3f} Mpx/s/core  load {res['load_at_start'][s]}"
            for s in STAGES]
    print(f"section {size}² px at 1 um/px ({mpx:.1f} Mpx at level {res['segment_level']}), "
          f"{res['n_fibres']} fibres, {cores} cores (2 workers x 1 thread)", file=sys.stderr)
    print("\n".join(rows), file=sys.stderr)
    print(f"   chain  {chain_s:8.1f} s  {overall:7.3f} Mpx/s/core (segment+measure+curate+report)",
          file=sys.stderr)
    print(f"network {net['network_mpx_per_s']:.3f} Mpx/s on {net['network_device']} ({net['network_path']}) -> "
          f"CPU cores needed to keep it busy: {need:.1f}", file=sys.stderr)
    emit({"bench": args.name, "ratio": round(overall, 4), "target": 10.0,
          "metric": "chain (segment+measure+curate+report) Mpx/s per core, seg-level px, maps from ground truth",
          "size_px": size, "mpx": round(mpx, 2), "cores": cores, "mpx_per_s_per_core": per_core,
          "overall_mpx_per_s_per_core": round(overall, 4), "chain_seconds": round(chain_s, 2),
          "with_convert_mpx_per_s_per_core": round(mpx / (chain_s + res["seconds"]["convert"]) / cores, 4),
          **net, "cores_to_feed_network": round(need, 2), "maps": "ground truth (maps_from_labels)",
          **{k: v for k, v in res.items() if k not in ("cores",)}, "quick": args.quick})


if __name__ == "__main__":
    main()
