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

from nclsm_scale.segment import kernels

__all__ = ["Cores", "find_cores"]


class Cores:
    """The cores of one level window, numbered ``1..n`` in raster order of their first pixel.

    The pixels are kept as runs (row, first and last-plus-one column) in raster
    order, with the core of each run (0 for a closed component below
    ``min_core_px``, which is not a core).

    Attributes
    ----------
    roots : (n + 1,) intp
        Window-flat index of each core's root (index 0 unused).
    open : (n + 1,) bool
        Cores that touch the window edge (their root may lie outside).
    boxes : (n + 1, 4) intp
        Bounding box ``(y0, x0, y1, x1)`` of each core in window pixels.
    """

    def __init__(self, shape: tuple[int, int], runs: tuple[np.ndarray, ...]) -> None:
        self.shape = shape
        (self._run_y, self._run_x0, self._run_x1, self._run_core, self._row_start,
         self.roots, self.open, self.boxes) = runs

    @property
    def n(self) -> int:
        """Number of cores."""
        return self.roots.size - 1

    def paint(self, out: np.ndarray, values: np.ndarray) -> None:
        """Set every pixel of core ``c`` in the window-shaped ``out`` to ``values[c]``."""
        kernels.paint_runs(self._run_y, self._run_x0, self._run_x1, self._run_core,
                           np.asarray(values, dtype=out.dtype), out)

    def at(self, y: int, x: int) -> int:
        """The core at window pixel ``(y, x)``, 0 if none."""
        lo, hi = self._row_start[y], self._row_start[y + 1]
        i = lo + int(np.searchsorted(self._run_x0[lo:hi], x, side="right")) - 1
        return int(self._run_core[i]) if i >= lo and x < self._run_x1[i] else 0


def find_cores(level: np.ndarray, core_level: int, min_core_px: int = 1) -> Cores:
    """Cores of a level window (``-1`` off foreground) whose level reaches ``core_level``.

    Closed components smaller than ``min_core_px`` are not cores; open ones are
    kept whatever their size, since they may continue outside the window.

    >>> lv = np.array([[0, 5, 5, 0, 7], [0, 6, 5, 0, 7]], np.int32)
    >>> c = find_cores(lv, 5)
    >>> c.roots[1:].tolist(), c.open[1:].tolist()
    ([6, 4], [True, True])
    """
    level = np.ascontiguousarray(level, dtype=np.int32)
    return Cores(level.shape, kernels.core_runs(level, int(core_level), int(min_core_px)))
