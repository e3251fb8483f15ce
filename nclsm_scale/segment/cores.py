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

__all__ = ["Cores", "find_cores"]


class Cores:
    """The cores of one level window.

    Attributes
    ----------
    comp : (h, w) int32
        Core component of each pixel, 0 outside cores.
    roots : (n + 1,) intp
        Window-flat index of each component's root (index 0 unused).
    open : (n + 1,) bool
        Components that touch the window edge (their root may lie outside).
    """

    def __init__(self, comp: np.ndarray, roots: np.ndarray, open_: np.ndarray) -> None:
        self.comp = comp
        self.roots = roots
        self.open = open_

    def closed_roots(self) -> np.ndarray:
        """Window-flat indices of the roots of closed cores."""
        return self.roots[1:][~self.open[1:]]


def find_cores(level: np.ndarray, core_level: int, min_core_px: int = 1) -> Cores:
    """Cores of a level window (``-1`` off foreground) whose level reaches ``core_level``.

    Closed components smaller than ``min_core_px`` are not cores (their pixels get
    component 0); open ones are kept whatever their size, since they may continue
    outside the window.

    >>> lv = np.array([[0, 5, 5, 0, 7], [0, 6, 5, 0, 7]], np.int32)
    >>> c = find_cores(lv, 5)
    >>> c.roots[1:].tolist(), c.open[1:].tolist()
    ([6, 4], [True, True])
    """
    comp, n = ndi.label(level >= max(core_level, 0))
    if min_core_px > 1 and n:
        edge = np.zeros(n + 1, dtype=bool)
        edge[np.concatenate([comp[0], comp[-1], comp[:, 0], comp[:, -1]])] = True
        keep = (np.bincount(comp.ravel(), minlength=n + 1) >= min_core_px) | edge
        keep[0] = False
        lut = np.zeros(n + 1, dtype=np.int32)
        lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
        comp, n = lut[comp], int(keep.sum())
    roots = np.zeros(n + 1, dtype=np.intp)
    if n:
        # the largest level of each component, then its earliest pixel at that level
        inside = np.flatnonzero(comp.ravel())
        cid = comp.ravel()[inside]
        top = np.full(n + 1, -1, dtype=np.int64)
        np.maximum.at(top, cid, level.ravel()[inside])
        top[0] = np.iinfo(np.int64).max  # background never matches
        flat = np.flatnonzero(level.ravel() == top[comp.ravel()])
        first = np.full(n + 1, level.size, dtype=np.intp)
        np.minimum.at(first, comp.ravel()[flat], flat)
        roots[1:] = first[1:]
    open_ = np.zeros(n + 1, dtype=bool)
    open_[np.concatenate([comp[0], comp[-1], comp[:, 0], comp[:, -1]])] = True
    open_[0] = False
    return Cores(comp.astype(np.int32, copy=False), roots, open_)
