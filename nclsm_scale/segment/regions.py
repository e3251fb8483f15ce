"""Tissue mask of a slide from a low-resolution level (``labels/regions``).

Tissue is where the smoothed sum of the channels, each scaled by its own 99th
percentile, exceeds a threshold halfway (:data:`TISSUE_LEVEL`) between the
background and the tissue level (both medians of an Otsu split), so bright folds
cannot pull the threshold into the tissue. The mask is then closed with a disk
of :data:`CLOSE_UM` (endomysium and perimysium gaps, small notches between
outline fibres) and holes are filled: a fibre next to a gap inside the section
is never on the tissue border. Values: 0 background, 1 tissue (fold regions get
their own value in ``curate``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["CLOSE_UM", "FLAT", "REGION_COLORS", "TISSUE", "TISSUE_LEVEL", "tissue_mask"]

#: Region label of tissue.
TISSUE = 1
#: Threshold position between the background (0) and tissue (1) levels of the smoothed signal.
TISSUE_LEVEL = 0.2
#: Relative range of the smoothed signal below which a slide is flat (Otsu needs a resolvable range).
FLAT = 1e-4
#: Radius (um) of the closing that bridges gaps between fibres and fascicles.
CLOSE_UM = 30.0
#: ``image-label`` colours of the region values (RGBA).
REGION_COLORS = {0: (0, 0, 0, 0), TISSUE: (0, 160, 255, 96)}


def tissue_mask(image: np.ndarray, pixel_size_um: float, smooth_um: float) -> np.ndarray:
    """uint8 ``(y, x)`` tissue mask of a low-resolution ``(c, y, x)`` image."""
    from skimage.filters import threshold_otsu

    img = np.asarray(image)

    def scaled(c: int) -> np.ndarray:  # one float plane at a time: a regions level can hold 10^8 px
        plane = img[c].astype(np.float32)
        scale = np.percentile(plane, 99.0)
        plane /= scale if scale > 0 else np.float32(1.0)
        return plane

    signal = scaled(0)
    for c in range(1, img.shape[0]):
        signal += scaled(c)
    if smooth_um > 0:
        signal = ndi.gaussian_filter(signal, smooth_um / pixel_size_um)
    lo, hi = float(signal.min()), float(signal.max())
    if not hi - lo > FLAT * max(abs(lo), abs(hi)):  # flat (blank, or smoothed to a constant): no tissue
        return np.zeros(signal.shape, dtype=np.uint8)
    otsu = threshold_otsu(signal)
    bg, fg = float(np.median(signal[signal <= otsu])), float(np.median(signal[signal > otsu]))
    tissue = signal > bg + TISSUE_LEVEL * (fg - bg)
    r = int(round(CLOSE_UM / pixel_size_um))
    if r > 0:
        disk = np.hypot(*np.mgrid[-r : r + 1, -r : r + 1]) <= r
        tissue = ndi.binary_closing(np.pad(tissue, r), disk)[r:-r, r:-r]
    tissue = ndi.binary_fill_holes(tissue)
    return tissue.astype(np.uint8) * TISSUE
