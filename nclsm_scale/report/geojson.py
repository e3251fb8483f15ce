"""Fibres as GeoJSON polygons with their class, for QuPath (File > Import objects).

Each fibre's outer outline is traced on the segmentation level
(:func:`skimage.measure.find_contours` at 0.5 around the fibre's mask, so the
polygon runs along pixel edges' midpoints), simplified
(:func:`skimage.measure.approximate_polygon`) and mapped to **level-0 pixel
coordinates** with pixel corners at integers, as QuPath expects: a point at
segmentation coordinate ``c`` (pixel centres at integers) goes to ``(c + 0.5) * f``
with ``f`` the level's downsample. Features are ``objectType: "detection"`` with
``properties.classification = {"name": class, "color": [r, g, b]}`` and a few
measurements. The table's bounding boxes (level-0 pixels) are mapped back to the
segmentation level. Fibres are traced in tasks per block of the owner of their
bounding box's top-left corner, each reading the union of its fibres' boxes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nclsm_scale.cluster import fan_out
from nclsm_scale.errors import SlideWriteError
from nclsm_scale.grid import BlockGrid
from nclsm_scale.slide import open_slide
from nclsm_scale.tables import FibreClass

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["export_geojson", "trace_fibres"]

logger = logging.getLogger(__name__)

#: Block edge (segmentation-level px) of the tracing tasks.
TRACE_BLOCK_PX = 2048
#: Measurements copied into each feature's properties.
MEASUREMENTS = ("fibre_id", "area_um2", "feret_min_um", "confidence")


def trace_fibres(
    slide_path: str, level: int, boxes: np.ndarray, scale: float, tolerance_px: float
) -> list[list[list[float]]]:
    """Outer rings (``[[x, y], ...]`` in level-0 px) of fibres given as rows ``(id, y0, x0, y1, x1)`` at ``level``."""
    from skimage.measure import approximate_polygon, find_contours

    if len(boxes) == 0:
        return []
    wy0, wx0 = int(boxes[:, 1].min()) - 1, int(boxes[:, 2].min()) - 1
    wy1, wx1 = int(boxes[:, 3].max()) + 1, int(boxes[:, 4].max()) + 1
    labels = open_slide(slide_path).read_labels("fibres", level, wy0, wx0, wy1, wx1)
    rings = []
    for fid, y0, x0, y1, x1 in boxes.tolist():
        crop = labels[y0 - 1 - wy0 : y1 + 1 - wy0, x0 - 1 - wx0 : x1 + 1 - wx0] == fid
        contours = find_contours(crop.astype(np.float32), 0.5)
        outer = max(contours, key=len)
        if tolerance_px > 0:
            outer = approximate_polygon(outer, tolerance_px)
        yx = (outer + np.array([y0 - 1, x0 - 1]) + 0.5) * scale
        ring = np.round(yx[:, ::-1], 2).tolist()
        if ring[0] != ring[-1]:
            ring.append(ring[0])
        rings.append(ring)
    return rings


def _number(value: Any) -> int | float | None:
    if isinstance(value, (int, np.integer)):
        return int(value)
    value = float(value)
    return value if np.isfinite(value) else None


def export_geojson(
    slide_path: str | Path,
    table: pd.DataFrame,
    meta: Mapping[str, Any],
    out_path: str | Path,
    *,
    client: Client | None = None,
    tolerance_px: float = 0.5,
) -> Path:
    """Write a FeatureCollection of the curated fibres of one slide to ``out_path``.

    Parameters
    ----------
    slide_path : the segmented slide.
    table : curated fibre table (``fibre_id``, level-0 bounding box, ``curation_class``).
    meta : its metadata (``level``, ``level0_scale``, ``shape_yx``).
    client : distributed.Client, optional
        Trace on the cluster; ``None`` traces in this process.
    tolerance_px : float
        Polygon simplification tolerance in segmentation-level pixels (0: none).
    """
    level = int(meta.get("level", 0))
    scale = float(meta.get("level0_scale", 1.0))
    f = round(scale)
    shape = tuple(int(v) for v in meta.get("shape_yx", (1, 1)))
    cols = ["fibre_id", "bbox_y0_px", "bbox_x0_px", "bbox_y1_px", "bbox_x1_px"]
    boxes = table[cols].to_numpy(np.int64)
    boxes[:, 1:3] //= f
    boxes[:, 3:] = -(-boxes[:, 3:] // f)  # level-0 ends -> segmentation-level ends (ceiling)
    grid = BlockGrid((max(shape[0], 1), max(shape[1], 1)), TRACE_BLOCK_PX)
    by, bx = grid.owner(boxes[:, 1], boxes[:, 2])
    ny, nx = grid.n_blocks_yx
    owner = by * nx + bx
    groups = [np.flatnonzero(owner == k) for k in range(ny * nx)]
    groups = [g for g in groups if g.size]
    args = [(str(slide_path), level, boxes[g], scale, tolerance_px) for g in groups]
    parts = fan_out(client, trace_fibres, args, desc="report: outlines")
    rings: list[Any] = [None] * len(table)
    for g, part in zip(groups, parts, strict=True):
        for i, ring in zip(g.tolist(), part, strict=True):
            rings[i] = ring
    classes = table["curation_class"].astype(str).tolist()
    values = {c: table[c].tolist() for c in MEASUREMENTS if c in table.columns}
    features = []
    for i, ring in enumerate(rings):
        cls = classes[i]
        features.append({
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {
                "objectType": "detection",
                "name": f"fibre {values['fibre_id'][i]}",
                "classification": {"name": cls, "color": list(FibreClass[cls].rgb)},
                "measurements": {k: _number(v[i]) for k, v in values.items()},
            },
        })
    out = Path(out_path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(json.dumps({"type": "FeatureCollection", "features": features}, allow_nan=False))
        tmp.replace(out)
    except OSError as exc:
        raise SlideWriteError(f"cannot write {out}: {exc}") from None
    logger.info("%s: %d fibre polygons -> %s", slide_path, len(features), out)
    return out
