"""Training targets from an instance mask: the per-pixel meaning of the network's maps."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["fibre_targets", "touching_pixels"]


def touching_pixels(labels: np.ndarray) -> np.ndarray:
    """Fibre pixels with a 4-neighbour in a *different* fibre (shared membranes)."""
    lab = np.asarray(labels)
    out = np.zeros(lab.shape, dtype=bool)
    for axis in (0, 1):
        a = lab.swapaxes(0, axis)
        o = out.swapaxes(0, axis)
        differ = (a[:-1] != a[1:]) & (a[:-1] > 0) & (a[1:] > 0)
        o[:-1] |= differ
        o[1:] |= differ
    return out


def fibre_targets(labels: np.ndarray) -> np.ndarray:
    """Targets ``(3, y, x)`` float32 in [0, 1] for the channels of ``MAP_CHANNELS``.

    - ``foreground``: 1 inside any fibre.
    - ``boundary``: 1 on a fibre's own outermost pixel ring (8-connectivity).
    - ``distance``: Euclidean distance to the nearest pixel outside the fibre
      (background or another fibre), divided by the fibre's maximum, so every
      fibre peaks at 1 in its centre; 0 in the background.
    """
    lab = np.asarray(labels)
    fg = lab > 0
    interior = fg & ~touching_pixels(lab)
    dist = ndimage.distance_transform_edt(interior).astype(np.float32)
    ids, inverse = np.unique(lab, return_inverse=True)
    inverse = inverse.reshape(lab.shape)
    peak = np.asarray(ndimage.maximum(dist, inverse, index=np.arange(ids.size)), dtype=np.float32)
    peak[peak <= 0] = 1.0
    norm = np.where(fg, dist / peak[inverse], 0.0).astype(np.float32)
    eroded = ndimage.grey_erosion(np.where(fg, lab, 0), size=(3, 3), mode="nearest")
    dilated = ndimage.grey_dilation(lab, size=(3, 3), mode="nearest")
    boundary = fg & ((eroded != lab) | (dilated != lab))
    return np.stack([fg.astype(np.float32), boundary.astype(np.float32), norm])
