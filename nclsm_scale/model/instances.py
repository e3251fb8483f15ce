"""Whole-image instance extraction from the network's maps.

Seeds are connected components of the high part of the distance map inside the
foreground; every foreground pixel is then assigned by a seeded watershed on the
negative distance (plus the boundary probability). The distributed, exactly
stitched version lives in :mod:`nclsm_scale.segment`; this module gives the same
per-pixel rules for one in-memory image (evaluation, training metrics).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

__all__ = [
    "FOREGROUND_THRESHOLD",
    "MIN_SEED_PX",
    "SEED_THRESHOLD",
    "extract_instances",
    "seed_mask",
    "watershed_surface",
]

#: Foreground probability above which a pixel belongs to a fibre.
FOREGROUND_THRESHOLD = 0.5
#: Normalised distance above which a foreground pixel belongs to its fibre's seed.
SEED_THRESHOLD = 0.35
#: Seeds smaller than this (pixels) are dropped. The three constants were chosen on a
#: validation render of the NCL-SM *training* rows (fresh appearance seed), never on
#: the held-out rows.
MIN_SEED_PX = 15


def seed_mask(
    maps: np.ndarray,
    *,
    fg_threshold: float = FOREGROUND_THRESHOLD,
    seed_threshold: float = SEED_THRESHOLD,
) -> np.ndarray:
    """Boolean seed pixels of maps ``(3, y, x)``: foreground and distance above threshold."""
    return (maps[0] > fg_threshold) & (maps[2] > seed_threshold)


def watershed_surface(maps: np.ndarray) -> np.ndarray:
    """Flooding surface: low in fibre centres, high on boundaries."""
    return (maps[1] - maps[2]).astype(np.float32)


def extract_instances(
    maps: np.ndarray,
    *,
    fg_threshold: float = FOREGROUND_THRESHOLD,
    seed_threshold: float = SEED_THRESHOLD,
    min_seed_px: int = MIN_SEED_PX,
) -> np.ndarray:
    """Instance labels ``(y, x)`` uint32 (1..N in raster order of seeds) from maps ``(3, y, x)``.

    Seeds smaller than ``min_seed_px`` are dropped; foreground not reached from any
    seed stays 0.
    """
    fg = maps[0] > fg_threshold
    seeds, n = ndimage.label(
        seed_mask(maps, fg_threshold=fg_threshold, seed_threshold=seed_threshold)
    )
    if n == 0:
        return np.zeros(fg.shape, np.uint32)
    sizes = np.bincount(seeds.ravel(), minlength=n + 1)
    keep = sizes >= min_seed_px
    keep[0] = False
    lut = np.zeros(n + 1, np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1)
    markers = lut[seeds]
    labels = watershed(watershed_surface(maps), markers=markers, mask=fg)
    return labels.astype(np.uint32)
