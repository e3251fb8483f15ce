"""Stitching strategies against the single-block reference: splits and merges per strategy.

On the same maps (a synthetic section and crops of the real NCL-SM S11/S60 masks
at about 1 um/px, perturbed like network output), three strategies run with the
same block grid and halo:

* ``ours``: seed ownership + global IDs + certified steepest-ascent assignment;
* ``touch_merge``: each block segmented alone on block + halo, the core kept, then
  labels that touch across a block face are merged (Cellpose distributed mode);
* ``iou_match``: each block segmented alone on block + halo, labels of neighbouring
  blocks matched by IoU >= 0.5 in their shared overlap and merged (sopa/InstanSeg).

Each result is compared with the single-block run: a reference fibre is **split**
when two result labels each cover >= 20 % of it; a result label is a **merge** when
it covers >= 20 % of two reference fibres. Ours must be 0/0.

Usage: ``python bench/stitch.py [--quick]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "segment"))

from _common import emit  # noqa: E402
from segment_fixtures import nclsm_crop, voronoi_fibres  # noqa: E402

from nclsm_scale.config import SegmentConfig  # noqa: E402
from nclsm_scale.grid import BlockGrid  # noqa: E402
from nclsm_scale.segment.maps import ArrayMaps, maps_from_labels  # noqa: E402
from nclsm_scale.segment.plane import segment_plane  # noqa: E402
from nclsm_scale.segment.seeds import SegmentParams  # noqa: E402

PARAMS = SegmentParams.from_config(SegmentConfig(), 1.0, ("foreground", "boundary", "distance"))
HALO_PX = 150


def pixels_off(ref: np.ndarray, got: np.ndarray) -> int:
    """Pixels outside the largest-overlap correspondence of result labels to reference labels."""
    code, n = np.unique(ref.ravel().astype(np.int64) << 32 | got.ravel(), return_counts=True)
    g = code & 0xFFFFFFFF
    best = np.zeros(int(g.max()) + 1, dtype=np.int64)
    np.maximum.at(best, g, n)
    return int(ref.size - best.sum())


def splits_merges(ref: np.ndarray, got: np.ndarray, frac: float = 0.2) -> tuple[int, int]:
    """(splits, merges) of ``got`` against ``ref``, background excluded."""
    both = (ref > 0) & (got > 0)
    code, inter = np.unique(ref[both].astype(np.int64) << 32 | got[both], return_counts=True)
    r, g = code >> 32, code & 0xFFFFFFFF
    area = np.bincount(ref.ravel().astype(np.int64))
    big = inter >= frac * area[r]
    splits = int(np.sum(np.bincount(r[big]) >= 2))
    merges = int(np.sum(np.bincount(g[big]) >= 2))
    return splits, merges


def _independent(src: ArrayMaps, grid: BlockGrid, halo_px: int) -> dict[tuple[int, int], tuple]:
    """Each block segmented alone on its window; labels offset to be unique."""
    out, offset = {}, 0
    for b in grid.blocks():
        win = b.window(halo_px)
        local = segment_plane(ArrayMaps(src.maps(*win)), PARAMS, 10**6, HALO_PX).labels.astype(np.int64)
        local[local > 0] += offset
        offset = max(offset, int(local.max()))
        out[(b.by, b.bx)] = (win, local)
    return out


def _merge(n: int, pairs: list[tuple[int, int]], core: np.ndarray) -> np.ndarray:
    pairs = np.array(pairs or [(0, 0)], dtype=np.int64)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n + 1, n + 1))
    _, comp = connected_components(graph, directed=False)
    comp = comp - comp[0]
    return np.where(core > 0, comp[core] + 1, 0)


def _paste(src: ArrayMaps, grid: BlockGrid, parts: dict) -> np.ndarray:
    core = np.zeros(src.shape_yx, dtype=np.int64)
    for b in grid.blocks():
        (y0, x0, _, _), local = parts[(b.by, b.bx)]
        core[b.y0 : b.y1, b.x0 : b.x1] = local[b.y0 - y0 : b.y1 - y0, b.x0 - x0 : b.x1 - x0]
    return core


def touch_merge(src: ArrayMaps, block_px: int, halo_px: int) -> np.ndarray:
    """Cellpose-style: union labels touching across block faces."""
    grid = BlockGrid(src.shape_yx, block_px)
    parts = _independent(src, grid, halo_px)
    core = _paste(src, grid, parts)
    ey, ex = grid.edges
    pairs = []
    for e in ey[1:-1]:
        a, b = core[e - 1], core[e]
        pairs += list(zip(a[(a > 0) & (b > 0)], b[(a > 0) & (b > 0)], strict=True))
    for e in ex[1:-1]:
        a, b = core[:, e - 1], core[:, e]
        pairs += list(zip(a[(a > 0) & (b > 0)], b[(a > 0) & (b > 0)], strict=True))
    return _merge(max(int(v[1].max()) for v in parts.values()), pairs, core)


def iou_match(src: ArrayMaps, block_px: int, halo_px: int, threshold: float = 0.5) -> np.ndarray:
    """sopa/InstanSeg-style: union labels of neighbouring blocks with IoU >= threshold in the overlap."""
    grid = BlockGrid(src.shape_yx, block_px)
    parts = _independent(src, grid, halo_px)
    core = _paste(src, grid, parts)
    pairs = []
    ny, nx = grid.n_blocks_yx
    for by in range(ny):
        for bx in range(nx):
            (ay0, ax0, ay1, ax1), la = parts[(by, bx)]
            for nb in ((by, bx + 1), (by + 1, bx), (by + 1, bx + 1), (by + 1, bx - 1)):
                if nb not in parts:
                    continue
                (by0, bx0, by1, bx1), lb = parts[nb]
                y0, x0, y1, x1 = max(ay0, by0), max(ax0, bx0), min(ay1, by1), min(ax1, bx1)
                if y0 >= y1 or x0 >= x1:
                    continue
                a = la[y0 - ay0 : y1 - ay0, x0 - ax0 : x1 - ax0].ravel()
                b = lb[y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0].ravel()
                both = (a > 0) & (b > 0)
                code, inter = np.unique(a[both] << 32 | b[both], return_counts=True)
                ia, ib = code >> 32, code & 0xFFFFFFFF
                area_a = dict(zip(*np.unique(a[a > 0], return_counts=True), strict=True))
                area_b = dict(zip(*np.unique(b[b > 0], return_counts=True), strict=True))
                for p, q, n in zip(ia, ib, inter, strict=True):
                    if n / (area_a[p] + area_b[q] - n) >= threshold:
                        pairs.append((p, q))
    return _merge(max(int(v[1].max()) for v in parts.values()), pairs, core)


def main() -> None:
    """Run every strategy on every dataset and block size; emit one JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="Smaller images, one block size.")
    args = ap.parse_args()
    size = 1024 if args.quick else 1536
    data = {
        "synthetic": voronoi_fibres((size, size), 60, 2, seed=1),
        "ncl-sm S11": nclsm_crop("S11", 2000, 3000, size),
        "ncl-sm S60": nclsm_crop("S60", 1500, 1500, size),
    }
    blocks = [512] if args.quick else [256, 512, 1024]
    peers = {"touch_merge": (touch_merge, HALO_PX), "iou_match": (iou_match, HALO_PX),
             "touch_merge_halo120": (touch_merge, 120), "iou_match_halo50": (iou_match, 50)}
    rows, totals = [], {k: [0, 0, 0] for k in ["ours", *peers]}
    t0 = time.perf_counter()
    for name, lab in data.items():
        src = ArrayMaps(maps_from_labels(lab, seed=2, noise=0.05, blur_px=1.0, holes=30))
        ref = segment_plane(src, PARAMS, 10**6, HALO_PX).labels
        for b in blocks:
            results = {"ours": segment_plane(src, PARAMS, b, HALO_PX, offset_yx=(b // 3, b // 5),
                                             order_seed=b).labels}
            results.update({k: fn(src, b, h) for k, (fn, h) in peers.items()})
            for strategy, got in results.items():
                s, m = splits_merges(ref, got)
                off = pixels_off(ref, got)
                for i, v in enumerate((s, m, off)):
                    totals[strategy][i] += v
                rows.append({"data": name, "block_px": b, "strategy": strategy, "splits": s, "merges": m,
                             "pixels_off": off, "n_ref": int(np.unique(ref).size - 1)})
    peer_best = min(t[0] + t[1] for k, t in totals.items() if k != "ours")
    emit({
        "bench": "stitch",
        "ratio": totals["ours"][0] + totals["ours"][1],
        "target": 0,
        "metric": "splits + merges of ours against the single-block run (peers' best in 'peer_errors')",
        "peer_errors": peer_best,
        "totals": {k: {"splits": v[0], "merges": v[1], "pixels_off": v[2]} for k, v in totals.items()},
        "halo_px": HALO_PX,
        "rows": rows,
        "quick": args.quick,
        "seconds": round(time.perf_counter() - t0, 1),
    })


if __name__ == "__main__":
    main()
