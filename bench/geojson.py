"""Benchmark: peak memory and time of the streaming GeoJSON export vs the in-memory one it replaced.

A large synthetic label image (jittered-lattice Voronoi fibres, 10 % of the cells
left as background; default 6144^2 px with ~20 px fibres: ~85,000 fibres) is
written as a slide store with its fibre table. Each export then runs in a fresh
process without a Dask client (``_common.peak_rss_of``: peak RSS and wall time),
as does a baseline process that only imports the modules, loads the table and
reads one label tile.
``ratio`` = (old peak - baseline) / (new peak - baseline), ``target`` > 1;
``ratio_total_rss`` compares the whole peaks. The old method (:func:`_legacy_export`)
is a frozen copy of ``nclsm_scale/report/geojson.py`` before the streaming
rewrite: outer ring of the largest piece only, four measurements, every feature
built in memory and written with one ``json.dumps``. ``--repeats`` alternates the
three processes and keeps each one's best.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, peak_rss_of  # noqa: E402


def _legacy_trace(slide_path: str, level: int, boxes: np.ndarray, scale: float, tolerance_px: float) -> list[Any]:
    """The old ``trace_fibres``: the outer ring of each fibre's longest contour."""
    from skimage.measure import approximate_polygon, find_contours

    from nclsm_scale.slide import open_slide

    if len(boxes) == 0:
        return []
    wy0, wx0 = int(boxes[:, 1].min()) - 1, int(boxes[:, 2].min()) - 1
    wy1, wx1 = int(boxes[:, 3].max()) + 1, int(boxes[:, 4].max()) + 1
    labels = open_slide(slide_path).read_labels("fibres", level, wy0, wx0, wy1, wx1)
    rings = []
    for fid, y0, x0, y1, x1 in boxes.tolist():
        crop = labels[y0 - 1 - wy0 : y1 + 1 - wy0, x0 - 1 - wx0 : x1 + 1 - wx0] == fid
        outer = max(find_contours(crop.astype(np.float32), 0.5), key=len)
        if tolerance_px > 0:
            outer = approximate_polygon(outer, tolerance_px)
        ring = np.round(((outer + np.array([y0 - 1, x0 - 1]) + 0.5) * scale)[:, ::-1], 2).tolist()
        if ring[0] != ring[-1]:
            ring.append(ring[0])
        rings.append(ring)
    return rings


def _legacy_export(slide_path: Path, table: pd.DataFrame, meta: dict[str, Any], out: Path) -> Path:
    """The old ``export_geojson`` (client None, tolerance 0.5 px, 2048 px blocks): the whole file in memory."""
    from nclsm_scale.grid import BlockGrid
    from nclsm_scale.tables import FibreClass

    scale, f, shape = float(meta["level0_scale"]), round(float(meta["level0_scale"])), meta["shape_yx"]
    boxes = table[["fibre_id", "bbox_y0_px", "bbox_x0_px", "bbox_y1_px", "bbox_x1_px"]].to_numpy(np.int64)
    boxes[:, 1:3] //= f
    boxes[:, 3:] = -(-boxes[:, 3:] // f)
    grid = BlockGrid((shape[0], shape[1]), 2048)
    by, bx = grid.owner(boxes[:, 1], boxes[:, 2])
    owner = by * grid.n_blocks_yx[1] + bx
    groups = [g for g in (np.flatnonzero(owner == k) for k in range(int(np.prod(grid.n_blocks_yx)))) if g.size]
    parts = [_legacy_trace(str(slide_path), 0, boxes[g], scale, 0.5) for g in groups]
    rings: list[Any] = [None] * len(table)
    for g, part in zip(groups, parts, strict=True):
        for i, ring in zip(g.tolist(), part, strict=True):
            rings[i] = ring
    classes = table["curation_class"].astype(str).tolist()
    values = {c: table[c].tolist() for c in ("fibre_id", "area_um2", "feret_min_um", "confidence")}
    features = [{
        "type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {"objectType": "detection", "name": f"fibre {values['fibre_id'][i]}",
                       "classification": {"name": classes[i], "color": list(FibreClass[classes[i]].rgb)},
                       "measurements": {k: v[i] for k, v in values.items()}},
    } for i, ring in enumerate(rings)]
    out.write_text(json.dumps({"type": "FeatureCollection", "features": features}, allow_nan=False))
    return out


