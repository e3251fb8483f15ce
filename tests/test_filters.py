"""Compiled Gaussian smoothing: equal bit for bit to scipy's ``gaussian_filter`` (mode ``nearest``)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from nclsm_scale.filters import gaussian_nearest, gaussian_weights


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 70), w=st.integers(1, 70), sigma=st.sampled_from([1e-16, 0.2, 0.5, 1.0, 2.0, 3.3, 9.0]),
       truncate=st.sampled_from([3.0, 4.0]), seed=st.integers(0, 2**16))
def test_gaussian_nearest_equals_scipy_bit_for_bit(h, w, sigma, truncate, seed) -> None:
    rng = np.random.default_rng(seed)
    image = (rng.random((h, w)) * 1000).astype(np.float32)
    image[rng.random((h, w)) < 0.2] = 0.0  # empty pixels, as background-free channels have
    image[rng.random((h, w)) < 0.05] = -0.0
    expected = ndimage.gaussian_filter(image, sigma, truncate=truncate, mode="nearest")
    got = gaussian_nearest(image, sigma, truncate)
    assert got.dtype == np.float32
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))  # the sign of zeros included


@pytest.mark.parametrize("dtype", [np.uint16, np.float64])
def test_gaussian_nearest_smooths_other_dtypes_as_float32(dtype) -> None:
    rng = np.random.default_rng(3)
    image = (rng.random((64, 97)) * 4000).astype(dtype)
    expected = ndimage.gaussian_filter(image.astype(np.float32), 1.0, truncate=3.0, mode="nearest")
    got = gaussian_nearest(image, 1.0, 3.0)
    assert np.array_equal(got, expected)
    assert got is not image


def test_gaussian_nearest_keeps_nan_where_scipy_does() -> None:
    image = np.ones((20, 20), np.float32)
    image[10, 10] = np.nan
    expected = ndimage.gaussian_filter(image, 1.0, truncate=3.0, mode="nearest")
    assert np.array_equal(gaussian_nearest(image, 1.0, 3.0), expected, equal_nan=True)


def test_gaussian_nearest_refuses_other_than_2d() -> None:
    with pytest.raises(ValueError, match="2-D image"):
        gaussian_nearest(np.zeros((2, 3, 4), np.float32), 1.0, 3.0)


def test_gaussian_weights_are_scipys_kernel() -> None:
    from scipy.ndimage._filters import _gaussian_kernel1d

    for sigma, truncate in [(0.5, 3.0), (1.0, 3.0), (2.0, 4.0), (3.7, 4.0)]:
        r = int(truncate * sigma + 0.5)
        full = _gaussian_kernel1d(sigma, 0, r)
        assert np.array_equal(gaussian_weights(sigma, truncate), full[r:])
