"""detect_folds and mask_window on synthetic folds with exact ground truth; tiles change nothing."""

from __future__ import annotations

import numpy as np
import pytest

from nclsm_scale.config import SynthConfig
from nclsm_scale.curate import detect_folds
from nclsm_scale.curate.folds import _pass_scores, fold_channels, fold_score, fold_tiles, hysteresis, tile_masks
from nclsm_scale.grid import lowres_window
from nclsm_scale.io.readers import assign_roles
from nclsm_scale.normalise import compute_norm
from nclsm_scale.segment.regions import tissue_mask


def test_detected_folds_lie_in_true_folds():
    from nclsm_scale.synth import generate_section

    s = generate_section(SynthConfig(size_px=(1024, 1024), pixel_size_um=1.0, seed=1, folds=2))
    low = s.image.astype(np.float32).reshape(2, 128, 8, 128, 8).mean(axis=(2, 4))
    tissue = tissue_mask(low, 8.0, 25.0) > 0
    fold = lowres_window(detect_folds(low, tissue, pixel_size_um=8.0), 8, (0, 0), (1024, 1024))
    true = s.regions == 2
    assert fold.sum() > 0.3 * true.sum()
    assert (fold & true).sum() > 0.9 * fold.sum()


def test_no_folds_on_flat_tissue():
    img = np.full((2, 64, 64), 100.0) + np.random.default_rng(0).normal(0, 3, (2, 64, 64))
    assert not detect_folds(img, np.ones((64, 64), bool), pixel_size_um=8.0).any()


def test_mask_window_is_cut_invariant():
    low = np.random.default_rng(1).random((20, 30)) > 0.5
    full = lowres_window(low, 8, (0, 0), (160, 240))
    assert np.array_equal(lowres_window(low, 8, (37, 61), (50, 70)), full[37:87, 61:131])
    assert np.array_equal(full[::8, ::8], low)


@pytest.fixture(scope="module")
def section_lowres():
    """Fold channels and tissue of a 2048² section with two folds, on an 8 um/px grid."""
    from nclsm_scale.synth import generate_section

    s = generate_section(SynthConfig(size_px=(2048, 2048), pixel_size_um=1.0, seed=3, folds=2))
    low = s.image.astype(np.float32).reshape(2, 256, 8, 256, 8).mean(axis=(2, 4))
    norm = compute_norm(low)
    planes = fold_channels(low, assign_roles(list(s.channel_names)), norm.lo,
                           [h - lo for lo, h in zip(norm.lo, norm.hi, strict=True)])
    return planes, tissue_mask(low, 8.0, 25.0) > 0


@pytest.mark.parametrize(("tile_px", "reference_um"), [(37, 80.0), (100, 80.0), (37, 250.0), (100, 250.0)])
def test_folds_do_not_depend_on_the_tiles(section_lowres, tile_px, reference_um):
    """At an 80 um reference the halo is 92 px, so tiles read windows smaller than the 256² level."""
    planes, tissue = section_lowres
    kw = dict(pixel_size_um=8.0, reference_um=reference_um)
    whole = detect_folds(planes, tissue, background=[0.0, 0.0], tile_px=4096, **kw)
    assert whole.sum() > 1000
    assert np.array_equal(detect_folds(planes, tissue, background=[0.0, 0.0], tile_px=tile_px, **kw), whole)


def test_tile_masks_equal_the_thresholded_scores_of_the_whole_level(section_lowres):
    """Both passes, on 50 px tiles with an interior halo (80 um reference: 92 px)."""
    planes, tissue = section_lowres
    kw = dict(pixel_size_um=8.0, min_ratio=1.5, low_ratio=1.25, smooth_um=24.0, reference_um=80.0)
    tiles = fold_tiles(tissue.shape, 50, pixel_size_um=8.0, smooth_um=24.0, reference_um=80.0)
    assert len(tiles) == 36 and any(t.wy0 > 0 and t.wy1 < 256 for t in tiles)
    parts = [tile_masks(planes[:, t.wy0 : t.wy1, t.wx0 : t.wx1], tissue[t.wy0 : t.wy1, t.wx0 : t.wx1], t, **kw)
             for t in tiles]
    first, second = _pass_scores(planes, tissue, 3.0, 10.0, 1.25)
    for i, score in enumerate((first, second)):
        got = np.zeros((2, *tissue.shape), bool)
        for t, (masks, _) in zip(tiles, parts, strict=True):
            got[(slice(None), *t.core)] = np.unpackbits(masks[i], axis=-1, count=t.x1 - t.x0)
        assert np.array_equal(got, np.stack([score >= 1.25, score >= 1.5]))
    assert sum(n for _, n in parts) == int((tissue & (first > 1.25)).sum()) > 0
    assert np.array_equal(whole := fold_score(planes, tissue, pixel_size_um=8.0, background=[0.0, 0.0],
                                              reference_um=80.0), second, equal_nan=True)
    assert not np.array_equal(whole, first, equal_nan=True)


def test_the_first_pass_stands_when_it_excludes_most_tissue(section_lowres):
    """With under a fifth of the tissue left for the second reference, the first pass's masks decide."""
    planes, tissue = section_lowres
    tiles = fold_tiles(tissue.shape, 128, pixel_size_um=8.0, smooth_um=24.0, reference_um=250.0)
    parts = [tile_masks(planes[:, t.wy0 : t.wy1, t.wx0 : t.wx1], tissue[t.wy0 : t.wy1, t.wx0 : t.wx1], t,
                        pixel_size_um=8.0, min_ratio=1.5, low_ratio=1.25, smooth_um=24.0, reference_um=250.0)
             for t in tiles]
    mostly_excluded = [(m, int(tissue.sum())) for m, _ in parts]
    first_only = [(np.stack([m[0], m[0]]), 0) for m, _ in parts]
    second_only = [(np.stack([m[1], m[1]]), 0) for m, _ in parts]
    assert np.array_equal(hysteresis(tiles, mostly_excluded, tissue, pixel_size_um=8.0),
                          hysteresis(tiles, first_only, tissue, pixel_size_um=8.0))
    assert np.array_equal(hysteresis(tiles, parts, tissue, pixel_size_um=8.0),
                          hysteresis(tiles, second_only, tissue, pixel_size_um=8.0))
    assert not np.array_equal(np.stack([m[0] for m, _ in parts]), np.stack([m[1] for m, _ in parts]))
