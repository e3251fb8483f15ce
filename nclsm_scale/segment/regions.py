"""Tissue mask of a slide from a low-resolution level (``labels/regions``).

Tissue is where the smoothed sum of the channels, each scaled by its own 99th
percentile, exceeds an Otsu threshold; holes inside tissue are filled. Values:
0 background, 1 tissue (fold regions will get their own value).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["REGION_COLORS", "TISSUE", "tissue_mask"]

#: Region label of tissue.
TISSUE = 1
#: ``image-label`` colours of the region values (RGBA).
REGION_COLORS = {0: (0, 0, 0, 0), TISSUE: (0, 160, 255, 96)}


def tissue_mask(image: np.ndarray, pixel_size_um: float, smooth_um: float) -> np.ndarray:
    """uint8 ``(y, x)`` tissue mask of a low-resolution ``(c, y, x)`` image."""
    from skimage.filters import threshold_otsu

    img = np.asarray(image, dtype=np.float32)
    scale = np.percentile(img.reshape(img.shape[0], -1), 99.0, axis=1)
    signal = (img / np.where(scale > 0, scale, 1.0)[:, None, None]).sum(axis=0)
    if smooth_um > 0:
        signal = ndi.gaussian_filter(signal, smooth_um / pixel_size_um)
    if float(signal.max()) <= float(signal.min()):
        return np.zeros(signal.shape, dtype=np.uint8)
    tissue = ndi.binary_fill_holes(signal > threshold_otsu(signal))
    return tissue.astype(np.uint8) * TISSUE
