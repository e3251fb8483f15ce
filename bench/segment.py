"""Whole-pipeline throughput, ID pass cost, worker scaling and peak worker memory of ``segment``.

* ``throughput_ratio`` (target >= 0.75): time of the bare network loop over a slide
  (the engine in this process, all cores) divided by the time of the whole pipeline
  (``segment_slide`` with the network on a LocalCluster with one worker per core):
  network pass, seeds, IDs, assignment, label pyramid and region mask.
* ``id_pass_vs_scipy`` (target <= 3): our passes 1 + 2 on stored maps in one process
  divided by ``scipy.ndimage.label`` of the thresholded foreground of the whole image.
* ``scaling_1_to_2_workers``: pipeline time with 1 worker / with 2 workers (procedural maps).
* ``peak_worker_rss_gib`` (target flat, < 3 GiB): largest worker RSS sampled every
  0.2 s while segmenting procedural slides of 16k and 48k px a side (``--quick``: 4k, 8k).

The network weights are randomly initialised (throughput does not depend on their
values); procedural maps are a jittered lattice of polygonal fibres computed from
global coordinates, so they need no storage and are region-independent.

Usage: ``python bench/segment.py [--quick]``
"""

from __future__ import annotations

import argparse
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

from nclsm_scale.config import ClusterConfig, RunConfig  # noqa: E402
from nclsm_scale.io.ome_zarr import create_image  # noqa: E402
from nclsm_scale.segment.driver import segment_slide  # noqa: E402
from nclsm_scale.segment.maps import ArrayMaps, maps_from_labels  # noqa: E402
from nclsm_scale.segment.plane import segment_plane  # noqa: E402
from nclsm_scale.segment.seeds import SegmentParams  # noqa: E402

PARAMS = SegmentParams(1.0, 2.0, 10, 0.5, 0.5, 0.5)


