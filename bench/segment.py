"""Whole-pipeline throughput, ID pass cost, worker scaling and peak worker memory of ``segment``.

* ``throughput_ratio`` (target >= 0.75): time of the bare network loop over a slide
  (the engine in this process, all cores) divided by the time of the whole pipeline
  (``segment_slide`` with the network on a LocalCluster with one worker per core):
  network pass, seeds, IDs, assignment, label pyramid and region mask. Cluster
  start-up is not timed; registering the model on the workers is.
* ``id_pass_vs_scipy`` (target <= 3): the ID pass, i.e. seed detection of every
  block (``block_seeds``: Gaussian smoothing of the distance map, quantised levels,
  labelling of the fibre cores, each core's root by a global key, closure checks
  outside the core) and the global seed table (sort = rank = ID), over all blocks of
  an image, in one process, divided by ``scipy.ndimage.label`` of the thresholded
  foreground of the whole image (connected components only). The pass does more than
  that baseline, so also timed (see :func:`id_pass`): ``gaussian_filter`` + ``label``
  of the cores on the whole image (``id_pass_vs_scipy_smooth_label``), the smoothing
  alone (``scipy_gaussian_vs_scipy_label``), our pass on the whole image as one block
  (``id_pass_vs_single_block``), ``dask_image.ndmeasure.label`` of the foreground on
  the same chunks (optional ``bench`` extra; skipped with a note when missing) and
  the whole segmentation (passes 1 + 2, ``segment_plane``) for context.
* ``scaling_1_to_2_workers``: pipeline time with 1 worker / with 2 workers (cheap
  periodic maps, so the segmentation passes dominate), with the load average.
* ``peak_worker_rss_gib`` (target flat, < 3 GiB): largest worker RSS sampled every
  0.2 s while segmenting slides of 16k and 48k px a side (``--quick``: 4k, 8k;
  ``--sizes`` overrides) with periodic maps.

The network weights are randomly initialised (throughput does not depend on their
values). Periodic maps repeat one 1024 px tile of perturbed maps of a periodic
Voronoi section: any region of any plane is read from global coordinates, costs
almost nothing and needs no storage, so the memory runs measure the segmentation.

Usage: ``python bench/segment.py [--quick] [--sizes 16384 49152] [--skip-network]
[--only id memory]``
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "segment"))

from _common import emit  # noqa: E402
from segment_fixtures import voronoi_fibres  # noqa: E402

from nclsm_scale.config import ClusterConfig, GridConfig, RunConfig, SegmentConfig  # noqa: E402
from nclsm_scale.grid import Block, BlockGrid  # noqa: E402
from nclsm_scale.io.ome_zarr import create_image  # noqa: E402
from nclsm_scale.segment.driver import segment_slide  # noqa: E402
from nclsm_scale.segment.ids import seed_table  # noqa: E402
from nclsm_scale.segment.maps import ArrayMaps, maps_from_labels  # noqa: E402
from nclsm_scale.segment.plane import segment_plane  # noqa: E402
from nclsm_scale.segment.seeds import SegmentParams, block_seeds  # noqa: E402

PARAMS = SegmentParams.from_config(SegmentConfig(), 1.0, ("foreground", "boundary", "distance"))
HALO_PX = GridConfig().halo_px(1.0)  # the default halo at 1 um/px
PARTS = ("throughput", "id", "scaling", "memory")
TILE_PX = 1024


def periodic_tile(path: Path, tile_px: int = TILE_PX, spacing_px: int = 60, seed: int = 7) -> Path:
    """Save maps of a periodic Voronoi section (fibres cross the tile edges seamlessly)."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    ys, xs = np.meshgrid(np.arange(spacing_px // 2, tile_px, spacing_px),
                         np.arange(spacing_px // 2, tile_px, spacing_px), indexing="ij")
    pts = np.stack([ys.ravel(), xs.ravel()], 1)
    pts = (pts + rng.integers(-spacing_px // 3, spacing_px // 3 + 1, pts.shape)) % tile_px
    big = 3 * tile_px
    ids = np.zeros((big, big), dtype=np.int64)
    for oy in range(3):
        for ox in range(3):
            ids[pts[:, 0] + oy * tile_px, pts[:, 1] + ox * tile_px] = np.arange(1, len(pts) + 1)
    _, (iy, ix) = ndi.distance_transform_edt(ids == 0, return_indices=True)
    lab = ids[iy, ix]
    edge = np.zeros(lab.shape, dtype=bool)
    edge[:-1] |= lab[:-1] != lab[1:]
    edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    keep = rng.random(len(pts) + 1) < 0.2
    lab[ndi.binary_dilation(edge, iterations=2) & ~keep[lab]] = 0
    maps = maps_from_labels(lab, seed=seed, noise=0.05, blur_px=1.0)
    np.save(path, maps[:, tile_px : 2 * tile_px, tile_px : 2 * tile_px])
    return path


@functools.lru_cache(maxsize=4)
def _periodic_tile(path: str) -> np.ndarray:
    tile = np.load(path)
    tile.flags.writeable = False
    return tile


class PeriodicMaps:
    """Maps of any plane size repeating a saved ``(3, t, t)`` tile; zeros outside the plane.

    The tile is loaded once per process, not cached on the instance: a Dask worker
    keeps each task's arguments while the client holds its future, so a per-instance
    cache would be kept once per task (12 MiB each; 3.6 GiB per worker at 48k px).
    """

    channels = ("foreground", "boundary", "distance")

    def __init__(self, tile_path: Path, shape_yx: tuple[int, int]) -> None:
        self.tile_path, self.shape_yx = str(tile_path), shape_yx
        self.ident = f"periodic:{tile_path}:{shape_yx}"

    def maps(self, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """Return the maps of the region, from global coordinates only."""
        tile = _periodic_tile(self.tile_path)
        t = tile.shape[-1]
        out = tile[:, np.arange(y0, y1) % t][:, :, np.arange(x0, x1) % t]
        ny, nx = self.shape_yx
        out[:, : max(0, min(y1, 0) - y0)] = 0
        out[:, max(0, ny - y0) :] = 0
        out[:, :, : max(0, min(x1, 0) - x0)] = 0
        out[:, :, max(0, nx - x0) :] = 0
        return out


def _slide(path: Path, size: int, chunk: int = 1024) -> None:
    create_image(path, (2, size, size), np.uint16, pixel_size_um=1.0, channel_names=["dys", "vdac"],
                 chunk_px=chunk, shard_px=0, min_level_px=1024, roles={"membrane": 0, "mito": 1})


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


class _RssSampler(threading.Thread):
    def __init__(self, client) -> None:
        super().__init__(daemon=True)
        self.client, self.peak, self.stop = client, 0, threading.Event()

    def run(self) -> None:
        def rss() -> int:
            import psutil

            return psutil.Process().memory_info().rss

        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, *self.client.run(rss).values())
            except Exception:  # noqa: BLE001 - a sample lost while workers are busy is harmless
                pass
            time.sleep(0.2)


def _pipeline(path: Path, cfg: RunConfig, n_workers: int, source=None, sample: bool = False):
    from nclsm_scale.cluster import open_client

    with open_client(ClusterConfig(n_workers=n_workers), echo=False) as client:
        sampler = _RssSampler(client)
        if sample:
            sampler.start()
        load0 = _load()
        t = time.perf_counter()
        res = segment_slide(path, cfg, client, source=source)
        dt = time.perf_counter() - t
        sampler.stop.set()
    return res, dt, sampler.peak / 2**30, load0


def throughput(tmp: Path, size: int) -> dict:
    """Bare network loop vs whole pipeline on the same slide and cores."""
    import torch
    import zarr

    from nclsm_scale.config import ModelConfig
    from nclsm_scale.model.infer import load_engine
    from nclsm_scale.model.net import FibreNet
    from nclsm_scale.model.weights import save_net
    from nclsm_scale.normalise import apply_norm, slide_norm
    from nclsm_scale.slide import open_slide

    torch.manual_seed(0)
    weights = save_net(FibreNet(), tmp / "net.pt", margin_px=32)
    model = ModelConfig(weights=str(weights), device="cpu")
    path = tmp / "T.ome.zarr"
    lab = voronoi_fibres((size, size), 60, 2, seed=1)
    _slide(path, size, chunk=512)
    arr = zarr.open_array(str(path), path="0", mode="r+")
    arr[...] = np.stack([(lab == 0) * 3000 + 200, (lab > 0) * 1500 + 100]).astype(np.uint16)
    slide = open_slide(path)
    norm = slide_norm(slide)
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    engine = load_engine(model)

    def read(y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        return apply_norm(slide.read(0, y0, x0, y1, x1), norm)

    load0 = _load()
    t = time.perf_counter()
    engine.predict_region(read, (size, size), 0, 0, size, size)
    bare = time.perf_counter() - t
    torch.set_num_threads(threads)
    cfg = RunConfig.model_validate({"model": model.model_dump(), "segment": {"level": 0}, "grid": {"block_px": 1024}})
    res, pipe, _, load1 = _pipeline(path, cfg, os.cpu_count() or 1)
    return {"slide_px": size, "bare_network_s": round(bare, 2), "pipeline_s": round(pipe, 2),
            "throughput_ratio": round(bare / pipe, 3), "throughput_n_fibres": res.n_fibres,
            "network_stride_px": engine.stride_px, "load_at_bare": load0, "load_at_pipeline": load1}


def _dask_image_label(mask: np.ndarray, chunk_px: int) -> tuple[float | None, str]:
    try:
        import dask.array as da
        from dask_image.ndmeasure import label
    except ImportError:
        return None, "dask-image not installed (pip install '.[bench]'); comparison skipped"
    import dask

    t = time.perf_counter()
    with dask.config.set(scheduler="threads"):
        dask.compute(*label(da.from_array(mask, chunks=chunk_px)))
    return time.perf_counter() - t, "threaded scheduler, same chunks as our blocks"


def id_pass(size: int, block_px: int = 1024) -> dict:
    """The ID pass over every block against whole-image labelling; best of 7, one thread each.

    What each timing covers:

    * ``id_pass``: for every block, ``block_seeds`` (maps read with the smoothing
      support, Gaussian smoothing of the distance map, foreground test and quantised
      levels, 4-connected labelling of the fibre cores, each core's root = its largest
      key, closure of the cores whose root lies in the block, in a probe ring of a
      third of the halo, around each core still open there, else in the whole halo),
      then ``seed_table`` (sort: rank = ID);
    * ``scipy_label``: ``scipy.ndimage.label`` of the thresholded foreground of the whole
      image: connected components only, so touching fibres merge (the target's baseline);
    * ``scipy_smooth_label``: ``gaussian_filter`` of the whole distance map and ``label`` of
      its thresholded cores: the least a whole-image scipy run does towards the same seeds
      (no per-core argmax, no blocks);
    * ``scipy_gaussian``: that smoothing alone, a floor for any exact implementation;
    * ``single_block``: ``block_seeds`` with the whole image as one block (the price of blocks);
    * dask-image ``label`` on the same chunks (threaded scheduler; optional ``bench`` extra).
    """
    from scipy import ndimage as ndi

    src = ArrayMaps(maps_from_labels(voronoi_fibres((size, size), 60, 2, seed=3), seed=1))
    shape = src.shape_yx
    fg = src.array[0] > PARAMS.foreground_threshold
    dist = src.array[2]
    default_px = GridConfig().block_px
    sizes = [block_px] + ([default_px] if size >= 2 * default_px and default_px != block_px else [])
    best: dict[str, float] = {}

    def timed(name: str, fn) -> object:
        t = time.perf_counter()
        out = fn()
        best[name] = min(best.get(name, np.inf), time.perf_counter() - t)
        return out

    def ours(bp: int) -> np.ndarray:
        return seed_table([block_seeds(src, b, PARAMS, shape, HALO_PX) for b in BlockGrid(shape, bp).blocks()])

    def smooth_label() -> int:
        value = ndi.gaussian_filter(dist, PARAMS.smooth_sigma_px, mode="constant", truncate=4.0)
        return ndi.label(fg & (value >= PARAMS.min_seed_value))[1]

    whole = Block(0, 0, 0, 0, *shape)
    for _ in range(7):  # best of 7, interleaved: the machine is shared
        tables = [timed(f"ours_{bp}", lambda bp=bp: ours(bp)) for bp in sizes]
        _, n_cc = timed("scipy", lambda: ndi.label(fg))
        timed("smooth_label", smooth_label)
        timed("gaussian", lambda: ndi.gaussian_filter(dist, PARAMS.smooth_sigma_px, mode="constant",
                                                      truncate=4.0))
        single = timed("single", lambda: block_seeds(src, whole, PARAMS, shape, HALO_PX))
    if any(not np.array_equal(t, single) for t in tables):
        raise RuntimeError("blocked seeds differ from the single-block seeds")
    t_dask, note = _dask_image_label(fg, block_px)
    t = time.perf_counter()
    full = segment_plane(src, PARAMS, block_px, HALO_PX)
    t_full = time.perf_counter() - t
    ours_s = best[f"ours_{block_px}"]
    out = {"id_image_px": size, "id_block_px": block_px, "id_pass_s": round(ours_s, 3),
           "scipy_label_s": round(best["scipy"], 3),
           "id_pass_vs_scipy": round(ours_s / best["scipy"], 2),
           "id_pass_vs_scipy_smooth_label": round(ours_s / best["smooth_label"], 2),
           "scipy_gaussian_vs_scipy_label": round(best["gaussian"] / best["scipy"], 2),
           "id_pass_vs_single_block": round(ours_s / best["single"], 2),
           "segment_plane_s": round(t_full, 2),
           "segment_plane_vs_scipy": round(t_full / best["scipy"], 1),
           "id_n_fibres": int(full.n_fibres), "scipy_components": int(n_cc), "dask_image": note,
           "load_at_id_pass": _load()}
    for bp in sizes[1:]:
        out[f"id_pass_vs_scipy_block{bp}"] = round(best[f"ours_{bp}"] / best["scipy"], 2)
    if t_dask is not None:
        out["dask_image_label_s"] = round(t_dask, 2)
        out["dask_image_vs_scipy"] = round(t_dask / best["scipy"], 1)
        out["id_pass_vs_dask_image"] = round(ours_s / t_dask, 3)
    return out


def scaling(tmp: Path, tile: Path, size: int) -> dict:
    """Time the pipeline on 1 and on 2 workers, periodic maps."""
    times, loads = {}, {}
    for n in (1, 2):
        path = tmp / f"S{n}.ome.zarr"
        _slide(path, size)
        cfg = RunConfig.model_validate({"segment": {"level": 0}, "grid": {"block_px": 2048}})
        _, times[n], _, loads[n] = _pipeline(path, cfg, n, PeriodicMaps(tile, (size, size)))
    return {"scaling_slide_px": size, "seconds_1_worker": round(times[1], 1),
            "seconds_2_workers": round(times[2], 1),
            "scaling_1_to_2_workers": round(times[1] / times[2], 2),
            "load_at_1_worker": loads[1], "load_at_2_workers": loads[2]}


def memory(tmp: Path, tile: Path, sizes: list[int]) -> dict:
    """Peak worker RSS on 2 workers per slide size, periodic maps, default block size."""
    peaks = {}
    for size in sizes:
        path = tmp / f"M{size}.ome.zarr"
        _slide(path, size)
        cfg = RunConfig.model_validate({"segment": {"level": 0}})
        res, dt, peak, load = _pipeline(path, cfg, 2, PeriodicMaps(tile, (size, size)), sample=True)
        peaks[str(size)] = {"peak_worker_rss_gib": round(peak, 2), "seconds": round(dt, 1),
                            "n_fibres": res.n_fibres, "block_px": res.block_px,
                            "load_at_start": load}
        _remove_slide(path)
    worst = max(p["peak_worker_rss_gib"] for p in peaks.values())
    return {"memory": peaks, "peak_worker_rss_gib": worst}


def _remove_slide(path: Path) -> None:
    """Remove a slide and its work folder (large at 48k)."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(str(path) + ".segment", ignore_errors=True)


def main() -> None:
    """Run every measurement; emit one JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="Small slides.")
    ap.add_argument("--sizes", type=int, nargs="*", help="Slide sizes of the memory runs.")
    ap.add_argument("--skip-network", action="store_true", help="Leave out the throughput run.")
    ap.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS),
                    help="Run only these measurements.")
    ap.add_argument("--name", default="segment", help="Result name (bench/results/<name>.json).")
    args = ap.parse_args()
    parts = [p for p in args.only if not (p == "throughput" and args.skip_network)]
    default = [4096, 8192] if args.quick else [16384, 49152]
    sizes = args.sizes if args.sizes is not None else default
    out: dict = {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("NCLSM_BENCH_TMP")) as tmpdir:
        tmp = Path(tmpdir)
        if "throughput" in parts:
            out.update(throughput(tmp, 2048 if args.quick else 4096))
        if "id" in parts:
            out.update(id_pass(2048 if args.quick else 4096))
        tile = periodic_tile(tmp / "tile.npy") if {"scaling", "memory"} & set(parts) else None
        if "scaling" in parts:
            out.update(scaling(tmp, tile, 4096 if args.quick else 8192))
        if "memory" in parts and sizes:
            out.update(memory(tmp, tile, sizes))
    emit({"bench": args.name, "ratio": out.get("throughput_ratio"), "target": 0.75,
          "metric": "bare network loop time / whole pipeline time, same slide and cores",
          **out, "targets": {"id_pass_vs_scipy": 3.0, "peak_worker_rss_gib": 3.0},
          "quick": args.quick})


if __name__ == "__main__":
    main()
