"""Pass 2: seeded assignment by steepest ascent, certified exact per pixel.

Every foreground pixel points to a **parent**: the pixel with the largest key
(see :mod:`nclsm_scale.segment.seeds`) in its 3 x 3 neighbourhood. A pixel that is
its own parent is a local maximum: a seed is a root; any other local maximum
points to the largest key within the seed radius (which exists, since it is not
a seed), or to background if it is itself that maximum but too shallow to be a
seed. Keys strictly increase along parent chains, so every chain ends at a seed
or at background; the pixel takes that seed's global ID.

Parents depend only on the maps within :attr:`SegmentParams.margin_px` of a pixel
and on global coordinates, never on the array layout, so they are exact inside
the window shrunk by that margin (the *valid* region). Parents of pixels outside
it are set to "unknown"; a pixel whose chain reaches "unknown" is uncertain. A
block's labels are therefore exactly those of a whole-slide run wherever they are
certain, and a block is accepted only if all its core pixels are certain and no
fibre it owns touches the edge of its valid region. Otherwise the halo is doubled
(escalation), up to a limit, after which :class:`HaloViolationError` is raised.
Nothing is flooded: the work is a few filters and pointer jumping over arrays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from nclsm_scale.errors import HaloViolationError
from nclsm_scale.segment.grid import Block
from nclsm_scale.segment.ids import lookup_ids
from nclsm_scale.segment.maps import MapSource
from nclsm_scale.segment.seeds import (
    SegmentParams,
    decode_index,
    pixel_keys,
    seed_mask,
    smoothed_scores,
)

__all__ = ["BlockLabels", "UNCERTAIN", "assign_block", "label_window", "owned_ids"]

logger = logging.getLogger(__name__)

#: Value of pixels whose label cannot be decided inside the window.
UNCERTAIN = -1


@dataclass
class BlockLabels:
    """Result of one block: its core labels and what it took to certify them."""

    labels: np.ndarray
    halo_px: int
    escalations: int = 0
    flagged_yx: list[tuple[int, int]] = field(default_factory=list)
    n_owned: int = 0


def _resolve(parent: np.ndarray) -> np.ndarray:
    """Follow parent pointers to their roots (pointer jumping, log of the chain length)."""
    active = np.flatnonzero(parent[parent] != parent)
    while active.size:
        parent[active] = parent[parent[active]]
        active = active[parent[active] != parent[parent[active]]]
    return parent


def label_window(
    maps: np.ndarray,
    y0: int,
    x0: int,
    shape_yx: tuple[int, int],
    params: SegmentParams,
    table: np.ndarray,
) -> np.ndarray:
    """Labels of a map window at global ``(y0, x0)``: IDs, 0 background, :data:`UNCERTAIN`.

    Parameters
    ----------
    maps : (K, h, w) float32
        Maps of the window.
    shape_yx : tuple of int
        Size of the whole plane (for global indices).
    table : 1-D int64 array
        Sorted global seed table; every seed in the valid region must be in it.

    Returns
    -------
    (h, w) int64 array.
    """
    fg, value = smoothed_scores(maps, params)
    h, w = fg.shape
    key = pixel_keys(value, fg, y0, x0, shape_yx)
    seeds, kmax = seed_mask(key, value, params)
    k3 = ndi.maximum_filter(key, size=3, mode="constant", cval=-1)
    m = params.margin_px
    valid = np.zeros((h, w), dtype=bool)
    valid[m : h - m, m : w - m] = True
    n = h * w
    unknown, none = n, n + 1
    width = shape_yx[1]

    def to_flat(k: np.ndarray) -> np.ndarray:
        gy, gx = np.divmod(decode_index(k), width)
        return (gy - y0) * w + (gx - x0)

    act = np.flatnonzero(valid & fg)
    kf, k3f, kmf = key.ravel()[act], k3.ravel()[act], kmax.ravel()[act]
    local_max = k3f == kf
    jump = np.where(seeds.ravel()[act], act, np.where(kmf == kf, none, to_flat(kmf)))
    parent = np.full(n + 2, none, dtype=np.int64)
    parent[np.flatnonzero(~valid & fg)] = unknown
    parent[unknown] = unknown
    parent[act] = np.where(local_max, jump, to_flat(k3f))
    root = _resolve(parent)[:n]
    lab = np.zeros(n + 2, dtype=np.int64)
    lab[unknown] = UNCERTAIN
    roots = np.flatnonzero((valid & seeds).ravel())
    lab[roots] = lookup_ids(table, decode_index(key.ravel()[roots]))
    return lab[root].reshape(h, w)


def owned_ids(table: np.ndarray, block: Block, width: int) -> np.ndarray:
    """IDs (rank + 1) of the seeds in ``block``'s core."""
    lo = int(np.searchsorted(table, block.y0 * width))
    hi = int(np.searchsorted(table, block.y1 * width))
    gx = np.asarray(table[lo:hi]) % width
    return (np.flatnonzero((gx >= block.x0) & (gx < block.x1)) + lo + 1).astype(np.int64)


def _ring(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])


def assign_block(
    source: MapSource,
    block: Block,
    params: SegmentParams,
    table: np.ndarray,
    shape_yx: tuple[int, int],
    halo_px: int,
    escalation_limit: int,
) -> BlockLabels:
    """Certified labels of ``block``'s core, escalating the halo when a fibre needs more room.

    Raises
    ------
    HaloViolationError
        If the core is still not certain after ``escalation_limit`` doublings of the halo.
    """
    m = params.margin_px
    bh, bw = block.shape
    owned = owned_ids(table, block, shape_yx[1])
    flagged: list[tuple[int, int]] = []
    halo = tried = int(halo_px)
    for attempt in range(escalation_limit + 1):
        y0, x0, y1, x1 = block.window(halo + m)
        lab = label_window(source.maps(y0, x0, y1, x1), y0, x0, shape_yx, params, table)
        core = lab[halo + m : halo + m + bh, halo + m : halo + m + bw]
        uncertain = np.argwhere(core == UNCERTAIN)
        ring = _ring(lab[m : lab.shape[0] - m, m : lab.shape[1] - m])
        touching = np.intersect1d(owned, ring[ring > 0])
        if not uncertain.size and not touching.size:
            if attempt:
                logger.info("block %s certified after %d escalation(s), halo %d px",
                            (block.by, block.bx), attempt, halo)
            return BlockLabels(core.astype(np.uint32), halo, attempt, flagged, int(owned.size))
        where = [
            tuple(int(v) for v in divmod(int(table[i - 1]), shape_yx[1])) for i in touching[:3]
        ] or [(int(block.y0 + uncertain[0][0]), int(block.x0 + uncertain[0][1]))]
        flagged.extend(w for w in where if w not in flagged)
        logger.warning(
            "block %s: %d owned fibre(s) reach the window edge and %d core pixel(s) are "
            "uncertain with halo %d px (near y, x = %s px); escalating",
            (block.by, block.bx), touching.size, len(uncertain), halo, where[0],
        )
        tried, halo = halo, max(2 * halo, m)
    um = params.pixel_size_um
    y, x = flagged[-1]
    raise HaloViolationError(
        f"a fibre near (y, x) = ({y * um:.0f}, {x * um:.0f}) um at the segmentation level is "
        f"larger than the largest admissible window: block {(block.by, block.bx)} is still not "
        f"certain with a halo of {tried} px ({tried * um:.0f} um) after "
        f"{escalation_limit} escalation(s). Raise segment.max_fibre_diameter_um or "
        f"segment.escalation_limit if such fibres are real, or check the maps there."
    )
