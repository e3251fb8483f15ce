"""Pass 1: fibre seeds, one per fibre core, with a global tie-break.

Every foreground pixel gets an integer **level**: its smoothed distance value,
quantised (int32; -1 off foreground and outside the plane). Pixels are ordered
by the **key** (level, then earlier global raster position ``y * width + x``), a
total order over the slide, so "the largest key" is always one well-defined
pixel whatever the array layout. A fibre's **core** is a connected region whose
level reaches ``min_seed_value`` (the distance map is 1 along a fibre's medial
axis); its **seed** is the core's pixel with the largest key
(:mod:`~nclsm_scale.segment.cores`). A core is found exactly by any window that
contains it, so pass 1 reads the block's core plus its halo and escalates the
halo while a core whose root lies in the block's core is still open. Levels need
the maps within ``smooth_radius_px``; pass 1 stores the levels of its core
(:mod:`~nclsm_scale.segment.levels`) so that pass 2 does not smooth again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from nclsm_scale.config import SegmentConfig
from nclsm_scale.errors import HaloViolationError
from nclsm_scale.segment.cores import find_cores
from nclsm_scale.segment.grid import Block
from nclsm_scale.segment.maps import MapSource

logger = logging.getLogger(__name__)

__all__ = [
    "LEVEL_BITS",
    "SegmentParams",
    "block_seeds",
    "core_level",
    "score_levels",
    "seed_pass",
    "smoothed_scores",
]

LEVEL_BITS = 17
_LEVEL_SCALE = float(1 << (LEVEL_BITS - 2))  # values in [0, 4) keep full resolution
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
    min_core_px: int = 1

    @property
    def smooth_radius_px(self) -> int:
        """Support radius of the smoothing (as ``scipy.ndimage.gaussian_filter``)."""
        return int(_TRUNCATE * self.smooth_sigma_px + 0.5) if self.smooth_sigma_px > 0 else 0

    @property
    def margin_px(self) -> int:
        """Border of a map window in which levels and seeds are not exact."""
        return self.smooth_radius_px + max(self.seed_radius_px, 1)

    @property
    def ascent_margin_px(self) -> int:
        """Border of a level window in which ascent parents are not exact."""
        return max(self.seed_radius_px, 1)

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
            min_core_px=max(1, round(cfg.min_core_area_um2 / pixel_size_um**2)),
        )

    def channel(self, name: str) -> int:
        """Index of a named map channel."""
        if name not in self.channels:
            raise ValueError(f"map channel {name!r} missing; the maps have {list(self.channels)}")
        return self.channels.index(name)


def smoothed_scores(maps: np.ndarray, params: SegmentParams) -> tuple[np.ndarray, np.ndarray]:
    """Foreground mask and smoothed distance (float32) of a ``(K, h, w)`` map window."""
    fg = maps[params.channel("foreground")] > params.foreground_threshold
    if "boundary" in params.channels:
        fg &= maps[params.channel("boundary")] <= params.boundary_threshold
    dist = np.asarray(maps[params.channel("distance")], dtype=np.float32)
    if params.smooth_sigma_px > 0:
        dist = ndi.gaussian_filter(
            dist, params.smooth_sigma_px, mode="constant", cval=0.0, truncate=_TRUNCATE
        )
    return fg, dist


def score_levels(
    value: np.ndarray, fg: np.ndarray, y0: int, x0: int, shape_yx: tuple[int, int]
) -> np.ndarray:
    """int32 quantised levels of a window at ``(y0, x0)`` of a plane of ``shape_yx``.

    -1 off foreground and outside the plane.
    """
    h, w = value.shape
    q = np.multiply(value, np.float32(_LEVEL_SCALE), dtype=np.float32)
    np.rint(q, out=q)
    np.clip(q, 0, (1 << LEVEL_BITS) - 1, out=q)
    level = q.astype(np.int32)
    level[~fg] = -1
    height, width = shape_yx
    level[: max(0, min(h, -y0)), :] = -1
    level[max(0, min(h, height - y0)) :, :] = -1
    level[:, : max(0, min(w, -x0))] = -1
    level[:, max(0, min(w, width - x0)) :] = -1
    return level


def core_level(params: SegmentParams) -> int:
    """The quantised level at which a pixel belongs to a fibre core (``min_seed_value``)."""
    return int(np.rint(np.float32(params.min_seed_value) * np.float32(_LEVEL_SCALE)))


def seed_pass(
    source: MapSource,
    block: Block,
    params: SegmentParams,
    shape_yx: tuple[int, int],
    *,
    halo_px: int,
    escalation_limit: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Pass 1 of ``block``: int32 levels of its core, sorted global indices of its seeds.

    The seeds are the roots of the closed cores (:mod:`~nclsm_scale.segment.cores`)
    whose root lies in the core. The window is the core plus ``halo_px`` (plus the
    smoothing support, so its levels are exact); while a core whose local root lies
    in the block's core touches the window's edge, the halo is doubled, up to
    ``escalation_limit`` times.

    Raises
    ------
    HaloViolationError
        If a core is still open after the last escalation.
    """
    s = params.smooth_radius_px
    bh, bw = block.shape
    halo = max(int(halo_px), 1)
    for attempt in range(escalation_limit + 1):
        y0, x0, y1, x1 = block.window(halo + s)
        fg, value = smoothed_scores(source.maps(y0, x0, y1, x1), params)
        level = score_levels(value, fg, y0, x0, shape_yx)
        level = level[s : level.shape[0] - s, s : level.shape[1] - s]  # exact part: core + halo
        cores = find_cores(level, core_level(params), params.min_core_px)
        ry, rx = np.divmod(cores.roots[1:], level.shape[1])
        mine = (ry >= halo) & (ry < halo + bh) & (rx >= halo) & (rx < halo + bw)
        if not (mine & cores.open[1:]).any():
            break
        if attempt == escalation_limit:
            y, x = block.y0 + ry[mine][0] - halo, block.x0 + rx[mine][0] - halo
            um = params.pixel_size_um
            raise HaloViolationError(
                f"a fibre core near (y, x) = ({y * um:.0f}, {x * um:.0f}) um at the segmentation "
                f"level is larger than the largest admissible window (halo {halo} px after "
                f"{escalation_limit} escalation(s)). Raise segment.max_fibre_diameter_um or "
                "segment.escalation_limit if such fibres are real, or check the maps there."
            )
        logger.info("block %s: a fibre core reaches the window edge with halo %d px; escalating",
                    (block.by, block.bx), halo)
        halo *= 2
    keep = mine & ~cores.open[1:]
    seeds = (ry[keep] - halo + block.y0).astype(np.int64) * shape_yx[1] + (rx[keep] - halo + block.x0)
    core = np.ascontiguousarray(level[halo : halo + bh, halo : halo + bw])
    return core, np.sort(seeds)


def block_seeds(
    source: MapSource, block: Block, params: SegmentParams, shape_yx: tuple[int, int], halo_px: int
) -> np.ndarray:
    """Sorted global linear indices of the seeds inside ``block``'s core (the block owns them)."""
    return seed_pass(source, block, params, shape_yx, halo_px=halo_px)[1]
