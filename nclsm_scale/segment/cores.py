"""Fibre cores: connected regions of high distance, one seed (root) each.

The distance map peaks along a fibre's medial axis; in an elongated (oblique)
fibre that ridge is long and flat, so local maxima split it. A **core** is a
4-connected component of foreground pixels whose level reaches the core level
(``SegmentParams.min_seed_value``); its **root** is its pixel with the largest
key (level, then earlier global raster position), the fibre's seed. Both depend
only on the core's own pixels, so a core that does not touch the edge of a
window is found exactly, whatever the window; a core that touches the edge is
*open* and undecided there. A fibre's core lies inside the fibre, so a halo of
one fibre diameter closes every core whose root lies in a block's core.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from nclsm_scale.errors import GridError

__all__ = ["Cores", "find_cores"]

_LOW = 0xFFFFFFFF


class Cores:
    """The cores of one level window, numbered ``1..n``.

    Attributes
    ----------
    pixels : (k,) intp
        Window-flat indices of all core pixels, ascending.
    ids : (k,) int32
        Core (1..n) of each of ``pixels``.
    roots : (n + 1,) intp
        Window-flat index of each core's root (index 0 unused).
    open : (n + 1,) bool
        Cores that touch the window edge (their root may lie outside).
    """

    def __init__(self, pixels: np.ndarray, ids: np.ndarray, roots: np.ndarray, open_: np.ndarray) -> None:
        self.pixels = pixels
        self.ids = ids
        self.roots = roots
        self.open = open_


def _ring(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])


def find_cores(level: np.ndarray, core_level: int, min_core_px: int = 1) -> Cores:
    """Cores of a level window (``-1`` off foreground) whose level reaches ``core_level``.

    Closed components smaller than ``min_core_px`` are not cores; open ones are
    kept whatever their size, since they may continue outside the window. Only
    the core pixels are visited after the labelling.

    >>> lv = np.array([[0, 5, 5, 0, 7], [0, 6, 5, 0, 7]], np.int32)
    >>> c = find_cores(lv, 5)
    >>> c.roots[1:].tolist(), c.open[1:].tolist()
    ([6, 4], [True, True])
    """
    level = np.ascontiguousarray(level, dtype=np.int32)
    if level.size >= 1 << 32:
        raise GridError(f"a window of {level.shape} px is too large (2**32 px at most); use smaller "
                        "blocks, a smaller halo or fewer escalations")
    mask = level >= max(core_level, 0)
    comp, n = ndi.label(mask)
    pixels = np.flatnonzero(mask)
    ids = comp.ravel()[pixels]
    open_ = np.zeros(n + 1, dtype=bool)
    open_[_ring(comp)] = True
    open_[0] = False
    del comp, mask
    if min_core_px > 1 and n:
        keep = (np.bincount(ids, minlength=n + 1) >= min_core_px) | open_
        keep[0] = False
        if not keep[1:].all():
            lut = np.zeros(n + 1, dtype=np.int32)
            lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
            ids = lut[ids]
            inside = ids > 0
            pixels, ids = pixels[inside], ids[inside]
            open_ = np.concatenate([[False], open_[keep]])
            n = int(keep.sum())
    roots = np.zeros(n + 1, dtype=np.intp)
    if n:
        # key: level, then earlier pixel; the largest key of each core is its root
        key = level.ravel()[pixels].astype(np.int64) << 32
        key |= _LOW - pixels
        top = np.zeros(n + 1, dtype=np.int64)
        np.maximum.at(top, ids, key)
        roots[1:] = _LOW - (top[1:] & _LOW)
    return Cores(pixels, ids, roots, open_)
