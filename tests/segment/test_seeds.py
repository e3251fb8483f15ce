"""Seeds: unique keys, global plateau tie-break, identical in any window."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from nclsm_scale.segment.grid import Block
from nclsm_scale.segment.maps import ArrayMaps
from nclsm_scale.segment.seeds import (
    SegmentParams,
    block_seeds,
    decode_index,
    pixel_keys,
    seed_mask,
    smoothed_scores,
)


def test_keys_are_unique_and_decode_to_global_position() -> None:
    value = np.full((6, 7), 0.5, dtype=np.float32)
    fg = np.ones_like(value, dtype=bool)
    key = pixel_keys(value, fg, 10, 20, (100, 50))
    assert np.unique(key).size == key.size
    yy, xx = np.mgrid[10:16, 20:27]
    assert np.array_equal(decode_index(key), yy * 50 + xx)
    assert key[0, 0] == key.max()  # equal values: the smaller global position wins


def test_a_flat_plateau_gives_one_seed_at_its_first_pixel(params: SegmentParams) -> None:
    maps = np.zeros((3, 60, 60), dtype=np.float32)
    maps[0, 10:50, 10:50] = 1.0
    maps[2, 20:40, 15:45] = 1.0
    p = SegmentParams(1.0, 0.0, 8, 0.5, 0.5, 0.5)
    fg, value = smoothed_scores(maps, p)
    seeds, _ = seed_mask(pixel_keys(value, fg, 0, 0, (60, 60)), value, p)
    assert np.argwhere(seeds).tolist() == [[20, 15]]


@settings(max_examples=25, deadline=None)
@given(y0=st.integers(-40, 700), x0=st.integers(-40, 700), h=st.integers(1, 300), w=st.integers(1, 300))
def test_block_seeds_equal_the_whole_image_seeds_inside_the_core(
    synth_maps: ArrayMaps, params: SegmentParams, y0: int, x0: int, h: int, w: int
) -> None:
    crop = ArrayMaps(synth_maps.array[:, :1024, :1024])
    shape = crop.shape_yx
    whole = block_seeds(crop, Block(0, 0, 0, 0, *shape), params, shape)
    y0, x0 = max(y0, 0), max(x0, 0)
    y1, x1 = min(y0 + h, shape[0]), min(x0 + w, shape[1])
    if y1 <= y0 or x1 <= x0:
        return
    got = block_seeds(crop, Block(0, 0, y0, x0, y1, x1), params, shape)
    gy, gx = np.divmod(whole, shape[1])
    expected = whole[(gy >= y0) & (gy < y1) & (gx >= x0) & (gx < x1)]
    assert np.array_equal(got, expected)
