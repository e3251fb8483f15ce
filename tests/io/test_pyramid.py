"""Pyramid helpers: exact integer means, majority-vote labels, region independence."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nclsm_scale.io.pyramid import downsample_labels, downsample_mean, level_shapes, upsample_labels


def _naive_mean2(a: np.ndarray) -> np.ndarray:
    h, w = a.shape[-2:]
    out = np.zeros(a.shape[:-2] + ((h + 1) // 2, (w + 1) // 2), dtype=a.dtype)
    for y in range(out.shape[-2]):
        for x in range(out.shape[-1]):
            block = a[..., 2 * y : 2 * y + 2, 2 * x : 2 * x + 2].astype(np.int64)
            n = block.shape[-1] * block.shape[-2]
            out[..., y, x] = (block.sum(axis=(-1, -2)) + n // 2) // n
    return out


def test_level_shapes_halve_up_to_min_size():
    assert level_shapes((5000, 3000), 1024) == [(5000, 3000), (2500, 1500), (1250, 750), (625, 375)]
    assert level_shapes((800, 600), 1024) == [(800, 600)]


@given(h=st.integers(1, 9), w=st.integers(1, 9), seed=st.integers(0, 100))
@settings(max_examples=40, deadline=None)
def test_mean_matches_naive_including_odd_edges(h, w, seed):
    a = np.random.default_rng(seed).integers(0, 65535, (2, h, w), dtype=np.uint16)
    out = downsample_mean(a)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, _naive_mean2(a))


def test_mean_is_independent_of_region_split():
    a = np.random.default_rng(1).integers(0, 255, (1, 37, 51), dtype=np.uint8)
    whole = downsample_mean(a, 4)
    parts = np.concatenate([downsample_mean(a[:, :16], 4), downsample_mean(a[:, 16:], 4)], axis=1)
    np.testing.assert_array_equal(whole, parts)


def test_mean_float_keeps_dtype():
    a = np.arange(16, dtype=np.float32).reshape(4, 4)
    np.testing.assert_allclose(downsample_mean(a), [[2.5, 4.5], [10.5, 12.5]])
    assert downsample_mean(a).dtype == np.float32


def test_factor_must_be_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        downsample_mean(np.zeros((4, 4)), 3)


def test_labels_majority_and_no_new_values():
    a = np.array([[1, 1, 5, 6], [2, 1, 7, 8], [3, 3, 0, 0], [3, 4, 0, 9]], dtype=np.uint32)
    out = downsample_labels(a)
    np.testing.assert_array_equal(out, [[1, 5], [3, 0]])
    assert out.dtype == np.uint32
    big = np.random.default_rng(2).integers(0, 7, (33, 17), dtype=np.uint32)
    assert set(np.unique(downsample_labels(big, 4))) <= set(np.unique(big))


def test_upsample_labels_nearest_and_crop():
    a = np.array([[1, 2], [3, 4]], dtype=np.uint32)
    np.testing.assert_array_equal(upsample_labels(a, 2, (3, 4)), [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4]])
