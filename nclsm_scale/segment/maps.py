"""Map sources: where the dense fibre maps of a region come from.

A map source is a small picklable object with ``channels``, ``shape_yx`` and
``maps(y0, x0, y1, x1) -> (K, h, w) float32``. The value of any pixel must not
depend on the requested region (zeros outside the plane); the stitching is exact
only under that contract. :class:`ArrayMaps` holds maps in memory,
:class:`StoredMaps` reads a zarr array. :func:`maps_from_labels` turns an
instance mask (ground truth or a real annotation) into realistic maps, which
tests and benchmarks use to exercise stitching without the network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    import zarr
from scipy import ndimage as ndi

__all__ = [
    "DEFAULT_CHANNELS",
    "ArrayMaps",
    "MapSource",
    "StoredMaps",
    "maps_from_labels",
    "read_padded",
    "write_maps",
]

#: Channel names of maps, in order, when a store does not name them.
DEFAULT_CHANNELS: tuple[str, ...] = ("foreground", "boundary", "distance")


class MapSource(Protocol):
    """Anything that yields region-independent ``(K, h, w)`` float32 maps."""

    channels: tuple[str, ...]
    shape_yx: tuple[int, int]

    def maps(self, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """Maps of the half-open region; zeros outside the plane."""
        ...


def read_padded(array: object, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    """Read ``array[..., y0:y1, x0:x1]`` as float32, zero outside its last two axes."""
    shape = tuple(array.shape)  # type: ignore[attr-defined]
    lead, (ny, nx) = shape[:-2], shape[-2:]
    out = np.zeros(lead + (y1 - y0, x1 - x0), dtype=np.float32)
    sy0, sx0, sy1, sx1 = max(y0, 0), max(x0, 0), min(y1, ny), min(x1, nx)
    if sy0 < sy1 and sx0 < sx1:
        part = array[..., sy0:sy1, sx0:sx1]  # type: ignore[index]
        out[..., sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = np.asarray(part, dtype=np.float32)
    return out


class ArrayMaps:
    """Maps held in memory as a ``(K, y, x)`` array."""

    def __init__(self, maps: np.ndarray, channels: tuple[str, ...] = DEFAULT_CHANNELS) -> None:
        if maps.ndim != 3 or maps.shape[0] != len(channels):
            raise ValueError(f"maps must be (K={len(channels)}, y, x), got shape {maps.shape}")
        self.array = maps
        self.channels = tuple(channels)
        self.shape_yx = (int(maps.shape[1]), int(maps.shape[2]))

    def maps(self, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """Maps of the region, zero-padded."""
        return read_padded(self.array, y0, x0, y1, x1)


class StoredMaps:
    """Maps read from a ``(K, y, x)`` zarr array; the array's ``channels`` attribute names them.

    Only the path travels with the object (it pickles to a few bytes); the array
    is opened on first use in each process.
    """

    def __init__(self, path: str) -> None:
        import zarr

        from nclsm_scale.errors import SlideReadError

        self.path = str(path)
        try:
            arr = zarr.open_array(self.path, mode="r")
        except (FileNotFoundError, ValueError, KeyError) as exc:
            raise SlideReadError(
                f"cannot open stored maps {self.path}: expected a (K, y, x) zarr array ({exc})"
            ) from None
        if arr.ndim != 3:
            raise SlideReadError(f"stored maps {self.path} must be (K, y, x), found shape {arr.shape}")
        named: list[str] = list(arr.attrs.asdict().get("channels") or DEFAULT_CHANNELS[: arr.shape[0]])  # type: ignore[arg-type]
        self.channels: tuple[str, ...] = tuple(str(c) for c in named)
        if len(self.channels) != arr.shape[0]:
            raise SlideReadError(
                f"stored maps {self.path}: {arr.shape[0]} channels but names {list(self.channels)}"
            )
        self.shape_yx = (int(arr.shape[1]), int(arr.shape[2]))
        self._array: zarr.Array | None = arr

    def __getstate__(self) -> dict[str, object]:
        return {"path": self.path, "channels": self.channels, "shape_yx": self.shape_yx}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._array = None

    def maps(self, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """Maps of the region read straight from the store, zero-padded."""
        if self._array is None:
            import zarr

            self._array = zarr.open_array(self.path, mode="r")
        return read_padded(self._array, y0, x0, y1, x1)


def write_maps(
    path: str,
    maps: np.ndarray,
    chunk_px: int = 1024,
    channels: tuple[str, ...] = DEFAULT_CHANNELS,
    dtype: str = "float32",
) -> StoredMaps:
    """Store ``(K, y, x)`` maps as a zarr array with named channels; return its source."""
    import zarr

    arr = zarr.create_array(
        path,
        shape=maps.shape,
        chunks=(maps.shape[0], chunk_px, chunk_px),
        dtype=dtype,
        overwrite=True,
    )
    arr[...] = maps.astype(dtype)
    arr.attrs["channels"] = list(channels)
    return StoredMaps(path)


def maps_from_labels(
    labels: np.ndarray,
    seed: int = 0,
    noise: float = 0.05,
    blur_px: float = 1.0,
    holes: int = 0,
) -> np.ndarray:
    """Realistic ``(foreground, boundary, distance)`` maps from an instance mask.

    The distance channel is each fibre's distance to its own boundary divided by
    the fibre's largest distance (1 at the centre), like the network's output.
    Perturbations imitate a network: Gaussian blur of ``blur_px``, additive
    noise of standard deviation ``noise`` and ``holes`` random dropouts of the
    foreground (radius 2-6 px).

    Parameters
    ----------
    labels : (y, x) integer array
        Instance mask, 0 = background.
    seed : int
        Random seed of the perturbation.

    Returns
    -------
    (3, y, x) float32 array with values in [0, 1].
    """
    labels = np.asarray(labels)
    fg = labels > 0
    edge = np.zeros_like(fg)
    for axis in (0, 1):
        diff = np.diff(labels, axis=axis) != 0
        lo = [slice(None)] * 2
        hi = [slice(None)] * 2
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        edge[tuple(lo)] |= diff
        edge[tuple(hi)] |= diff
    interior = fg & ~edge
    dist = ndi.distance_transform_edt(interior).astype(np.float32)
    peak = ndi.maximum(dist, labels, index=np.arange(labels.max() + 1))
    peak = np.asarray(peak, dtype=np.float32)
    peak[peak == 0] = 1.0
    dist = dist / peak[labels]
    maps = np.stack([fg.astype(np.float32), (edge & fg).astype(np.float32), dist])
    rng = np.random.default_rng(seed)
    if holes:
        yy, xx = np.ogrid[: labels.shape[0], : labels.shape[1]]
        for cy, cx, r in zip(
            rng.integers(0, labels.shape[0], holes),
            rng.integers(0, labels.shape[1], holes),
            rng.integers(2, 7, holes),
            strict=True,
        ):
            hole = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            maps[0][hole] = 0.0
    if blur_px > 0:
        maps = ndi.gaussian_filter(maps, (0, blur_px, blur_px))
    if noise > 0:
        maps = maps + rng.normal(0.0, noise, maps.shape).astype(np.float32)
    return np.clip(maps, 0.0, 1.0).astype(np.float32)
