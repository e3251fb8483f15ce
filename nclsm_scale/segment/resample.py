"""Virtual planes: a slide level coarser than the segmentation pixel size, resampled exactly.

A slide whose best level is much coarser than ``segment.target_pixel_size_um``
(an overview scan at 2-4 um/px, a published figure) would be segmented at its own
resolution, where fibres are ~14 px across and the network merges and misses them.
Instead the network reads a **virtual plane**: the level resampled by the factor
``f = level pixel size / target`` (not necessarily an integer), on a lattice of its
own anchored at the slide origin. Seeds and assignment run on that plane (blocks and
halos in virtual pixels, so every physical size stays physical), and the labels are
sampled back to the level (:meth:`VirtualPlane.centres`).

Geometry: the plane has ``ceil(n * f)`` pixels along an axis of ``n`` level pixels
(it covers the level and at most one virtual pixel beyond). Pixel centres map
consistently: virtual pixel ``V`` sits at level coordinate ``(V + 0.5) / f - 0.5``
(pixel units, centres at integers), and level pixel ``c`` takes the virtual pixel
that holds its centre, ``floor((c + 0.5) * f)``.

Exactness: each virtual pixel is a fixed per-pixel function of a fixed 4 x 4
neighbourhood of level pixels (the Keys cubic-convolution kernel, ``a = -0.5``,
computed explicitly and separably: along x for each level row, then along y, in
float32, always in the same order), so any window of the plane equals the same crop
of the whole plane bit for bit. Tap weights depend only on the virtual index and
``f``; taps beyond the level's edge take the edge pixel (clamped indices). A spline
(``map_coordinates(order=3)``) would prefilter the whole input patch and break
this. The kernel's name is part of :attr:`VirtualPlane.record`, which enters the
resume fingerprint and the completion marker.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["KERNEL", "VirtualPlane"]

#: Name of the interpolation kernel (recorded with every virtual segmentation).
KERNEL = "keys-cubic-0.5"
_A = -0.5  # Keys' parameter: the cubic convolution that interpolates exactly up to quadratics
_TAPS = 4
#: Tolerance of the plane size against floating error in ``n * f`` (a size of 360.0000000001 is 360).
_SIZE_EPS = 1e-6


def _keys(d: np.ndarray) -> np.ndarray:
    """Keys' cubic-convolution weight of distances ``d`` (float64, ``0 <= d < 2``)."""
    near = ((_A + 2.0) * d - (_A + 3.0)) * d * d + 1.0
    far = ((_A * d - 5.0 * _A) * d + 8.0 * _A) * d - 4.0 * _A
    return np.where(d <= 1.0, near, far)


@dataclass(frozen=True)
class VirtualPlane:
    """A level of ``source_shape`` pixels resampled by ``factor`` (> 1: finer pixels).

    Parameters
    ----------
    source_shape : (int, int)
        Size ``(y, x)`` of the slide level the plane resamples.
    factor : float
        Level pixel size over the virtual pixel size.
    """

    source_shape: tuple[int, int]
    factor: float

    @property
    def shape(self) -> tuple[int, int]:
        """Size ``(y, x)`` of the virtual plane: ``ceil(n * factor)`` per axis."""
        ny, nx = self.source_shape
        return (math.ceil(ny * self.factor - _SIZE_EPS), math.ceil(nx * self.factor - _SIZE_EPS))

    @property
    def record(self) -> dict[str, Any]:
        """What the plane is, for fingerprints and markers (JSON-ready)."""
        return {"factor": self.factor, "kernel": KERNEL, "source_shape": list(self.source_shape),
                "shape": list(self.shape)}

    def taps(self, start: int, stop: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Taps of virtual pixels ``start..stop-1`` along an axis of ``size`` level pixels.

        Returns level indices ``(n, 4)`` int64, clamped to ``[0, size)``, and their
        float32 weights; both depend only on the virtual index and the factor.
        """
        s = (np.arange(start, stop, dtype=np.float64) + 0.5) / self.factor - 0.5
        first = np.floor(s)
        t = (s - first)[:, None]
        offsets = np.arange(-1, _TAPS - 1, dtype=np.float64)[None, :]
        weights = _keys(np.abs(offsets - t)).astype(np.float32)
        index = np.clip(first.astype(np.int64)[:, None] + offsets.astype(np.int64), 0, size - 1)
        return index, weights

    def resample(self, read: Callable[[int, int, int, int], np.ndarray], y0: int, x0: int, y1: int,
                 x1: int) -> np.ndarray:
        """Virtual pixels ``[y0:y1, x0:x1]`` (inside the plane) as ``(c, h, w)`` float32.

        ``read(y0, x0, y1, x1)`` returns the level's ``(c, h, w)`` float32 pixels of a
        region inside the level; only the rows and columns the taps need are read.
        """
        ny, nx = self.source_shape
        iy, wy = self.taps(y0, y1, ny)
        ix, wx = self.taps(x0, x1, nx)
        ry0, rx0 = int(iy.min()), int(ix.min())
        src = np.asarray(read(ry0, rx0, int(iy.max()) + 1, int(ix.max()) + 1), dtype=np.float32)
        ix -= rx0
        rows = src[:, :, ix[:, 0]] * wx[:, 0]
        for k in range(1, _TAPS):
            rows += src[:, :, ix[:, k]] * wx[:, k]
        iy -= ry0
        out = rows[:, iy[:, 0], :] * wy[:, 0, None]
        for k in range(1, _TAPS):
            out += rows[:, iy[:, k], :] * wy[:, k, None]
        return out

    def centres(self, start: int, stop: int) -> np.ndarray:
        """Virtual index holding the centre of each level pixel ``start..stop-1``: ``floor((c + 0.5) * f)``."""
        return np.floor((np.arange(start, stop, dtype=np.float64) + 0.5) * self.factor).astype(np.int64)
