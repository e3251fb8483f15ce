"""Fibres as GeoJSON for QuPath (File > Import objects, or drag & drop), written block by block.

**Geometry.** Every piece (4-connected component) of a fibre's label becomes a
polygon whose rings run through the midpoints of the pixel edges between the
fibre and the rest (:func:`skimage.measure.find_contours` at 0.5), so the
pixel centres inside the rings are exactly the fibre's pixels; holes are
interior rings. A fibre in one piece is a ``Polygon``, one in several a
``MultiPolygon`` with every piece. Rings are simplified
(:func:`skimage.measure.approximate_polygon`, ``tolerance_px``), closed, the
exterior counter-clockwise and holes clockwise by the sign of their area in the
``(x, y)`` numbers written (RFC 7946; on a screen, with y pointing down, they look
the other way round), and in **level-0 pixel coordinates** with pixel corners at
integers, QuPath's frame: a segmentation-level coordinate ``c`` (pixel centres at
integers) goes to ``(c + 0.5) * f`` with ``f`` the level's downsample.

**Properties** follow QuPath's GeoJSON (``PathObjectTypeAdapters``):
``objectType: "detection"``, ``name`` ``"fibre <id>"``, ``classification``
``{"name": class, "color": [r, g, b]}``, ``measurements`` a dict name -> number
(:data:`MEASUREMENTS`, ``reason <code>`` 0/1 for every rejection code,
``overridden`` 0/1; non-finite values left out) and ``metadata`` (strings:
slide, fibre_id, reasons, not_judged). QuPath keeps exactly these on import and
writes them back on export; the plain properties ``slide``, ``fibre_id``,
``reasons``, ``not_judged``, ``confidence``, ``fibre_type`` are for other readers.

**Streaming.** Work goes by the blocks of a :class:`~nclsm_scale.grid.BlockGrid`
over the segmentation level. A block owns the fibres whose first raster pixel
lies in its core (lowest row, then lowest column: the rule of ``measure``'s
``owned_ids``), so each fibre is written once; it reads one window holding its
candidate fibres whole (their bounding boxes come from the table), finds each
candidate's first pixel in its top row, and returns the owned fibres' features as
JSON text, ordered by ``fibre_id``. Blocks are written in raster
order as they finish; with a client they go out :data:`BATCH_BLOCKS` at a time
through :func:`~nclsm_scale.cluster.fan_out`, so only one batch of features and
one window per worker are ever held, never the label array or the whole file.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numba
import numpy as np
import pandas as pd

from nclsm_scale.cluster import fan_out
from nclsm_scale.errors import write_error
from nclsm_scale.grid import BlockGrid
from nclsm_scale.slide import open_slide
from nclsm_scale.tables import FibreClass

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["export_geojson", "feature_properties", "fibre_geometry", "fibre_polygons", "first_pixel_owned",
           "plan_blocks", "trace_block"]

logger = logging.getLogger(__name__)

#: Block edge (segmentation-level px) of the tracing tasks.
TRACE_BLOCK_PX = 1024
#: Blocks sent to the cluster per round; their features are written before the next round goes out.
BATCH_BLOCKS = 32
#: QuPath measurement name -> fibre-table column (those the table has are written).
MEASUREMENTS = {
    "fibre_id": "fibre_id",
    "confidence": "confidence",
    "CSA µm²": "area_um2",
    "min Feret µm": "feret_min_um",
    "max Feret µm": "feret_max_um",
    "perimeter µm": "perimeter_um",
    "circularity": "circularity",
    "solidity": "solidity",
    "fold fraction": "fold_fraction",
    "type confidence": "type_confidence",
}
#: Rejection codes, each a 0/1 measurement ``reason <code>``.
REASON_CODES = tuple(c.value for c in FibreClass if c is not FibreClass.AM)
#: Table columns a block task needs besides the bounding box.
_COLUMNS = ("fibre_id", "curation_class", "reasons", "not_judged", "overridden", "fibre_type",
            *MEASUREMENTS.values())
_BOX = ["fibre_id", "bbox_y0_px", "bbox_x0_px", "bbox_y1_px", "bbox_x1_px"]


def _signed_area(ring: np.ndarray) -> float:
    """Shoelace area of a closed ring of ``(a, b)`` rows (positive: counter-clockwise in ``(a, b)``)."""
    a, b = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(a[:-1], b[1:]) - np.dot(a[1:], b[:-1]))


@numba.njit(cache=True, nogil=True)
def _douglas_peucker(coords: np.ndarray, tolerance: float) -> np.ndarray:  # pragma: no cover - compiled
    """Which points of the chain ``coords`` (``(k, 2)`` float64) Douglas-Peucker keeps at ``tolerance``.

    The algorithm of :func:`skimage.measure.approximate_polygon` (a point's distance
    is to the segment: perpendicular where it projects inside, else to the nearer
    end; split at the farthest point while it is over ``tolerance``), compiled: in
    numpy calls on a few points each it took most of the report's time. Distances
    are compared squared, the perpendicular one from the cross product, which is
    exact on the contours' half-pixel grid, so the many ties between equally far
    points always go to the first (skimage's trigonometric form lets rounding pick
    among them, so a few simplified rings differ from its output, equally valid).
    """
    k = coords.shape[0]
    keep = np.zeros(k, np.bool_)
    keep[0] = True
    keep[k - 1] = True
    tol2 = tolerance * tolerance
    stack = [(0, k - 1)]
    while len(stack) > 0:
        start, end = stack.pop()
        r0, c0 = coords[start, 0], coords[start, 1]
        dr, dc = coords[end, 0] - r0, coords[end, 1] - c0
        length2 = dr * dr + dc * dc
        best, best_i = -1.0, -1
        for i in range(start + 1, end):
            pr, pc = coords[i, 0] - r0, coords[i, 1] - c0
            qr, qc = coords[i, 0] - coords[end, 0], coords[i, 1] - coords[end, 1]
            if pr * dr + pc * dc > 0 and -(qr * dr + qc * dc) > 0:
                cross = pr * dc - pc * dr
                d2 = cross * cross / length2
            else:
                d2 = min(pr * pr + pc * pc, qr * qr + qc * qc)
            if d2 > best:
                best, best_i = d2, i
        if best > tol2:
            stack.append((best_i, end))
            stack.append((start, best_i))
            keep[best_i] = True
    return keep


def _simplify(ring: np.ndarray, tolerance_px: float) -> np.ndarray:
    """``ring`` simplified; the original where simplifying would collapse it or flip its orientation."""
    if tolerance_px <= 0:
        return ring
    out = ring[_douglas_peucker(np.ascontiguousarray(ring, np.float64), float(tolerance_px))]
    if len(out) < 4 or _signed_area(out) * _signed_area(ring) <= 0:
        return ring
    return out


def fibre_polygons(mask: np.ndarray, tolerance_px: float = 0.0) -> list[list[np.ndarray]]:
    """Polygons of a fibre mask: one per 4-connected piece, exterior ring first, then its holes.

    ``mask`` (bool, ``(h, w)``) must have a background border of at least one
    pixel. Rings are closed ``(n, 2)`` arrays of ``(row, column)`` through the
    midpoints of the fibre's boundary pixel edges, oriented so that ``(x, y) =
    (column, row)`` runs counter-clockwise for exteriors and clockwise for holes.

    >>> m = np.zeros((4, 5), bool); m[1:3, 1:4] = True
    >>> [[len(r) for r in p] for p in fibre_polygons(m)]
    [[11]]
    """
    from scipy import ndimage
    from skimage.measure import find_contours

    pieces, n = ndimage.label(mask)
    polygons = []
    for k in range(1, n + 1):
        piece = (pieces == k) if n > 1 else mask
        contours = find_contours(piece.astype(np.float32), 0.5)
        areas = [_signed_area(c[:, ::-1]) for c in contours]
        order = np.argsort(np.abs(areas))[::-1]  # the exterior encloses the most
        rings = []
        for i, j in enumerate(order.tolist()):
            ccw = i == 0  # the exterior counter-clockwise, holes clockwise, in (x, y)
            ring = contours[j] if (areas[j] > 0) == ccw else contours[j][::-1]
            rings.append(_simplify(ring, tolerance_px))
        polygons.append(rings)
    return polygons


def fibre_geometry(
    mask: np.ndarray, origin_yx: tuple[int, int], scale: float, tolerance_px: float
) -> dict[str, Any]:
    """GeoJSON ``Polygon`` or ``MultiPolygon`` of a fibre mask in level-0 px.

    ``origin_yx`` is the segmentation-level position of ``mask[0, 0]``; ``scale``
    the level's downsample.

    >>> m = np.zeros((3, 3), bool); m[1, 1] = True
    >>> fibre_geometry(m, (10, 20), 2.0, 0.0)["coordinates"]
    [[[43.0, 24.0], [42.0, 23.0], [43.0, 22.0], [44.0, 23.0], [43.0, 24.0]]]
    """
    offset = np.array(origin_yx, np.float64) + 0.5
    polys = [
        [np.round((ring + offset) * scale, 2)[:, ::-1].tolist() for ring in rings]
        for rings in fibre_polygons(mask, tolerance_px)
    ]
    if len(polys) == 1:
        return {"type": "Polygon", "coordinates": polys[0]}
    return {"type": "MultiPolygon", "coordinates": polys}


def _number(value: Any) -> int | float | None:
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and not np.isfinite(value)) else str(value)


def feature_properties(row: Mapping[str, Any], slide: str) -> dict[str, Any]:
    """QuPath properties of one fibre-table row (see the module docstring).

    >>> p = feature_properties({"fibre_id": 7, "curation_class": "NTM", "reasons": "FR;NTM"}, "S1")
    >>> p["classification"]["name"], p["measurements"]["reason FR"], p["metadata"]["fibre_id"]
    ('NTM', 1, '7')
    """
    fid = int(row["fibre_id"])
    cls = str(row["curation_class"])
    reasons = _text(row.get("reasons"))
    codes = set(reasons.split(";"))
    measurements: dict[str, int | float] = {}
    for name, column in MEASUREMENTS.items():
        if column in row and (value := _number(row[column])) is not None:
            measurements[name] = value
    measurements.update({f"reason {c}": int(c in codes) for c in REASON_CODES})
    if "overridden" in row:
        measurements["overridden"] = int(bool(row["overridden"]))
    not_judged = _text(row.get("not_judged"))
    return {
        "objectType": "detection",
        "name": f"fibre {fid}",
        "classification": {"name": cls, "color": list(FibreClass[cls].rgb)},
        "measurements": measurements,
        "metadata": {"slide": slide, "fibre_id": str(fid), "reasons": reasons, "not_judged": not_judged},
        "slide": slide,
        "fibre_id": fid,
        "reasons": reasons,
        "not_judged": not_judged,
        "confidence": measurements.get("confidence"),
        "fibre_type": _text(row.get("fibre_type")),
    }


def first_pixel_owned(
    labels: np.ndarray, boxes: np.ndarray, origin_yx: tuple[int, int], core: tuple[int, int, int, int]
) -> np.ndarray:
    """Which fibres of ``boxes`` (rows ``(id, y0, x0, y1, x1)``) have their first raster pixel in ``core``.

    ``labels`` is a window at ``origin_yx`` holding every box whole; a fibre's
    first pixel is its leftmost in its top row ``y0``.

    >>> lab = np.array([[0, 1, 1], [2, 2, 1], [0, 2, 0]], np.uint32)
    >>> boxes = np.array([[1, 0, 1, 2, 3], [2, 1, 0, 3, 2]])
    >>> first_pixel_owned(lab, boxes, (0, 0), (1, 0, 3, 3)).tolist()
    [False, True]
    """
    oy, ox = origin_yx
    cy0, cx0, cy1, cx1 = core
    owned = np.zeros(len(boxes), bool)
    for i, (fid, y0, x0, _, x1) in enumerate(boxes.tolist()):
        if cy0 <= y0 < cy1:
            x = x0 + int(np.argmax(labels[y0 - oy, x0 - ox : x1 - ox] == fid))
            owned[i] = cx0 <= x < cx1
    return owned


def trace_block(
    slide_path: str,
    level: int,
    scale: float,
    core: tuple[int, int, int, int],
    boxes: np.ndarray,
    rows: pd.DataFrame,
    slide: str,
    tolerance_px: float,
) -> list[str]:
    """Features (JSON text, by ``fibre_id``) of the fibres among ``boxes`` that block ``core`` owns.

    ``boxes`` are rows ``(id, y0, x0, y1, x1)`` at ``level`` of the candidates
    (top row in the core's rows, columns meeting its columns) and ``rows`` their
    table rows, in the same order. One window holding every candidate whole is read.
    """
    if len(boxes) == 0:
        return []
    wy0, wx0 = int(boxes[:, 1].min()) - 1, int(boxes[:, 2].min()) - 1
    wy1, wx1 = int(boxes[:, 3].max()) + 1, int(boxes[:, 4].max()) + 1
    labels = open_slide(slide_path).read_labels("fibres", level, wy0, wx0, wy1, wx1)
    keep = np.flatnonzero(first_pixel_owned(labels, boxes, (wy0, wx0), core))
    keep = keep[np.argsort(boxes[keep, 0], kind="stable")]
    records: list[dict[str, Any]] = [{str(k): v for k, v in r.items()} for r in rows.iloc[keep].to_dict("records")]
    out = []
    for i, row in zip(keep.tolist(), records, strict=True):
        fid, y0, x0, y1, x1 = boxes[i].tolist()
        crop = labels[y0 - 1 - wy0 : y1 + 1 - wy0, x0 - 1 - wx0 : x1 + 1 - wx0] == fid
        feature = {
            "type": "Feature",
            "geometry": fibre_geometry(crop, (y0 - 1, x0 - 1), scale, tolerance_px),
            "properties": feature_properties(row, slide),
        }
        out.append(json.dumps(feature, separators=(",", ":"), ensure_ascii=False, allow_nan=False))
    return out


def plan_blocks(
    boxes: np.ndarray, shape_yx: tuple[int, int], block_px: int
) -> list[tuple[tuple[int, int, int, int], np.ndarray]]:
    """Blocks (raster order) with the rows of ``boxes`` each may own: core and row indices.

    A fibre is a candidate of the blocks in the row of blocks holding its top row
    whose columns meet its box; exactly one of them owns it.
    """
    grid = BlockGrid((max(shape_yx[0], 1), max(shape_yx[1], 1)), block_px)
    ny, nx = grid.n_blocks_yx
    by, bx0 = grid.owner(boxes[:, 1], boxes[:, 2])
    _, bx1 = grid.owner(boxes[:, 1], np.maximum(boxes[:, 4] - 1, boxes[:, 2]))
    span = (bx1 - bx0 + 1).astype(np.int64)
    rows = np.repeat(np.arange(len(boxes)), span)
    first = np.repeat(np.cumsum(span) - span, span)
    key = np.repeat(by * nx + bx0, span) + (np.arange(len(rows)) - first)
    order = np.argsort(key, kind="stable")
    rows, key = rows[order], key[order]
    bounds = np.searchsorted(key, np.arange(ny * nx + 1))
    plan = []
    for k in range(ny * nx):
        if bounds[k + 1] > bounds[k]:
            b = grid.block(k // nx, k % nx)
            plan.append(((b.y0, b.x0, b.y1, b.x1), rows[bounds[k] : bounds[k + 1]]))
    return plan


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def export_geojson(
    slide_path: str | Path,
    table: pd.DataFrame,
    meta: Mapping[str, Any],
    out_path: str | Path,
    *,
    client: Client | None = None,
    tolerance_px: float = 0.5,
    block_px: int = TRACE_BLOCK_PX,
    batch_blocks: int = BATCH_BLOCKS,
) -> Path:
    """Write a FeatureCollection of the curated fibres of one slide to ``out_path``, streaming.

    Parameters
    ----------
    slide_path : the segmented slide.
    table : curated fibre table (``fibre_id``, level-0 bounding box, ``curation_class``, ...).
    meta : its metadata (``level``, ``level0_scale``, ``shape_yx``, ``slide_name``).
    client : distributed.Client, optional
        Trace on the cluster; ``None`` traces in this process, block by block.
    tolerance_px : float
        Polygon simplification tolerance in segmentation-level pixels (0: none).
    block_px : int
        Block edge (segmentation-level px) of the tracing tasks.
    batch_blocks : int
        Blocks per round on the cluster (bounds the features held at once).

    Raises
    ------
    SlideWriteError
        When the file cannot be written.
    """
    level = int(meta.get("level", 0))
    scale = float(meta.get("level0_scale", 1.0))
    f = round(scale)
    shape = (int(meta.get("shape_yx", (1, 1))[0]), int(meta.get("shape_yx", (1, 1))[1]))
    slide = str(meta.get("slide_name") or (table["slide"].iloc[0] if "slide" in table and len(table) else
                                           Path(slide_path).name.removesuffix(".ome.zarr")))
    boxes = table[_BOX].to_numpy(np.int64)
    boxes[:, 1:3] //= f
    boxes[:, 3:] = -(-boxes[:, 3:] // f)  # level-0 ends -> segmentation-level ends (ceiling)
    rows = table[[c for c in dict.fromkeys(_COLUMNS) if c in table.columns]]
    plan = plan_blocks(boxes, shape, block_px)
    out = Path(out_path)
    tmp = out.with_name(f".{out.name}.tmp")
    n = 0
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write('{"type":"FeatureCollection","features":[')
            for batch in _batches(plan, batch_blocks if client is not None else 1):
                args = [(str(slide_path), level, scale, core, boxes[idx], rows.iloc[idx], slide, tolerance_px)
                        for core, idx in batch]
                for part in fan_out(client, trace_block, args, desc="report: outlines"):
                    for text in part:
                        fh.write((",\n" if n else "\n") + text)
                        n += 1
            fh.write("\n]}\n")
        tmp.replace(out)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise write_error(exc, out) from None
    if n != len(table):
        logger.warning("%s: %d of %d fibres of the table are not in labels/fibres; their outlines are missing "
                       "from %s", slide_path, len(table) - n, len(table), out)
    logger.info("%s: %d fibre outlines in %d blocks -> %s", slide_path, n, len(plan), out)
    return out
