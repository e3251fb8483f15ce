"""Block grid: every pixel has exactly one owner, for any size and offset."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nclsm_scale.errors import GridError
from nclsm_scale.grid import BlockGrid


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 300), w=st.integers(1, 300), b=st.integers(8, 120),
    oy=st.integers(0, 119), ox=st.integers(0, 119),
)
def test_cores_partition_the_plane_and_owner_agrees(h: int, w: int, b: int, oy: int, ox: int) -> None:
    grid = BlockGrid((h, w), b, (oy % b, ox % b))
    count = np.zeros((h, w), dtype=np.int32)
    index = np.full((h, w, 2), -1)
    for blk in grid.blocks():
        assert 0 < blk.shape[0] <= b and 0 < blk.shape[1] <= b
        count[blk.y0 : blk.y1, blk.x0 : blk.x1] += 1
        index[blk.y0 : blk.y1, blk.x0 : blk.x1] = (blk.by, blk.bx)
    assert np.all(count == 1)
    yy, xx = np.mgrid[:h, :w]
    by, bx = grid.owner(yy, xx)
    assert np.array_equal(by, index[..., 0]) and np.array_equal(bx, index[..., 1])


def test_window_grows_the_core_on_every_side() -> None:
    blk = BlockGrid((100, 100), 40).block(1, 1)
    assert (blk.y0, blk.x0, blk.y1, blk.x1) == (40, 40, 80, 80)
    assert blk.window(7) == (33, 33, 87, 87)


@pytest.mark.parametrize(("shape", "block", "offset"), [((0, 5), 4, (0, 0)), ((5, 5), 0, (0, 0)),
                                                       ((5, 5), 4, (4, 0))])
def test_bad_grids_raise_grid_error(shape, block, offset) -> None:
    with pytest.raises(GridError):
        BlockGrid(shape, block, offset)
