"""detect_folds and mask_window on synthetic folds with exact ground truth."""

from __future__ import annotations

import numpy as np

from nclsm_scale.config import SynthConfig
from nclsm_scale.curate import detect_folds
from nclsm_scale.grid import lowres_window
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