def voronoi_labels(size_px: int, cell_px: int, seed: int = 0) -> np.ndarray:
    """Jittered-lattice Voronoi fibres numbered 1.. in raster order of their cells, 10 % of cells background."""
    rng = np.random.default_rng(seed)
    n = -(-size_px // cell_px) + 2
    jitter = rng.uniform(0.15, 0.85, (n, n, 2)) * cell_px
    seeds = (np.stack(np.mgrid[-1 : n - 1, -1 : n - 1], axis=-1) * cell_px + jitter).astype(np.float32)
    ids = np.arange(n * n, dtype=np.uint32).reshape(n, n) + 1
    ids[rng.random((n, n)) < 0.1] = 0
    out = np.zeros((size_px, size_px), np.uint32)
    xx = np.arange(size_px)
    for y0 in range(0, size_px, 256):
        yy = np.arange(y0, min(y0 + 256, size_px))[:, None]
        ci, cj = yy // cell_px + 1, xx[None, :] // cell_px + 1
        best = np.full((len(yy), size_px), np.inf, np.float32)
        lab = np.zeros((len(yy), size_px), np.uint32)
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                s = seeds[ci + di, cj + dj]
                d = (s[..., 0] - yy) ** 2 + (s[..., 1] - xx[None, :]) ** 2
                closer = d < best
                best[closer], lab[closer] = d[closer], ids[ci + di, cj + dj][closer]
        out[y0 : y0 + len(yy)] = lab
    present = np.unique(out)
    present = present[present > 0]
    remap = np.zeros(int(out.max()) + 1, np.uint32)
    remap[present] = np.arange(1, len(present) + 1, dtype=np.uint32)
    return remap[out]


def write_store(path: Path, labels: np.ndarray) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A slide store holding ``labels`` as ``labels/fibres`` (level 0 = segmentation level) and its fibre table."""
    import zarr
    from scipy import ndimage

    from nclsm_scale.io.ome_zarr import create_image, create_labels

    create_image(path, (1, *labels.shape), np.uint8, pixel_size_um=1.0, channel_names=["membrane"],
                 chunk_px=1024, shard_px=0, min_level_px=labels.shape[0])
    create_labels(path, "fibres", dtype=np.uint32)
    zarr.open_array(str(path), path="labels/fibres/0", mode="r+")[0] = labels
    boxes = ndimage.find_objects(labels)
    b = np.array([[s[0].start, s[1].start, s[0].stop, s[1].stop] for s in boxes])
    n = len(boxes)
    area = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    rng = np.random.default_rng(1)
    classes = rng.choice(["AM", "AM", "AM", "NTM", "FR", "EDGE"], n)
    table = pd.DataFrame({
        "slide": "BIG", "fibre_id": np.arange(1, n + 1, dtype=np.uint32),
        "bbox_y0_px": b[:, 0], "bbox_x0_px": b[:, 1], "bbox_y1_px": b[:, 2], "bbox_x1_px": b[:, 3],
        "area_seg_px": area, "area_um2": area.astype(float), "feret_min_um": np.sqrt(area) * 0.9,
        "perimeter_um": np.sqrt(area) * 3.7, "solidity": 0.95, "circularity": 0.8,
        "curation_class": classes, "reasons": np.where(classes == "AM", "", classes),
        "confidence": rng.uniform(0.5, 1, n), "not_judged": "", "overridden": False, "fibre_type": "",
    })
    meta = {"level": 0, "level0_scale": 1.0, "shape_yx": list(labels.shape), "slide_name": "BIG"}
    return table, meta


def _child(kind: str, root: Path) -> None:
    """Load the table, then run the ``kind`` export (``none``: the baseline, imports and one label read only)."""
    from scipy import ndimage  # noqa: F401  (imports count in every child alike)
    from skimage.measure import approximate_polygon, find_contours  # noqa: F401

    from nclsm_scale.report.geojson import export_geojson
    from nclsm_scale.slide import open_slide

    table = pd.read_parquet(root / "table.parquet")
    meta = json.loads((root / "meta.json").read_text())
    open_slide(str(root / "BIG.ome.zarr")).read_labels("fibres", 0, 0, 0, 64, 64)

    if kind == "old":
        _legacy_export(root / "BIG.ome.zarr", table, meta, root / "old.geojson")
    elif kind == "new":
        export_geojson(root / "BIG.ome.zarr", table, meta, root / "new.geojson")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=6144, help="label image edge (px)")
    ap.add_argument("--cell", type=int, default=20, help="fibre spacing (px)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each method (alternating); best kept")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child[0], Path(args.child[1]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        labels = voronoi_labels(args.size, args.cell)
        table, meta = write_store(root / "BIG.ome.zarr", labels)
        del labels
        table.to_parquet(root / "table.parquet")
        (root / "meta.json").write_text(json.dumps(meta))
        setup_s = time.perf_counter() - t
        runs: dict[str, list[tuple[float, float]]] = {"none": [], "old": [], "new": []}
        for _ in range(args.repeats):
            for kind in runs:
                runs[kind].append(peak_rss_of([sys.executable, __file__, "--child", kind, str(root)]))
        features = json.loads((root / "new.geojson").read_text())["features"]
        multi = sum(f["geometry"]["type"] == "MultiPolygon" for f in features)
        base, old, new = (min(r[0] for r in runs[k]) * 1024 for k in ("none", "old", "new"))
        old_s, new_s = (min(r[1] for r in runs[k]) - min(r[1] for r in runs["none"]) for k in ("old", "new"))
        result = {
            "bench": "geojson",
            "what": "peak RSS of one slide's GeoJSON export in a fresh process, in-memory (old) vs streaming (new), "
                    "above a baseline process that imports, loads the table and reads one label tile",
            "label_px": [args.size, args.size], "n_fibres": len(table), "new_multipolygons": multi,
            "baseline_rss_mib": round(base), "old_rss_mib": round(old), "new_rss_mib": round(new),
            "old_above_baseline_mib": round(old - base), "new_above_baseline_mib": round(new - base),
            "old_s": round(old_s, 1), "new_s": round(new_s, 1),
            "old_file_mib": round((root / "old.geojson").stat().st_size / 2**20, 1),
            "new_file_mib": round((root / "new.geojson").stat().st_size / 2**20, 1),
            "setup_s": round(setup_s, 1), "repeats": args.repeats,
        }
        result["ratio"] = round((old - base) / max(new - base, 1.0), 2)
        result["ratio_total_rss"] = round(old / new, 2)
        result["time_ratio"] = round(new_s / old_s, 2)
        result["target"] = "ratio > 1 (less memory above the baseline); time_ratio near 1"
        result["load_avg_1m"] = round(os.getloadavg()[0], 2)
        emit(result)


if __name__ == "__main__":
    main()
