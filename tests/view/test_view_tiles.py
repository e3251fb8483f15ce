"""The pure tile functions against plain references."""

from __future__ import annotations

import imagecodecs
import numpy as np
from skimage.segmentation import find_boundaries

from nclsm_scale.normalise import NormStats
from nclsm_scale.view.tiles import composite_tile, encode_png, fibre_boundaries, fold_tile, outline_tile, tile_window


def test_composite_is_the_clipped_sum_of_normalised_channels_times_their_colours() -> None:
    rng = np.random.default_rng(0)
    block = rng.integers(0, 4000, (3, 40, 50), dtype=np.uint16)
    stats = NormStats(lo=[100.0, 200.0, 0.0], hi=[3000.0, 1500.0, 4000.0])
    colors = [(255, 0, 0), (0, 255, 0), (0, 80, 255)]
    got = composite_tile(block, stats, [0, 1, 2], colors)
    norm = [np.clip((block[c] - stats.lo[c]) / (stats.hi[c] - stats.lo[c]), 0, 1) for c in range(3)]
    want = np.clip(sum(n[..., None] * np.array(col) / 255.0 for n, col in zip(norm, colors, strict=True)), 0, 1) * 255
    assert got.dtype == np.uint8 and got.shape == (40, 50, 3)
    assert np.abs(got.astype(int) - np.rint(want)).max() <= 1  # float32 against float64
    assert composite_tile(block, stats, [1], [colors[1]])[..., 0].max() == 0  # only the chosen channel


def test_boundaries_are_skimage_inner_boundaries_of_labelled_pixels() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, (30, 30)).repeat(3, 0).repeat(3, 1).astype(np.uint32)
    padded = np.pad(labels, 1)
    want = find_boundaries(padded, mode="inner")[1:-1, 1:-1] & (labels > 0)
    assert (fibre_boundaries(padded) == want).all()
    lut = np.array([[0, 0, 0, 0], [255, 0, 0, 255], [0, 255, 0, 0], [0, 0, 255, 255]], np.uint8)
    rgba = outline_tile(padded, lut)
    drawn = want & (labels != 2)  # alpha 0 in the table: not drawn
    assert (rgba[drawn] == lut[labels[drawn]]).all() and (rgba[~drawn] == 0).all()
    assert (outline_tile(padded, lut[:2])[labels == 3] == 0).all()  # IDs beyond the table are not drawn
    filled = outline_tile(padded, lut, fill_alpha=40)
    inside = ~want & (labels != 2) & (labels > 0)
    assert (filled[drawn] == rgba[drawn]).all() and (filled[inside][:, 3] == 40).all()
    assert (filled[inside][:, :3] == lut[labels[inside]][:, :3]).all() and (filled[lut[labels][..., 3] == 0] == 0).all()


def test_wider_boundaries_reach_further_along_rows_and_columns() -> None:
    labels = np.zeros((9, 9), np.uint32)
    labels[2:8, 2:8] = 5
    edge = fibre_boundaries(np.pad(labels, 2), 2)
    assert edge.sum() == 36 - 4 and not edge[4:6, 4:6].any() and edge[3, 3] and not edge[0, 0]


def test_fold_tile_fills_folds_and_outlines_them() -> None:
    folds = np.zeros((12, 12), np.uint8)
    folds[3:9, 2:10] = 1
    rgba = fold_tile(np.pad(folds, 1), 1, (255, 140, 0, 128))
    assert (rgba[folds == 0] == 0).all()
    assert rgba[5, 5].tolist() == [255, 140, 0, 64] and rgba[3, 5].tolist() == [255, 140, 0, 255]


def test_tile_window_and_png_round_trip() -> None:
    assert tile_window((300, 200), 128, 1, 2) == (256, 128, 300, 200)
    assert tile_window((300, 200), 128, 2, 0) is None and tile_window((300, 200), 128, -1, 0) is None
    rgba = np.random.default_rng(2).integers(0, 255, (17, 23, 4), dtype=np.uint8)
    assert (imagecodecs.png_decode(encode_png(rgba)) == rgba).all()
