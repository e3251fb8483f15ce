"""Block geometry: cores, windows and ownership on the segmentation level.

A :class:`BlockGrid` splits a ``(y, x)`` plane into rectangular **cores** with
half-open intervals. Core edges lie at ``offset + k * block_px`` (plus the
plane's own edges), so every pixel has exactly one owner block. A block's
**window** is its core grown by a margin on every side; windows may extend past
the plane, where map sources return zeros. :func:`lowres_window` maps a coarser
level (a region mask) onto a window of a finer one, independently of the cut.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nclsm_scale.errors import GridError

__all__ = ["Block", "BlockGrid", "lowres_indices", "lowres_window"]


@dataclass(frozen=True)
class Block:
    """One core of a grid: index ``(by, bx)`` and half-open pixel bounds."""

    by: int
    bx: int
    y0: int
    x0: int
    y1: int
    x1: int

    @property
    def shape(self) -> tuple[int, int]:
        """Core shape ``(h, w)`` in pixels."""
        return self.y1 - self.y0, self.x1 - self.x0

    def window(self, margin_px: int) -> tuple[int, int, int, int]:
        """Core grown by ``margin_px`` on every side: ``(y0, x0, y1, x1)``."""
        m = int(margin_px)
        return self.y0 - m, self.x0 - m, self.y1 + m, self.x1 + m


def _edges(size: int, block_px: int, offset: int) -> np.ndarray:
    start = offset if offset > 0 else block_px
    inner = np.arange(start, size, block_px, dtype=np.int64)
    return np.unique(np.concatenate([[0], inner, [size]]))


@dataclass(frozen=True)
class BlockGrid:
    """Cores of ``block_px`` over a plane of ``shape_yx``, edges shifted by ``offset_yx``.

    Parameters
    ----------
    shape_yx : tuple of int
        Plane size in pixels.
    block_px : int
        Core edge length; cores at the plane edge or next to the offset are smaller.
    offset_yx : tuple of int
        Position of the first inner core edge on each axis, in ``[0, block_px)``;
        0 puts edges at multiples of ``block_px``.
    """

    shape_yx: tuple[int, int]
    block_px: int
    offset_yx: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        if min(self.shape_yx) < 1:
            raise GridError(f"cannot lay a block grid over an empty plane of shape {self.shape_yx}")
        if self.block_px < 1:
            raise GridError(f"block size must be at least 1 px, got {self.block_px}")
        if any(not 0 <= o < self.block_px for o in self.offset_yx):
            raise GridError(
                f"grid offset {self.offset_yx} must lie in [0, block_px={self.block_px}) on each axis"
            )

    @property
    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """Core edges on y and x (first 0, last the plane size)."""
        return (
            _edges(self.shape_yx[0], self.block_px, self.offset_yx[0]),
            _edges(self.shape_yx[1], self.block_px, self.offset_yx[1]),
        )

    @property
    def n_blocks_yx(self) -> tuple[int, int]:
        """Number of cores along y and x."""
        ey, ex = self.edges
        return len(ey) - 1, len(ex) - 1

    def block(self, by: int, bx: int) -> Block:
        """The block with index ``(by, bx)``."""
        ey, ex = self.edges
        return Block(by, bx, int(ey[by]), int(ex[bx]), int(ey[by + 1]), int(ex[bx + 1]))

    def blocks(self) -> list[Block]:
        """All blocks in raster order."""
        ny, nx = self.n_blocks_yx
        return [self.block(by, bx) for by in range(ny) for bx in range(nx)]

    def owner(self, y: np.ndarray | int, x: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        """Index ``(by, bx)`` of the block whose core holds pixel ``(y, x)``."""
        ey, ex = self.edges
        by = np.searchsorted(ey, np.asarray(y), side="right") - 1
        bx = np.searchsorted(ex, np.asarray(x), side="right") - 1
        return by, bx


def lowres_indices(start: int, stop: int, scale: float, size: int) -> np.ndarray:
    """Coarse-level index of each fine pixel ``start..stop-1``: the coarse pixel holding its centre.

    ``scale`` is the coarse pixel size in fine pixels; indices are clipped to the
    coarse level's ``size`` (outside it, the nearest edge pixel).
    """
    return np.clip(((np.arange(start, stop) + 0.5) / scale).astype(np.int64), 0, size - 1)


def lowres_window(
    lowres: np.ndarray, scale: float, origin_yx: tuple[int, int], shape_yx: tuple[int, int]
) -> np.ndarray:
    """Nearest-neighbour view of a coarse ``(y, x)`` array on a fine window at ``origin_yx`` of ``shape_yx``.

    Each fine pixel takes the coarse pixel containing its centre, so a window's
    values never depend on where it is cut.
    """
    (oy, ox), (h, w) = origin_yx, shape_yx
    ly = lowres_indices(oy, oy + h, scale, lowres.shape[0])
    lx = lowres_indices(ox, ox + w, scale, lowres.shape[1])
    return np.asarray(lowres)[ly[:, None], lx[None, :]]
