"""Assignment: certified pixels equal the whole-image labels; oversize fibres escalate, never split."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from segment_fixtures import core_image, same_partition, voronoi_fibres

from nclsm_scale.errors import HaloViolationError
from nclsm_scale.grid import Block
from nclsm_scale.segment.assign import UNCERTAIN, assign_block, label_window, window_seeds
from nclsm_scale.segment.cores import find_cores
from nclsm_scale.segment.ids import seed_table
from nclsm_scale.segment.levels import ArrayLevels
from nclsm_scale.segment.maps import ArrayMaps, maps_from_labels
from nclsm_scale.segment.plane import segment_plane
from nclsm_scale.segment.seeds import SegmentParams, core_level, seed_pass


def _whole_levels(src: ArrayMaps, params: SegmentParams) -> tuple[ArrayLevels, np.ndarray]:
    """Pass 1 of the whole image as one block: its level plane and seed table."""
    shape = src.shape_yx
    core, seeds = seed_pass(src, Block(0, 0, 0, 0, *shape), params, shape, halo_px=8)
    levels = ArrayLevels(shape)
    levels.write(0, 0, core)
    return levels, seed_table([seeds])


@pytest.fixture(scope="module")
def crop(synth_maps: ArrayMaps, params: SegmentParams) -> tuple[ArrayLevels, np.ndarray, np.ndarray]:
    """The level plane of a 768 x 768 map crop, its seed table and its whole-image labels."""
    levels, table = _whole_levels(ArrayMaps(synth_maps.array[:, :768, :768]), params)
    shape = levels.shape_yx
    m = params.ascent_margin_px
    whole = label_window(levels.levels(-m, -m, shape[0] + m, shape[1] + m), -m, -m, shape, params, table)
    return levels, table, whole[m:-m, m:-m]


@settings(max_examples=30, deadline=None)
@given(y0=st.integers(-900, 900), x0=st.integers(-900, 900), h=st.integers(1, 300), w=st.integers(1, 300))
def test_window_seeds_are_the_table_entries_inside_the_window(crop, y0, x0, h, w) -> None:
    levels, table, _ = crop
    width = levels.shape_yx[1]
    flat, ids = window_seeds(table, y0, x0, h, w, levels.shape_yx)
    gy, gx = np.divmod(np.asarray(table), width)
    inside = (gy >= y0) & (gy < y0 + h) & (gx >= x0) & (gx < x0 + w)
    assert np.array_equal(ids, np.flatnonzero(inside) + 1)
    assert np.array_equal(flat, (gy[inside] - y0) * w + (gx[inside] - x0))


def test_whole_image_labels_are_certain_and_every_seed_labels_its_fibre(crop) -> None:
    _, table, whole = crop
    assert not np.any(whole == UNCERTAIN)
    assert np.array_equal(np.unique(whole[whole > 0]), np.arange(1, table.size + 1))


@settings(max_examples=30, deadline=None)
@given(y0=st.integers(-60, 760), x0=st.integers(-60, 760), h=st.integers(20, 400), w=st.integers(20, 400))
def test_certain_pixels_of_any_window_equal_the_whole_image(crop, params, y0, x0, h, w) -> None:
    levels, table, whole = crop
    lab = label_window(levels.levels(y0, x0, y0 + h, x0 + w), y0, x0, levels.shape_yx, params, table)
    ys, xs = np.mgrid[y0 : y0 + h, x0 : x0 + w]
    inside = (ys >= 0) & (ys < 768) & (xs >= 0) & (xs < 768)
    ref = np.zeros_like(lab)
    ref[inside] = whole[ys[inside], xs[inside]]
    certain = lab != UNCERTAIN
    assert np.array_equal(lab[certain], ref[certain])
    m = params.ascent_margin_px
    border = np.ones_like(certain)
    border[m : h - m, m : w - m] = False
    seeds, _ = window_seeds(table, y0, x0, h, w, levels.shape_yx)
    border.ravel()[seeds] = False  # a seed is certain anywhere: the table says what it is
    cores = find_cores(levels.levels(y0, x0, y0 + h, x0 + w), core_level(params), params.min_core_px)
    image = core_image(cores)
    border[(~cores.open)[image] & (image > 0)] = False  # so is a closed core
    assert np.all(lab[border & (ref > 0)] == UNCERTAIN)  # the border never guesses a fibre


def _giant_maps() -> tuple[ArrayMaps, np.ndarray]:
    lab = voronoi_fibres((640, 640), 50, 2, seed=5)
    yy, xx = np.mgrid[:640, :640]
    giant = (yy - 300) ** 2 / 170**2 + (xx - 320) ** 2 / 110**2 <= 1.0  # 340 x 220 px fibre
    lab[giant] = lab.max() + 1
    lab[np.isin(lab, np.unique(lab[giant & ~np.roll(giant, 3, 0)]))& ~giant] = 0
    return ArrayMaps(maps_from_labels(lab, seed=1, noise=0.03, blur_px=1.0)), lab


def test_a_fibre_wider_than_the_halo_is_escalated_never_split(params) -> None:
    src, lab = _giant_maps()
    ref = segment_plane(src, params, 1024, 64)
    blocked = segment_plane(src, params, 128, 64, escalation_limit=3)
    assert blocked.escalations > 0
    assert same_partition(blocked.labels, ref.labels)
    giant_ids = np.unique(blocked.labels[300, 300:340])
    assert giant_ids.size == 1 and giant_ids[0] > 0
    assert np.count_nonzero(blocked.labels == giant_ids[0]) > 0.9 * np.pi * 170 * 110


def test_a_fibre_beyond_the_escalation_limit_fails_the_slide(params) -> None:
    src, _ = _giant_maps()
    shape = src.shape_yx
    grid_blocks = [Block(0, 0, 256, 256, 384, 384)]
    levels, table = _whole_levels(src, params)
    with pytest.raises(HaloViolationError, match="larger than the largest admissible window"):
        assign_block(levels, grid_blocks[0], params, table, shape, halo_px=32, escalation_limit=1)
