"""Training augmentation: export artefacts (resampling, 8-bit, JPEG) and per-seed determinism."""

from __future__ import annotations

import numpy as np
import torch

from nclsm_scale.model.augment import (
    Pool,
    export_artefacts,
    jpeg,
    make_batch,
    quantise_8bit,
    resample_down_up,
)


def _patch(make_toy, seed: int = 0) -> torch.Tensor:
    image, _ = make_toy((96, 96), seed=seed)
    return torch.from_numpy(image)[None]


def test_batches_are_deterministic_per_seed(make_toy) -> None:
    """The same generator seed gives identical batches (export artefacts included); another differs."""
    image, labels = make_toy((128, 128), seed=1)
    pools = [Pool.from_sample(image, labels)]

    def batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return make_batch(pools, np.random.default_rng([seed, 3]), batch_size=6, patch_px=48)

    (xa, ya), (xb, yb), (xc, _) = batch(1), batch(1), batch(2)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(xa, xc)
    assert xa.shape == (6, 2, 48, 48) and xa.dtype == torch.float32


def test_quantise_8bit_maps_back_on_256_levels(make_toy) -> None:
    """8-bit codes span 0..255; mapped back, each channel takes at most 256 values near the input."""
    x = _patch(make_toy)
    codes, lo, hi = quantise_8bit(x, np.random.default_rng(0))
    assert codes.dtype == np.uint8 and codes.shape == (2, 96, 96)
    assert codes.min() == 0 and codes.max() == 255
    assert np.all(hi > lo)


def test_jpeg_changes_little_at_high_quality_more_at_low(make_toy) -> None:
    """A JPEG round trip keeps the image close; low quality loses more than high quality."""
    codes, _, _ = quantise_8bit(_patch(make_toy), np.random.default_rng(1))
    err = {q: np.abs(jpeg(codes, q, 2).astype(float) - codes).mean() for q in (30, 95)}
    assert 0 < err[95] < err[30] < 40  # the toy image is noisy: much of the loss is noise
    np.testing.assert_array_equal(jpeg(codes, 50, 2), jpeg(codes, 50, 2))


def test_resample_down_up_removes_fine_detail(make_toy) -> None:
    """Down-then-up resampling keeps the shape and means but loses high-frequency power."""
    x = _patch(make_toy)
    y = resample_down_up(x, 3.0)
    assert y.shape == x.shape
    assert abs(float(y.mean() - x.mean())) < 0.01

    def fine(t: torch.Tensor) -> float:
        return float((t[..., 1:, :] - t[..., :-1, :]).abs().mean())

    assert fine(y) < 0.6 * fine(x)


def test_export_artefacts_deterministic_and_quantised(make_toy) -> None:
    """Export artefacts are a function of the generator state; the result is 8-bit quantised."""
    x = _patch(make_toy, seed=2)
    a = export_artefacts(x, np.random.default_rng(7))
    b = export_artefacts(x, np.random.default_rng(7))
    assert torch.equal(a, b) and a.shape == x.shape and a.dtype == torch.float32
    for c in range(2):
        assert len(torch.unique(a[0, c])) <= 256
    corr = np.corrcoef(a[0, 1].numpy().ravel(), x[0, 1].numpy().ravel())[0, 1]
    assert corr > 0.8
