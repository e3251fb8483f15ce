"""Classical baseline: membrane threshold, distance transform, seeded watershed.

The reference the network has to beat on the same images:

1. membrane = Otsu threshold of the smoothed membrane channel; tissue = Otsu
   threshold of the smoothed mito channel, closed, plus the membrane;
2. fibre interiors = tissue minus membrane (opened); seeds = connected parts of
   the interiors' distance transform above ``seed_depth_px`` (interiors shrunk
   away from faint membrane gaps), smaller than ``min_seed_px`` dropped;
3. seeded watershed on the membrane intensity inside the tissue, so every seed
   grows up to the membrane crest it meets.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.segmentation import watershed

__all__ = ["baseline_instances"]


def baseline_instances(
    image: np.ndarray, *, seed_depth_px: float = 1.5, min_seed_px: int = 20, smooth_px: float = 1.0
) -> np.ndarray:
    """Instance labels ``(y, x)`` uint32 from a normalised ``(2, y, x)`` image (membrane, mito)."""
    membrane = ndimage.gaussian_filter(np.asarray(image[0], np.float32), smooth_px)
    mito = ndimage.gaussian_filter(np.asarray(image[1], np.float32), 2 * smooth_px)
    wall = membrane > threshold_otsu(membrane)
    tissue = ndimage.binary_closing(mito > threshold_otsu(mito), iterations=2) | wall
    interior = ndimage.binary_opening(tissue & ~wall)
    dist = ndimage.distance_transform_edt(interior)
    seeds, n = ndimage.label(dist > seed_depth_px)
    sizes = np.bincount(seeds.ravel(), minlength=n + 1)
    keep = sizes >= min_seed_px
    keep[0] = False
    lut = np.zeros(n + 1, np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1)
    labels = watershed(membrane, markers=lut[seeds], mask=tissue)
    return labels.astype(np.uint32)
