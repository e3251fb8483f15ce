"""Seeds: one per fibre core, global tie-break, identical in any window."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from nclsm_scale.errors import HaloViolationError
from nclsm_scale.grid import Block
from nclsm_scale.segment.cores import find_cores
from nclsm_scale.segment.maps import ArrayMaps
from nclsm_scale.segment.seeds import (
    SegmentParams,
    _probe_seeds,
    block_seeds,
    core_level,
    seed_pass,
    window_levels,
)


def test_levels_quantise_the_value_and_mark_background_and_the_outside() -> None:
    value = np.array([[0.0, 0.5, 1.0], [2.0, 0.25, 5.0]], dtype=np.float32)
    fg = np.array([[1, 1, 1], [1, 0, 1]], dtype=np.float32)
    bd = np.array([[0, 0, 0], [0, 0, 0.6]], dtype=np.float32)
    src = ArrayMaps(np.stack([fg, bd, value]))
    p = SegmentParams(1.0, 0.0, 3, 0.35, 0.5, 0.5)  # no smoothing: the level is the map's value
    assert window_levels(src, p, (2, 3), 0, 0, 2, 3).tolist() == [[0, 16384, 32768], [65536, -1, -1]]
    no_bd = SegmentParams(1.0, 0.0, 3, 0.35, 0.5, 0.5, channels=("foreground", "distance"))
    inside = window_levels(ArrayMaps(np.stack([fg, value]), no_bd.channels), no_bd, (2, 3), 0, 0, 2, 3)
    assert inside.dtype == np.int32
    assert inside.tolist() == [[0, 16384, 32768], [65536, -1, 131071]]  # clipped at 2**17 - 1
    level = window_levels(src, p, (2, 3), -1, 1, 2, 3)
    assert level.tolist() == [[-1, -1], [16384, 32768], [-1, -1]]  # row -1, column 3: off the plane


def _reference_roots(level: np.ndarray, params: SegmentParams) -> set[int]:
    """The definition, by brute force: per 4-connected core, the largest (level, -index)."""
    comp, n = ndi.label(level >= core_level(params))
    roots = set()
    for c in range(1, n + 1):
        idx = np.flatnonzero(comp == c)
        if idx.size < params.min_core_px:
            continue
        lv = level.ravel()[idx]
        roots.add(int(idx[lv == lv.max()].min()))
    return roots


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), top=st.integers(0, 3), size=st.integers(1, 4),
       seed=st.integers(0, 2**16))
def test_core_roots_equal_the_definition_on_levels_full_of_ties(h, w, top, size, seed) -> None:
    level = np.random.default_rng(seed).integers(-1, top + 1, (h, w)).astype(np.int32)
    level = np.pad(level, 1, constant_values=-1)  # closed: no core touches the edge
    p = SegmentParams(1.0, 0.0, 3, 1 / (1 << 15), 0.5, 0.5, min_core_px=size)
    cores = find_cores(level, core_level(p), p.min_core_px)
    assert not cores.open.any()
    assert set(cores.roots[1:].tolist()) == _reference_roots(level, p)


def test_open_cores_are_the_ones_touching_the_window_edge() -> None:
    level = np.full((6, 6), -1, np.int32)
    level[0:2, 1:3] = 5  # touches the top edge
    level[3:5, 2:4] = 7  # closed
    cores = find_cores(level, 5)
    assert sorted(zip(cores.roots[1:].tolist(), cores.open[1:].tolist(), strict=True)) == [(1, True), (20, False)]


def test_an_elongated_fibre_gets_one_seed(params: SegmentParams) -> None:
    maps = np.zeros((3, 80, 200), dtype=np.float32)
    maps[0, 20:60, 10:190] = 1.0
    maps[2, 20:60, 10:190] = 0.2
    maps[2, 35:45, 25:175] = 1.0  # a long flat ridge: local maxima would split it
    maps[2, 39, 100] = 0.9  # a dip on the ridge
    src = ArrayMaps(maps)
    seeds = block_seeds(src, Block(0, 0, 0, 0, 80, 200), params, (80, 200), halo_px=32)
    assert seeds.size == 1


def test_a_flat_plateau_gives_one_seed_at_its_first_pixel() -> None:
    maps = np.zeros((3, 60, 60), dtype=np.float32)
    maps[0, 10:50, 10:50] = 1.0
    maps[2, 20:40, 15:45] = 1.0
    p = SegmentParams(1.0, 0.0, 8, 0.5, 0.5, 0.5)
    seeds = block_seeds(ArrayMaps(maps), Block(0, 0, 0, 0, 60, 60), p, (60, 60), halo_px=8)
    assert np.divmod(seeds, 60)[0].tolist() == [20] and (seeds % 60).tolist() == [15]


def test_an_open_core_escalates_then_fails(params: SegmentParams) -> None:
    maps = np.zeros((3, 64, 400), dtype=np.float32)
    maps[0, 10:50, :] = 1.0
    maps[2, 20:40, :] = 1.0  # a core as long as the slide
    src = ArrayMaps(maps)
    block = Block(0, 0, 0, 0, 64, 32)
    with pytest.raises(HaloViolationError, match="fibre core"):
        seed_pass(src, block, params, (64, 400), halo_px=16, escalation_limit=2)
    _, seeds = seed_pass(src, block, params, (64, 400), halo_px=16, escalation_limit=5)
    assert seeds.size == 1


@settings(max_examples=25, deadline=None)
@given(y0=st.integers(-40, 700), x0=st.integers(-40, 700), h=st.integers(1, 300), w=st.integers(1, 300))
def test_block_seeds_equal_the_whole_image_seeds_inside_the_core(
    synth_maps: ArrayMaps, params: SegmentParams, y0: int, x0: int, h: int, w: int
) -> None:
    crop = ArrayMaps(synth_maps.array[:, :1024, :1024])
    shape = crop.shape_yx
    whole = block_seeds(crop, Block(0, 0, 0, 0, *shape), params, shape, halo_px=150)
    y0, x0 = max(y0, 0), max(x0, 0)
    y1, x1 = min(y0 + h, shape[0]), min(x0 + w, shape[1])
    if y1 <= y0 or x1 <= x0:
        return
    got = block_seeds(crop, Block(0, 0, y0, x0, y1, x1), params, shape, halo_px=150)
    gy, gx = np.divmod(whole, shape[1])
    expected = whole[(gy >= y0) & (gy < y1) & (gx >= x0) & (gx < x1)]
    assert np.array_equal(got, expected)


@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 90), w=st.integers(1, 90), sigma=st.sampled_from([0.0, 0.1, 0.7, 2.0, 3.5]),
       seed=st.integers(0, 2**16), data=st.data())
def test_levels_quantise_scipy_gaussian_filter_bit_for_bit(h, w, sigma, seed, data) -> None:
    rng = np.random.default_rng(seed)
    maps = rng.random((3, h, w), dtype=np.float32)
    maps[2] *= 4.5  # levels past the top are clipped
    p = SegmentParams(1.0, sigma, 3, 0.35, 0.3, 0.8)
    y0, x0 = data.draw(st.integers(-5, h - 1)), data.draw(st.integers(-5, w - 1))
    y1, x1 = data.draw(st.integers(y0 + 1, h + 5)), data.draw(st.integers(x0 + 1, w + 5))
    value = ndi.gaussian_filter(maps[2], sigma, mode="constant", cval=0.0, truncate=4.0) if sigma else maps[2]
    q = np.clip(np.rint(value * np.float32(2**15)), 0, 2**17 - 1).astype(np.int32)
    expected = np.full((h + 10, w + 10), -1, np.int32)  # the plane, 5 px beyond each edge
    expected[5:-5, 5:-5] = np.where((maps[0] > 0.3) & (maps[1] <= 0.8), q, -1)
    got = window_levels(ArrayMaps(maps), p, (h, w), y0, x0, y1, x1)
    assert np.array_equal(got, expected[y0 + 5 : y1 + 5, x0 + 5 : x1 + 5])


@settings(max_examples=25, deadline=None)
@given(y0=st.integers(-30, 200), x0=st.integers(-30, 200), h=st.integers(1, 120), w=st.integers(1, 120))
def test_window_levels_do_not_depend_on_the_window(synth_maps, params, y0, x0, h, w) -> None:
    crop = ArrayMaps(synth_maps.array[:, :256, :256])
    whole = window_levels(crop, params, (256, 256), -40, -40, 340, 340)  # holds every window drawn
    got = window_levels(crop, params, (256, 256), y0, x0, y0 + h, x0 + w)
    assert got.shape == (h, w)
    assert np.array_equal(got, whole[y0 + 40 : y0 + 40 + h, x0 + 40 : x0 + 40 + w])


def _bar_maps(vertical_to: int | None) -> ArrayMaps:
    """A core leaving a block across its right edge (x = 192), optionally turning down at x 224-236."""
    maps = np.zeros((3, 256, 320), dtype=np.float32)
    maps[0, 40:100, 130:260] = 1.0
    maps[2, 40:100, 130:260] = 0.1
    xs = np.arange(150, 240)
    maps[2, 60:76, 150:240] = 0.9 - 0.002 * (xs - 150)  # highest inside the block
    if vertical_to is not None:
        maps[0, 40:vertical_to + 10, 214:250] = 1.0
        maps[2, 60:vertical_to, 224:237] = 0.7
    return ArrayMaps(maps)


@pytest.mark.parametrize("vertical_to", [None, 200])
def test_cores_leaving_the_probe_window_give_the_whole_image_seeds(params, vertical_to) -> None:
    src = _bar_maps(vertical_to)
    shape = src.shape_yx
    block = Block(0, 1, 0, 64, 128, 192)
    halo = 90
    probe = halo // 3
    level = window_levels(src, params, shape, *block.window(probe))
    assert find_cores(level, core_level(params), params.min_core_px).open.any()  # open in the probe
    routed = _probe_seeds(src, block, params, shape, level, probe, halo)
    whole = block_seeds(src, Block(0, 0, 0, 0, *shape), params, shape, halo_px=halo)
    gy, gx = np.divmod(whole, shape[1])
    mine = whole[(gy < 128) & (gx >= 64) & (gx < 192)]
    assert mine.size == 1
    if vertical_to is None:  # followed in a small window around it
        assert np.array_equal(routed, mine)
    else:  # too long for that window: the whole halo window decides
        assert routed is None
    assert np.array_equal(block_seeds(src, block, params, shape, halo_px=halo), mine)
