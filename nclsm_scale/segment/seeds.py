"""Pass 1: fibre seeds, one per fibre core, with a global tie-break.

Every foreground pixel gets an integer **level**: its smoothed distance value,
quantised (int32; -1 off foreground and outside the plane). Pixels are ordered
by the **key** (level, then earlier global raster position ``y * width + x``), a
total order over the slide, so "the largest key" is always one well-defined
pixel whatever the array layout. A fibre's **core** is a connected region whose
level reaches ``min_seed_value`` (the distance map is 1 along a fibre's medial
axis); its **seed** is the core's pixel with the largest key
(:mod:`~nclsm_scale.segment.cores`). A core is found exactly by any window that
contains it, so pass 1 first reads the block's core plus a probe ring (a third
of the halo), follows the few cores still open there in small windows, and only
if one stays open reads the core plus its halo, escalating the halo while a core
whose root lies in the block's core is still open. Levels need the maps within
``smooth_radius_px``; pass 1 stores the levels of its core
(:mod:`~nclsm_scale.segment.levels`) so that pass 2 does not smooth again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from nclsm_scale.config import SegmentConfig
from nclsm_scale.errors import HaloViolationError
from nclsm_scale.filters import gaussian_weights
from nclsm_scale.grid import Block
from nclsm_scale.segment import kernels
from nclsm_scale.segment.cores import find_cores
from nclsm_scale.segment.maps import MapSource

logger = logging.getLogger(__name__)

__all__ = [
    "LEVEL_BITS",
    "SegmentParams",
    "block_seeds",
    "core_level",
    "seed_pass",
    "window_levels",
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


def window_levels(
    source: MapSource, params: SegmentParams, shape_yx: tuple[int, int],
    y0: int, x0: int, y1: int, x1: int,
) -> np.ndarray:
    """Exact int32 levels of the region ``[y0, y1) x [x0, x1)`` (maps read with the smoothing support).

    A level is ``clip(rint(v * 2**15), 0, 2**17 - 1)`` of the distance map smoothed by
    ``scipy.ndimage.gaussian_filter`` (``v``, float32 product; computed bit for bit
    by compiled loops, :mod:`~nclsm_scale.segment.kernels`) where the maps say
    foreground, -1 elsewhere and outside the plane.
    """
    s = params.smooth_radius_px
    maps = np.ascontiguousarray(source.maps(y0 - s, x0 - s, y1 + s, x1 + s), dtype=np.float32)
    h, w = y1 - y0, x1 - x0
    fg = maps[params.channel("foreground"), s : s + h, s : s + w]
    if "boundary" in params.channels:
        bd, bd_max = maps[params.channel("boundary"), s : s + h, s : s + w], params.boundary_threshold
    else:
        bd, bd_max = fg, np.inf
    dist = maps[params.channel("distance")]
    wts = gaussian_weights(params.smooth_sigma_px, _TRUNCATE) if s else np.ones(1)
    cols = np.empty((h, w + 2 * s), np.float32)
    kernels.correlate_rows(dist, wts, s, cols)  # axis 0 first, as gaussian_filter
    level = np.empty((h, w), np.int32)
    kernels.levels(cols, wts, fg, params.foreground_threshold, bd, bd_max, _LEVEL_SCALE,
                   (1 << LEVEL_BITS) - 1, y0, x0, *shape_yx, level)
    return level


def core_level(params: SegmentParams) -> int:
    """The quantised level at which a pixel belongs to a fibre core (``min_seed_value``)."""
    return int(np.rint(np.float32(params.min_seed_value) * np.float32(_LEVEL_SCALE)))


def _probe_seeds(
    source: MapSource, block: Block, params: SegmentParams, shape_yx: tuple[int, int],
    level: np.ndarray, probe: int, halo: int,
) -> np.ndarray | None:
    """Seeds of ``block`` from the levels of its core plus ``probe`` px, or None if undecided.

    Closed cores of the probe window are exact. A core that is open there but whose
    visible root lies in the block's core (its true root is then that pixel, or lies
    outside the probe window) is followed in a window of its visible bounding box
    grown by ``halo - probe``, cut to the core-plus-``halo`` window; if it is closed
    there, its root is exact too. None when such a core stays open: the caller then
    decides with the whole core-plus-``halo`` window.
    """
    width = shape_yx[1]
    cores = find_cores(level, core_level(params), params.min_core_px)
    w = level.shape[1]
    oy, ox = block.y0 - probe, block.x0 - probe
    ry, rx = np.divmod(cores.roots[1:], w)
    ry, rx = ry + oy, rx + ox  # global
    mine = (ry >= block.y0) & (ry < block.y1) & (rx >= block.x0) & (rx < block.x1)
    closed = mine & ~cores.open[1:]
    found = [ry[closed].astype(np.int64) * width + rx[closed]]
    pending = np.flatnonzero(mine & cores.open[1:]) + 1
    if pending.size:
        wy0, wx0, wy1, wx1 = block.window(halo)
        grow = halo - probe
        for c, (by0, bx0, by1, bx1) in zip(pending, cores.boxes[pending].tolist(), strict=True):
            y0, x0 = max(wy0, oy + by0 - grow), max(wx0, ox + bx0 - grow)
            y1, x1 = min(wy1, oy + by1 + grow), min(wx1, ox + bx1 + grow)
            around = find_cores(window_levels(source, params, shape_yx, y0, x0, y1, x1),
                                core_level(params), params.min_core_px)
            cid = around.at(ry[c - 1] - y0, rx[c - 1] - x0)  # the core of the visible root
            if not cid:
                continue  # a closed component below min_core_px: not a core
            if around.open[cid]:
                return None
            gy, gx = divmod(int(around.roots[cid]), x1 - x0)
            gy, gx = gy + y0, gx + x0
            if block.y0 <= gy < block.y1 and block.x0 <= gx < block.x1:
                found.append(np.array([gy * width + gx], dtype=np.int64))
    return np.unique(np.concatenate(found))


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
    whose root lies in the core. Levels are computed first for the core plus a
    probe ring of a third of ``halo_px`` (:func:`_probe_seeds`), which closes most
    cores; only if a core whose root may lie in the block's core is still open
    there is the whole window used: the core plus ``halo_px`` (plus the smoothing
    support, so its levels are exact). While a core whose local root lies in the
    block's core touches that window's edge, the halo is doubled, up to
    ``escalation_limit`` times. Every route gives the same seeds.

    Raises
    ------
    HaloViolationError
        If a core is still open after the last escalation.
    """
    bh, bw = block.shape
    halo = max(int(halo_px), 1)
    probe = halo // 3
    if probe > 0:
        level = window_levels(source, params, shape_yx, *block.window(probe))
        seeds = _probe_seeds(source, block, params, shape_yx, level, probe, halo)
        if seeds is not None:
            return np.ascontiguousarray(level[probe : probe + bh, probe : probe + bw]), seeds
        del level
    for attempt in range(escalation_limit + 1):
        level = window_levels(source, params, shape_yx, *block.window(halo))
        cores = find_cores(level, core_level(params), params.min_core_px)
        ry, rx = np.divmod(cores.roots[1:], level.shape[1])
        mine = (ry >= halo) & (ry < halo + bh) & (rx >= halo) & (rx < halo + bw)
        stuck = mine & cores.open[1:]
        if not stuck.any():
            break
        if attempt == escalation_limit:
            y, x = block.y0 + ry[stuck][0] - halo, block.x0 + rx[stuck][0] - halo
            um = params.pixel_size_um
            raise HaloViolationError(
                f"a fibre core near (y, x) = ({y * um:.0f}, {x * um:.0f}) um at the segmentation "
                f"level is larger than the largest admissible window (halo {halo} px after "
                f"{escalation_limit} escalation(s)). Raise grid.max_fibre_diameter_um or "
                "grid.escalation_limit if such fibres are real, or check the maps there."
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
