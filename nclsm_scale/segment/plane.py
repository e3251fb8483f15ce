"""Segment a whole plane block by block in this process (no Dask).

The same pure block functions as the distributed driver, run in a loop: pass 1
per block (levels into an in-memory plane, seeds), the seed table, pass 2 per
block, cores pasted into one array. Used
for single-block reference runs, tests of chunk invariance (any block size, grid
offset and task order) and benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nclsm_scale.grid import BlockGrid
from nclsm_scale.segment.assign import assign_block
from nclsm_scale.segment.ids import seed_table
from nclsm_scale.segment.levels import ArrayLevels
from nclsm_scale.segment.maps import MapSource
from nclsm_scale.segment.seeds import SegmentParams, seed_pass

__all__ = ["PlaneResult", "segment_plane"]


@dataclass
class PlaneResult:
    """Labels of a plane and what the run took."""

    labels: np.ndarray
    n_fibres: int
    escalations: int
    flagged_yx: list[tuple[int, int]]


def segment_plane(
    source: MapSource,
    params: SegmentParams,
    block_px: int,
    halo_px: int,
    escalation_limit: int = 2,
    offset_yx: tuple[int, int] = (0, 0),
    order_seed: int | None = None,
) -> PlaneResult:
    """Segment all of ``source`` with cores of ``block_px``.

    Parameters
    ----------
    order_seed : int, optional
        Shuffle the order in which blocks are processed (both passes) with this seed.
    """
    shape = source.shape_yx
    grid = BlockGrid(shape, block_px, offset_yx)
    blocks = grid.blocks()
    rng = np.random.default_rng(order_seed)
    order = np.arange(len(blocks)) if order_seed is None else rng.permutation(len(blocks))
    levels = ArrayLevels(shape)
    per_block = []
    for i in order:
        core, seeds = seed_pass(source, blocks[i], params, shape, halo_px=halo_px,
                                escalation_limit=escalation_limit)
        levels.write(blocks[i].y0, blocks[i].x0, core)
        per_block.append(seeds)
    table = seed_table(per_block)
    labels = np.zeros(shape, dtype=np.uint32)
    escalations = 0
    flagged: list[tuple[int, int]] = []
    for i in order if order_seed is None else rng.permutation(len(blocks)):
        b = blocks[i]
        res = assign_block(levels, b, params, table, shape, halo_px, escalation_limit)
        labels[b.y0 : b.y1, b.x0 : b.x1] = res.labels
        escalations += res.escalations
        flagged.extend(res.flagged_yx)
    return PlaneResult(labels, int(table.size), escalations, flagged)
