"""Checks of exported GeoJSON shared by the report tests and the benchmark: schema, rings, rasterisation."""

from __future__ import annotations

from typing import Any

import numpy as np

_POSITION = {"type": "array", "minItems": 2, "maxItems": 3, "items": {"type": "number"}}
_RING = {"type": "array", "minItems": 4, "items": _POSITION}
_POLYGON_COORDS = {"type": "array", "minItems": 1, "items": _RING}

#: The part of the GeoJSON schema (RFC 7946, as geojson.org's JSON schemas state it) the export uses.
GEOJSON_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["type", "features"],
    "properties": {
        "type": {"const": "FeatureCollection"},
        "features": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type", "geometry", "properties"],
                "properties": {
                    "type": {"const": "Feature"},
                    "properties": {"oneOf": [{"type": "null"}, {"type": "object"}]},
                    "geometry": {
                        "oneOf": [
                            {"type": "object", "required": ["type", "coordinates"],
                             "properties": {"type": {"const": "Polygon"}, "coordinates": _POLYGON_COORDS}},
                            {"type": "object", "required": ["type", "coordinates"],
                             "properties": {"type": {"const": "MultiPolygon"},
                                            "coordinates": {"type": "array", "items": _POLYGON_COORDS}}},
                        ]
                    },
                },
            },
        },
    },
}

#: What QuPath reads from a feature's properties (qupath.lib.io.PathObjectTypeAdapters).
QUPATH_PROPERTIES: dict[str, Any] = {
    "type": "object",
    "required": ["objectType", "classification", "measurements", "name"],
    "properties": {
        "objectType": {"enum": ["detection", "annotation"]},
        "name": {"type": "string"},
        "classification": {
            "type": "object", "required": ["name", "color"],
            "properties": {"name": {"type": "string"},
                           "color": {"type": "array", "minItems": 3, "maxItems": 3,
                                     "items": {"type": "integer", "minimum": 0, "maximum": 255}}},
        },
        "measurements": {"type": "object", "additionalProperties": {"type": "number"}},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def signed_area(ring: np.ndarray) -> float:
    """Shoelace area of a closed ``(x, y)`` ring: positive counter-clockwise."""
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))


def polygons(geometry: dict[str, Any]) -> list[list[np.ndarray]]:
    """The polygons (lists of ``(x, y)`` rings) of a Polygon or MultiPolygon."""
    coords = geometry["coordinates"]
    polys = [coords] if geometry["type"] == "Polygon" else coords
    return [[np.asarray(r, np.float64) for r in p] for p in polys]


def check_rings(geometry: dict[str, Any]) -> None:
    """Closed rings of at least 4 positions, exteriors counter-clockwise, holes clockwise and inside (RFC 7946)."""
    from matplotlib.path import Path

    assert geometry["type"] in ("Polygon", "MultiPolygon")
    if geometry["type"] == "MultiPolygon":
        assert len(geometry["coordinates"]) >= 2  # one piece is written as a Polygon
    for rings in polygons(geometry):
        for i, ring in enumerate(rings):
            assert ring.shape[0] >= 4 and ring.shape[1] == 2
            assert (ring[0] == ring[-1]).all()
            area = signed_area(ring)
            assert (area > 0) if i == 0 else (area < 0), (i, area)
            if i:
                assert Path(rings[0]).contains_points(ring[:-1]).mean() > 0.5  # a hole lies in its exterior


def rasterise(geometry: dict[str, Any], scale: float, box: tuple[int, int, int, int]) -> np.ndarray:
    """Pixels of a segmentation-level box ``(y0, x0, y1, x1)`` whose centres the (Multi)Polygon covers (even-odd)."""
    from matplotlib.path import Path

    y0, x0, y1, x1 = box
    yy, xx = np.mgrid[y0:y1, x0:x1]
    centres = np.column_stack([((xx + 0.5) * scale).ravel(), ((yy + 0.5) * scale).ravel()])
    inside = np.zeros(len(centres), bool)
    for rings in polygons(geometry):
        for ring in rings:
            inside ^= Path(ring).contains_points(centres)
    return inside.reshape(yy.shape)


def boundary_pixels(mask: np.ndarray) -> np.ndarray:
    """Pixels with a 8-neighbour of the other value (where simplification may move the outline)."""
    from scipy import ndimage

    return ndimage.binary_dilation(mask, np.ones((3, 3), bool)) & ndimage.binary_dilation(~mask, np.ones((3, 3), bool))