class LatticeMaps:
    """Procedural maps: Voronoi cells of a jittered square lattice (spacing 60 px), 2 px gaps."""

    channels = ("foreground", "boundary", "distance")

    def __init__(self, shape_yx: tuple[int, int], spacing_px: int = 60) -> None:
        self.shape_yx = shape_yx
        self.spacing = spacing_px
        self.ident = f"lattice{spacing_px}x{shape_yx}"

    def _centre(self, cy: np.ndarray, cx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = (cy * 73856093) ^ (cx * 19349663)
        h = (h * 2654435761) & 0xFFFFFFFF
        jy = (h & 0xFFFF) / 65535.0 - 0.5
        jx = (h >> 16) / 65535.0 - 0.5
        return (cy + 0.5 + 0.6 * jy) * self.spacing, (cx + 0.5 + 0.6 * jx) * self.spacing

    def maps(self, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """Maps of the region from global coordinates only."""
        yy = np.arange(y0, y1, dtype=np.float64)[:, None]
        xx = np.arange(x0, x1, dtype=np.float64)[None, :]
        by, bx = np.floor(yy / self.spacing).astype(np.int64), np.floor(xx / self.spacing).astype(np.int64)
        best = [np.full((y1 - y0, x1 - x0), np.inf) for _ in range(2)]
        cbest = [np.zeros((2, y1 - y0, x1 - x0)) for _ in range(2)]
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                cy, cx = self._centre(by + dy, bx + dx)
                cy, cx = np.broadcast_arrays(cy, cx)
                d = (yy - cy) ** 2 + (xx - cx) ** 2
                first = d < best[0]
                second = ~first & (d < best[1])
                best[1] = np.where(first, best[0], np.where(second, d, best[1]))
                cbest[1] = np.where(first, cbest[0], np.where(second, np.stack([cy, cx]), cbest[1]))
                best[0] = np.where(first, d, best[0])
                cbest[0] = np.where(first, np.stack([cy, cx]), cbest[0])
        sep = np.sqrt(((cbest[1] - cbest[0]) ** 2).sum(0))
        edge = (best[1] - best[0]) / (2 * np.maximum(sep, 1e-6))
        fg = edge > 1.0
        inside = (yy >= 0) & (yy < self.shape_yx[0]) & (xx >= 0) & (xx < self.shape_yx[1])
        dist = np.clip(edge / (0.4 * self.spacing), 0, 1)
        out = np.stack([fg & inside, np.zeros_like(fg), np.where(inside, dist, 0)]).astype(np.float32)
        return out


def _slide(path: Path, size: int, chunk: int = 1024) -> None:
    create_image(path, (2, size, size), np.uint16, pixel_size_um=1.0, channel_names=["dys", "vdac"],
                 chunk_px=chunk, shard_px=0, min_level_px=1024, roles={"membrane": 0, "mito": 1})


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
        t = time.perf_counter()
        res = segment_slide(path, cfg, client, source=source)
        dt = time.perf_counter() - t
        sampler.stop.set()
    return res, dt, sampler.peak / 2**30


def throughput(tmp: Path, size: int) -> dict:
    """Bare network loop vs whole pipeline on the same slide and cores."""
    import torch

    from nclsm_scale.config import ModelConfig
    from nclsm_scale.model.infer import load_engine
    from nclsm_scale.model.net import FibreNet
    from nclsm_scale.model.weights import save_net

    torch.manual_seed(0)
    weights = save_net(FibreNet(), tmp / "net.pt", margin_px=32)
    model = ModelConfig(weights=str(weights), device="cpu")
    path = tmp / "T.ome.zarr"
    lab = voronoi_fibres((size, size), 60, 2, seed=1)
    _slide(path, size, chunk=512)
    from nclsm_scale.slide import open_slide

    import zarr

    arr = zarr.open_array(str(path), path="0", mode="r+")
    arr[...] = np.stack([(lab == 0) * 3000 + 200, (lab > 0) * 1500 + 100]).astype(np.uint16)
    from nclsm_scale.normalise import apply_norm, slide_norm

    slide = open_slide(path)
    norm = slide_norm(slide)
    torch.set_num_threads(os.cpu_count() or 1)
    engine = load_engine(model)

    def read(y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        return apply_norm(slide.read(0, y0, x0, y1, x1), norm)

    t = time.perf_counter()
    engine.predict_region(read, (size, size), 0, 0, size, size)
    bare = time.perf_counter() - t
    cfg = RunConfig.model_validate({"model": model.model_dump(), "segment": {"level": 0, "block_px": 1024}})
    res, pipe, _ = _pipeline(path, cfg, os.cpu_count() or 1)
    return {"slide_px": size, "bare_network_s": round(bare, 2), "pipeline_s": round(pipe, 2),
            "throughput_ratio": round(bare / pipe, 3), "n_fibres": res.n_fibres}


def id_pass(size: int) -> dict:
    """Our seeds + IDs + assignment against scipy.ndimage.label on the whole image."""
    from scipy import ndimage as ndi

    src = ArrayMaps(maps_from_labels(voronoi_fibres((size, size), 60, 2, seed=3), seed=1))
    t = time.perf_counter()
    ours = segment_plane(src, PARAMS, 1024, 150)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    _, n_cc = ndi.label(src.array[0] > 0.5)
    t_scipy = time.perf_counter() - t
    return {"id_image_px": size, "ours_s": round(t_ours, 2), "scipy_label_s": round(t_scipy, 3),
            "id_pass_vs_scipy": round(t_ours / t_scipy, 1), "n_fibres": ours.n_fibres,
            "scipy_components": int(n_cc), "dask_image": "not installed (not measured)"}


def scaling_and_memory(tmp: Path, scale_px: int, sizes: list[int]) -> dict:
    """1 vs 2 workers, and peak worker RSS per slide size, on procedural maps."""
    out: dict = {}
    times = {}
    for n in (1, 2):
        path = tmp / f"S{n}.ome.zarr"
        _slide(path, scale_px)
        cfg = RunConfig.model_validate({"segment": {"level": 0, "block_px": 2048}})
        _, times[n], _ = _pipeline(path, cfg, n, LatticeMaps((scale_px, scale_px)))
    out["scaling_slide_px"] = scale_px
    out["seconds_1_worker"], out["seconds_2_workers"] = round(times[1], 1), round(times[2], 1)
    out["scaling_1_to_2_workers"] = round(times[1] / times[2], 2)
    peaks = {}
    for size in sizes:
        path = tmp / f"M{size}.ome.zarr"
        _slide(path, size)
        cfg = RunConfig.model_validate({"segment": {"level": 0, "block_px": 2048}})
        res, dt, peak = _pipeline(path, cfg, 2, LatticeMaps((size, size)), sample=True)
        peaks[str(size)] = {"peak_worker_rss_gib": round(peak, 2), "seconds": round(dt, 1),
                            "n_fibres": res.n_fibres}
    out["memory"] = peaks
    return out


def main() -> None:
    """Run every measurement; emit one JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="Small slides.")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        thr = throughput(tmp, 1024 if args.quick else 2048)
        ids = id_pass(2048 if args.quick else 4096)
        mem = scaling_and_memory(tmp, 4096 if args.quick else 8192,
                                 [4096, 8192] if args.quick else [16384, 49152])
    emit({"bench": "segment", "ratio": thr["throughput_ratio"], "target": 0.75,
          "metric": "bare network loop time / whole pipeline time, same slide and cores",
          **thr, **ids, **mem, "targets": {"id_pass_vs_scipy": 3.0, "peak_worker_rss_gib": 3.0},
          "quick": args.quick})


if __name__ == "__main__":
    main()
