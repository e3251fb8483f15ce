"""Level planes: pass 1's quantised smoothed distance, stored once and read by pass 2.

Pass 1 computes the int32 levels of each core (see :mod:`~nclsm_scale.segment.seeds`)
from a window that holds the smoothing support, so each stored value is exact; pass 2
reads windows of them (-1 outside the plane) instead of smoothing the maps again.
:class:`ArrayLevels` holds a plane in memory, :class:`StoredLevels` in a zarr array
whose chunks are the block cores (one writer per chunk).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import zarr

__all__ = ["ArrayLevels", "StoredLevels", "read_levels"]


def read_levels(array: object, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    """Read ``array[y0:y1, x0:x1]`` as int32, -1 outside it."""
    ny, nx = tuple(array.shape)  # type: ignore[attr-defined]
    out = np.full((y1 - y0, x1 - x0), -1, dtype=np.int32)
    sy0, sx0, sy1, sx1 = max(y0, 0), max(x0, 0), min(y1, ny), min(x1, nx)
    if sy0 < sy1 and sx0 < sx1:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = array[sy0:sy1, sx0:sx1]  # type: ignore[index]
    return out


class ArrayLevels:
    """A level plane in memory (``-1`` until written)."""

    def __init__(self, shape_yx: tuple[int, int]) -> None:
        self.shape_yx = (int(shape_yx[0]), int(shape_yx[1]))
        self.array = np.full(self.shape_yx, -1, dtype=np.int32)

    def write(self, y0: int, x0: int, core: np.ndarray) -> None:
        """Store the levels of a core at ``(y0, x0)``."""
        self.array[y0 : y0 + core.shape[0], x0 : x0 + core.shape[1]] = core

    def levels(self, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """Levels of the half-open region, -1 outside the plane."""
        return read_levels(self.array, y0, x0, y1, x1)


class StoredLevels:
    """A level plane in a zarr array at ``path``; only the path travels with the object."""

    def __init__(self, path: str) -> None:
        self.path = str(path)
        self._array: zarr.Array | None = None

    @classmethod
    def create(cls, path: str, shape_yx: tuple[int, int], chunk_px: int) -> StoredLevels:
        """Make an empty ``(y, x)`` int32 array (fill -1) with chunks of ``chunk_px``."""
        import zarr

        zarr.create_array(path, shape=shape_yx, chunks=(chunk_px, chunk_px), dtype="int32",
                          fill_value=-1, overwrite=True)
        return cls(path)

    def __getstate__(self) -> dict[str, object]:
        return {"path": self.path, "_array": None}

    def write(self, y0: int, x0: int, core: np.ndarray) -> None:
        """Store the levels of a core at ``(y0, x0)`` (whole chunks, or up to the plane's edge)."""
        import zarr

        arr = zarr.open_array(self.path, mode="r+")
        arr[y0 : y0 + core.shape[0], x0 : x0 + core.shape[1]] = core

    def levels(self, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """Levels of the half-open region, -1 outside the plane."""
        if self._array is None:
            import zarr

            self._array = zarr.open_array(self.path, mode="r")
        return read_levels(self._array, y0, x0, y1, x1)
