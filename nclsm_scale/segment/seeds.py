"""Pass 1: fibre seeds with bounded support and a global tie-break.

Every foreground pixel gets an integer **key**: its smoothed distance value,
quantised, in the high bits and the complement of its global linear index
``y * width + x`` in the low bits. Keys are unique over the slide, so "the
largest key" is always one well-defined pixel (ties go to the smaller global
position) whatever the array layout. A **seed** is a foreground pixel whose
value reaches ``min_seed_value`` and whose key is the largest within the square
of radius ``seed_radius_px`` around it. Keys need the maps within
``smooth_radius_px`` and seeds the keys within ``seed_radius_px``, so both are
exact in a window shrunk by :attr:`SegmentParams.margin_px`.

Keys stay below 2**53 so that ``scipy.ndimage`` filters, which compute in
double precision, handle them exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from nclsm_scale.config import SegmentConfig
from nclsm_scale.segment.grid import Block
from nclsm_scale.segment.maps import MapSource

__all__ = [
    "INDEX_BITS",
    "SegmentParams",
    "block_seeds",
    "decode_index",
    "pixel_keys",
    "seed_mask",
    "smoothed_scores",
]

INDEX_BITS = 36
VALUE_BITS = 17
_INDEX_MASK = (1 << INDEX_BITS) - 1
_VALUE_SCALE = float(1 << (VALUE_BITS - 2))  # values in [0, 4) keep full resolution
_TRUNCATE = 4.0


@dataclass(frozen=True)
class SegmentParams:
    """Segmentation parameters in pixels and map units (see ``SegmentConfig``)."""

    pixel_size_um: float
    smooth_sigma_px: float
    seed_radius_px: int
    min_seed_value: float
    foreground_threshold: float
    boundary_threshold: float
    channels: tuple[str, ...] = ("foreground", "boundary", "distance")

    @property
    def smooth_radius_px(self) -> int:
        """Support radius of the smoothing (as ``scipy.ndimage.gaussian_filter``)."""
        return int(_TRUNCATE * self.smooth_sigma_px + 0.5) if self.smooth_sigma_px > 0 else 0

    @property
    def margin_px(self) -> int:
        """Border of a window in which keys, seeds and ascent parents are not exact."""
        return self.smooth_radius_px + max(self.seed_radius_px, 1)

    @classmethod
    def from_config(
        cls, cfg: SegmentConfig, pixel_size_um: float, channels: tuple[str, ...]
    ) -> SegmentParams:
        """Parameters at a level of ``pixel_size_um`` from the config's micrometre values."""
        return cls(
            pixel_size_um=float(pixel_size_um),
            smooth_sigma_px=cfg.smooth_sigma_um / pixel_size_um,
            seed_radius_px=max(1, round(cfg.seed_radius_um / pixel_size_um)),
            min_seed_value=cfg.min_seed_value,
            foreground_threshold=cfg.foreground_threshold,
            boundary_threshold=cfg.boundary_threshold,
            channels=tuple(channels),
        )

    def channel(self, name: str) -> int:
        """Index of a named map channel."""
        if name not in self.channels:
            raise ValueError(f"map channel {name!r} missing; the maps have {list(self.channels)}")
        return self.channels.index(name)


def smoothed_scores(maps: np.ndarray, params: SegmentParams) -> tuple[np.ndarray, np.ndarray]:
    """Foreground mask and smoothed distance of a ``(K, h, w)`` map window."""
    fg = maps[params.channel("foreground")] > params.foreground_threshold
    if "boundary" in params.channels:
        fg &= maps[params.channel("boundary")] <= params.boundary_threshold
    dist = maps[params.channel("distance")].astype(np.float32)
    if params.smooth_sigma_px > 0:
        dist = ndi.gaussian_filter(
            dist, params.smooth_sigma_px, mode="constant", cval=0.0, truncate=_TRUNCATE
        )
    return fg, dist


def pixel_keys(
    value: np.ndarray,
    fg: np.ndarray,
    y0: int,
    x0: int,
    shape_yx: tuple[int, int],
) -> np.ndarray:
    """Unique int64 keys of a window at ``(y0, x0)`` of a plane of ``shape_yx``; -1 off foreground."""
    h, w = value.shape
    height, width = shape_yx
    if height * width > _INDEX_MASK:
        raise ValueError(f"plane {shape_yx} too large for {INDEX_BITS}-bit pixel indices")
    q = np.clip(np.rint(value.astype(np.float64) * _VALUE_SCALE), 0, (1 << VALUE_BITS) - 1)
    yy = np.arange(y0, y0 + h, dtype=np.int64)[:, None]
    xx = np.arange(x0, x0 + w, dtype=np.int64)[None, :]
    inside = (yy >= 0) & (yy < height) & (xx >= 0) & (xx < width)
    key = (q.astype(np.int64) << INDEX_BITS) | (_INDEX_MASK - (yy * width + xx))
    return np.where(fg & inside, key, np.int64(-1))


def decode_index(key: np.ndarray) -> np.ndarray:
    """Global linear index encoded in keys (meaningless where key < 0)."""
    return _INDEX_MASK - (key & _INDEX_MASK)


def seed_mask(key: np.ndarray, value: np.ndarray, params: SegmentParams) -> tuple[np.ndarray, np.ndarray]:
    """Seed mask and the square-window maximum of the keys (reused by the assignment)."""
    size = 2 * max(params.seed_radius_px, 1) + 1
    kmax = ndi.maximum_filter(key, size=size, mode="constant", cval=-1)
    seeds = (key >= 0) & (key == kmax) & (value >= params.min_seed_value)
    return seeds, kmax


def block_seeds(
    source: MapSource, block: Block, params: SegmentParams, shape_yx: tuple[int, int]
) -> np.ndarray:
    """Sorted global linear indices of the seeds inside ``block``'s core (the block owns them)."""
    m = params.margin_px
    y0, x0, y1, x1 = block.window(m)
    fg, value = smoothed_scores(source.maps(y0, x0, y1, x1), params)
    key = pixel_keys(value, fg, y0, x0, shape_yx)
    seeds, _ = seed_mask(key, value, params)
    core = seeds[m : m + block.shape[0], m : m + block.shape[1]]
    return np.sort(decode_index(key[m : m + block.shape[0], m : m + block.shape[1]][core]))
