"""Pass 2: seeded assignment by steepest ascent, certified exact per pixel.

Pass 2 reads pass 1's stored levels (:mod:`nclsm_scale.segment.levels`), which are
exact everywhere, and the global seed table, which says exactly which pixels are
seeds; the maps are not smoothed again. Every pixel of a fibre core
(:mod:`~nclsm_scale.segment.cores`) points to its core's root, the seed. Every
other foreground pixel points to a **parent**: the pixel with the largest key
(level, then earlier position; see :mod:`nclsm_scale.segment.seeds`) in its
3 x 3 neighbourhood. A pixel outside the cores that is its own parent points to
the largest key within the seed radius, or to background if it is itself that
maximum. Keys strictly increase along parent chains outside the cores, so every
chain ends at a seed or at background; the pixel takes that seed's global ID.

Parents depend only on the levels within :attr:`SegmentParams.ascent_margin_px`
of a pixel, on the pixel's core (exact when the core does not touch the window's
edge) and on global coordinates, never on the array layout, so they are exact
inside the window shrunk by that margin (the *valid* region). Other parents,
and those of open cores, are "unknown"; a pixel whose chain reaches "unknown" is
uncertain. A block's labels are therefore exactly those of a whole-slide run
wherever they are certain, and a block is accepted only if all its core pixels
are certain and no fibre it owns touches the edge of its valid region. Otherwise
the halo is doubled (escalation), up to a limit, after which
:class:`HaloViolationError` is raised. Nothing is flooded: parents come from one
pass over the 3 x 3 neighbourhoods (the few peaks outside cores search their
square), cores from one connected-component labelling, and chains are resolved
with path compression (compiled loops, :mod:`~nclsm_scale.segment.kernels`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from nclsm_scale.errors import HaloViolationError
from nclsm_scale.grid import Block
from nclsm_scale.segment import kernels
from nclsm_scale.segment.cores import find_cores
from nclsm_scale.segment.seeds import SegmentParams, core_level

__all__ = ["BlockLabels", "LevelSource", "UNCERTAIN", "assign_block", "label_window", "owned_ids",
           "window_seeds"]

logger = logging.getLogger(__name__)

#: Value of pixels whose label cannot be decided inside the window (never an ID: IDs < 2**32 - 1).
UNCERTAIN = np.uint32(0xFFFFFFFF)


class LevelSource(Protocol):
    """Anything that yields int32 level windows, -1 outside the plane (see ``levels``)."""

    def levels(self, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """Levels of the half-open region."""
        ...


@dataclass
class BlockLabels:
    """Result of one block: its core labels and what it took to certify them."""

    labels: np.ndarray
    halo_px: int
    escalations: int = 0
    flagged_yx: list[tuple[int, int]] = field(default_factory=list)
    n_owned: int = 0


def window_seeds(
    table: np.ndarray, y0: int, x0: int, h: int, w: int, shape_yx: tuple[int, int]
) -> np.ndarray:
    """Window-flat indices and IDs of the table's seeds in an window, ``(2, n)`` int64."""
    height, width = shape_yx
    rows = np.arange(max(y0, 0), max(min(y0 + h, height), y0, 0), dtype=np.int64)
    xa = max(x0, 0)
    xb = max(min(x0 + w, width), xa)
    lo = np.searchsorted(table, rows * width + xa)
    hi = np.searchsorted(table, rows * width + xb)
    count = hi - lo
    pos = np.repeat(lo - np.cumsum(count) + count, count) + np.arange(int(count.sum()))
    gy, gx = np.divmod(np.asarray(table[pos]), width)
    return np.stack([(gy - y0) * w + (gx - x0), pos + 1])


def label_window(
    level: np.ndarray,
    y0: int,
    x0: int,
    shape_yx: tuple[int, int],
    params: SegmentParams,
    table: np.ndarray,
) -> np.ndarray:
    """Labels of a level window at global ``(y0, x0)``: IDs, 0 background, :data:`UNCERTAIN`.

    Parameters
    ----------
    level : (h, w) int32
        Levels of the window (-1 off foreground and outside the plane).
    shape_yx : tuple of int
        Size of the whole plane (for global indices).
    table : 1-D int64 array
        Sorted global seed table.

    Returns
    -------
    (h, w) uint32 array.
    """
    h, w = level.shape
    n = h * w
    unknown, none = n, n + 1
    parent = np.empty(n + 2, dtype=np.int32 if n + 2 < 2**31 else np.int64)
    parent[unknown], parent[none] = unknown, none
    grid = parent[:n].reshape(h, w)
    level = np.ascontiguousarray(level, dtype=np.int32)
    kernels.ascend(level, params.ascent_margin_px, max(params.seed_radius_px, 1), unknown, none, grid)
    cores = find_cores(level, core_level(params), params.min_core_px)
    cores.paint(grid, np.where(cores.open, unknown, cores.roots))
    flat, ids = window_seeds(table, y0, x0, h, w, shape_yx)
    parent[flat] = flat
    kernels.resolve(parent)
    lab = np.zeros(n + 2, dtype=np.uint32)
    lab[unknown] = UNCERTAIN
    lab[flat] = ids
    return lab[parent[:n]].reshape(h, w)


def owned_ids(table: np.ndarray, block: Block, width: int) -> np.ndarray:
    """IDs (rank + 1) of the seeds in ``block``'s core."""
    lo = int(np.searchsorted(table, block.y0 * width))
    hi = int(np.searchsorted(table, block.y1 * width))
    gx = np.asarray(table[lo:hi]) % width
    return (np.flatnonzero((gx >= block.x0) & (gx < block.x1)) + lo + 1).astype(np.int64)


def _ring(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])


def assign_block(
    source: LevelSource,
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
    m = params.ascent_margin_px
    bh, bw = block.shape
    owned = owned_ids(table, block, shape_yx[1])
    flagged: list[tuple[int, int]] = []
    halo = tried = int(halo_px)
    for attempt in range(escalation_limit + 1):
        y0, x0, y1, x1 = block.window(halo + m)
        lab = label_window(source.levels(y0, x0, y1, x1), y0, x0, shape_yx, params, table)
        core = lab[halo + m : halo + m + bh, halo + m : halo + m + bw]
        uncertain = np.argwhere(core == UNCERTAIN)
        ring = _ring(lab[m : lab.shape[0] - m, m : lab.shape[1] - m])
        touching = np.intersect1d(owned, ring[ring > 0])
        if not uncertain.size and not touching.size:
            if attempt:
                logger.info("block %s certified after %d escalation(s), halo %d px",
                            (block.by, block.bx), attempt, halo)
            return BlockLabels(np.ascontiguousarray(core), halo, attempt, flagged, int(owned.size))
        where: list[tuple[int, int]] = [
            divmod(int(table[i - 1]), shape_yx[1]) for i in touching[:3]
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
        f"{escalation_limit} escalation(s). Raise grid.max_fibre_diameter_um or "
        f"grid.escalation_limit if such fibres are real, or check the maps there."
    )
