"""Curation features of measure: interior membrane ridges (folds) and noise-adaptive dark blobs (FAM)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from nclsm_scale.config import MeasureConfig
from nclsm_scale.measure import measure_fibres
from nclsm_scale.measure.intensity import (
    SMOOTH_TRUNCATE,
    band_masks,
    band_stats,
    group_medians,
    interior_median_noise,
    interior_ridge_fraction,
    ridge_strength,
    smoothing_choice,
)
from nclsm_scale.measure.shape import perimeters

ROLES = {"membrane": 0, "mito": 1}


def _two_fibres(rng: np.random.Generator, *, crossing: bool, holes: bool, noise: float) -> tuple:
    """Two 60 x 60 um fibres at 1 um/px with membrane rings; the first may carry a crossing membrane or holes."""
    labels = np.zeros((80, 150), np.uint32)
    labels[10:70, 10:70] = 1
    labels[10:70, 80:140] = 2
    outline = (labels > 0) & (ndimage.grey_erosion(labels, size=3) != labels)
    membrane = np.where(outline, 1000.0, 40.0)
    mito = np.where(labels > 0, 800.0, 50.0)
    if crossing:  # a second layer's sarcolemma across the first fibre
        membrane[10:70, 38:40] = 700.0
    if holes:  # ice-crystal holes (empty: near background), 4 px across, every 9 px
        for y in range(17, 62, 9):
            for x in range(17, 62, 9):
                mito[y : y + 4, x : x + 4] = 60.0
    image = np.stack([ndimage.gaussian_filter(membrane, 0.7), ndimage.gaussian_filter(mito, 0.7)])
    image = image + rng.normal(0.0, noise, image.shape) + 100.0
    return labels, image


@pytest.mark.parametrize("noise", [0.0, 30.0])
def test_interior_membrane_fraction_sees_a_crossing_sarcolemma(rng, noise):
    labels, image = _two_fibres(rng, crossing=True, holes=False, noise=noise)
    t = measure_fibres(labels, image, pixel_size_um=1.0, channel_roles=ROLES, background=[100.0, 100.0])
    crossed, plain = t.interior_membrane_fraction.tolist()
    assert crossed > 0.02 and plain < 0.005  # the line covers ~4 % of the deep interior
    no_membrane = measure_fibres(labels, image, pixel_size_um=1.0, channel_roles={"mito": 1})
    assert no_membrane.interior_membrane_fraction.isna().all()


def test_interior_membrane_fraction_separates_folded_fibres(section):
    t = measure_fibres(
        section.fibres, section.image, pixel_size_um=1.0, channel_roles=ROLES,
        background=[float(np.median(section.image[c][section.regions == 0])) for c in range(2)],
    )
    gt = section.table.gt_class.astype(str).to_numpy()
    fr, am = t.interior_membrane_fraction[gt == "FR"], t.interior_membrane_fraction[gt == "AM"]
    assert len(fr) >= 5 and fr.median() > 0.02 and am.quantile(0.95) < 0.005


@pytest.mark.parametrize("noise", [5.0, 60.0])
def test_holes_are_counted_and_noise_alone_makes_none(rng, noise):
    labels, image = _two_fibres(rng, crossing=False, holes=True, noise=noise)
    t = measure_fibres(labels, image, pixel_size_um=1.0, channel_roles=ROLES, background=[100.0, 100.0])
    holey, plain = t.hole_count.tolist()
    assert holey >= 20 and plain == 0


def test_pixel_noise_estimates_white_noise(rng):
    comp = np.ones((200, 200), np.uint32)
    interior = np.ones(comp.shape, bool)
    channel = 500.0 + rng.normal(0.0, 25.0, comp.shape)
    _, est = interior_median_noise(comp, interior, channel, 1, 0.0)
    assert est[0] == pytest.approx(25.0, rel=0.05)


def _corner(section, size_px):
    """The top-left ``size_px`` square of the section's fibres: ``(comp, n, border)``."""
    comp = section.fibres[:size_px, :size_px]
    n = int(comp.max())
    return comp, n, perimeters(comp, n)[2]


def _median_noise_numpy(comp, interior, channel, n):
    """interior_median_noise as a loop over the fibres with NumPy (what the compiled pass replaced)."""
    median, noise = np.full(n, np.nan), np.full(n, np.nan)
    for i in range(n):
        m = interior & (comp == i + 1)
        if m.any():
            median[i] = float(np.median(channel[m]))
        pair = m[:, 1:] & m[:, :-1]
        if pair.any():
            c = channel.astype(np.float64)
            noise[i] = 1.4826 / np.sqrt(2.0) * float(np.median(np.abs(c[:, 1:] - c[:, :-1])[pair]))
    return median, noise


@pytest.mark.parametrize("dtype", ["float32", "uint16", "float64"])
def test_interior_median_noise_equals_numpy_per_fibre(section, dtype):
    comp, n, border = _corner(section, 300)
    _, interior = band_masks(comp, border, 2)
    channel = section.image[1, :300, :300]
    channel = (channel / np.float32(3000.0)).astype(dtype) if dtype != "uint16" else channel.astype(dtype)
    median, noise = interior_median_noise(comp, interior, channel, n + 2, 7.0)  # two IDs with no pixel
    expected_median, expected_noise = _median_noise_numpy(comp, interior, channel, n + 2)
    np.testing.assert_array_equal(median, expected_median - 7.0)
    np.testing.assert_array_equal(noise, expected_noise)
    assert np.isnan(median[-2:]).all() and np.isfinite(median[:n]).sum() >= 8


def test_noisier_fibres_are_read_at_coarser_smoothing():
    # a drop to half the median (500) must be 3 smoothed noise deviations deep: sd <= 167 after smoothing
    median = np.full(5, 1000.0)
    noise = np.array([10.0, 500.0, 1000.0, 5000.0, np.nan])
    choice = smoothing_choice(median, noise, [0.5, 1.0, 2.0], ratio=0.5, noise_z=3.0)
    assert choice.tolist() == [0, 1, 2, 2, 2]  # too noisy for all, or unknown: the coarsest


def test_smoothing_sigmas_must_ascend():
    with pytest.raises(ValueError, match="ascending"):
        MeasureConfig(hole_smooth_um=[1.0, 0.5])


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int32", "int64", "float32", "float64"])
@pytest.mark.parametrize("n", [1, 7, 70_000])
def test_group_medians_equal_numpy_median_per_group(dtype, n):
    """numpy.median of each group, bit for bit, for every pixel dtype, with and without an offset."""
    rng = np.random.default_rng(n)
    size = 5000
    group = rng.integers(0, n, size)
    info = np.iinfo(dtype) if dtype[0] in "ui" else None
    if info is None:
        values = (rng.standard_normal(size) * 100).astype(dtype)
        values[:50] = 0.0
        values[50:100] = -0.0
    else:
        lo, hi = max(info.min, -(2**40)), min(info.max, 2**40)
        values = rng.integers(lo, hi, size, endpoint=True).astype(dtype)
        values[:10] = info.min if info.min >= -(2**40) else values[:10]
    offset = rng.standard_normal(n) * 10
    got = group_medians(group, values, n)
    shifted = group_medians(group, values, n, offset=offset)
    for g in np.unique(group)[:200]:
        v = values[group == g].astype(np.float64)
        assert got[g] == np.median(v), (g, got[g], np.median(v))
        assert shifted[g] == np.median(v - offset[g])
    empty = np.setdiff1d(np.arange(min(n, 300)), group)
    assert np.isnan(got[empty]).all()


@pytest.mark.parametrize("q", [0.0, 0.25, 0.75, 1.0])
@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_band_stats_quantile_equals_numpy_quantile_per_fibre(q, dtype):
    rng = np.random.default_rng(3)
    group = rng.integers(0, 60, 4000)
    values = (rng.standard_normal(4000) * 500 + 2000).astype(dtype)
    comp, channel = (group + 1).reshape(40, 100), values.reshape(40, 100)
    _, _, got = band_stats(comp, np.ones(comp.shape, bool), channel, 62, 0.0, quantile=q)
    for g in range(60):
        assert got[g] == np.quantile(values[group == g].astype(np.float64), q)
    assert np.isnan(got[60:]).all()
    assert np.isnan(band_stats(comp, np.ones(comp.shape, bool), channel, 62, 0.0)[2]).all()  # no quantile asked


def test_group_medians_of_a_group_with_nan_is_nan_as_numpy_median():
    group = np.array([0, 0, 0, 1, 1])
    values = np.array([1.0, np.nan, 2.0, 3.0, 5.0], np.float32)
    got = group_medians(group, values, 3)
    assert np.isnan(got[0]) and got[1] == 4.0 and np.isnan(got[2])


def _ridge_strength_numpy(channel, sigma_px):
    """ridge_strength as NumPy expressions (what the compiled pass replaced)."""
    sm = np.pad(ndimage.gaussian_filter(channel.astype(np.float32), sigma_px, truncate=SMOOTH_TRUNCATE,
                                        mode="nearest"), 1, mode="edge")
    c = sm[1:-1, 1:-1]
    hyy = sm[2:, 1:-1] - 2 * c + sm[:-2, 1:-1]
    hxx = sm[1:-1, 2:] - 2 * c + sm[1:-1, :-2]
    hxy = (sm[2:, 2:] - sm[2:, :-2] - sm[:-2, 2:] + sm[:-2, :-2]) * np.float32(0.25)
    lmin = (hyy + hxx) * np.float32(0.5) - np.sqrt(((hyy - hxx) * np.float32(0.5)) ** 2 + hxy * hxy)
    return np.maximum(-lmin, np.float32(0.0)) * np.float32(sigma_px * sigma_px)


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (6, 1), (130, 97)])
@pytest.mark.parametrize("sigma_px", [0.5, 1.7])
def test_ridge_strength_equals_the_numpy_expressions_bit_for_bit(shape, sigma_px):
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    for image in ((rng.random(shape) * 4000).astype(np.uint16), rng.standard_normal(shape).astype(np.float32)):
        got, expected = ridge_strength(image, sigma_px), _ridge_strength_numpy(image, sigma_px)
        assert got.dtype == np.float32 and got.shape == shape
        np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))
    with_nan = np.ones((7, 7), np.float32)
    with_nan[3, 3] = np.nan
    np.testing.assert_array_equal(np.isnan(ridge_strength(with_nan, sigma_px)),
                                  np.isnan(_ridge_strength_numpy(with_nan, sigma_px)))


def _ridge_fraction_numpy(comp, ring, deep, strength, n, ratio, noise_z):
    """interior_ridge_fraction as a loop over the fibres with NumPy (what the compiled pass replaced)."""
    out = np.full(n, np.nan)
    for i in range(n):
        own = comp == i + 1
        r, d = strength[ring & own], strength[deep & own]
        if r.size == 0 or d.size == 0:
            continue
        q25, q50, q75 = np.percentile(d, [25.0, 50.0, 75.0])
        thr = max(ratio * float(np.median(r)), float(q50) + noise_z * float(q75 - q25) / 1.349)
        out[i] = np.count_nonzero(d > thr) / d.size
    return out


@pytest.mark.parametrize("ratio, noise_z", [(0.5, 3.0), (0.05, 0.5)])
def test_interior_ridge_fraction_equals_numpy_per_fibre(section, ratio, noise_z):
    comp, n, border = _corner(section, 600)
    ring, _ = band_masks(comp, border, 2)
    _, deep = band_masks(comp, border, 3)
    strength = ridge_strength(section.image[0, :600, :600], 1.0)
    got = interior_ridge_fraction(comp, ring, deep, strength, n + 1, ratio=ratio, noise_z=noise_z)
    expected = _ridge_fraction_numpy(comp, ring, deep, strength, n + 1, ratio, noise_z)
    np.testing.assert_array_equal(got, expected)
    assert np.isnan(got[-1]) and (got[:n] > 0).sum() >= 3


@pytest.mark.parametrize("dtype", ["uint16", "float32", "float64"])
def test_band_stats_equal_bincount_means_and_numpy_medians(section, dtype):
    comp, n, border = _corner(section, 600)
    ring, interior = band_masks(comp, border, 2)
    channel = section.image[1, :600, :600]
    channel = channel.astype(dtype) if dtype == "uint16" else (channel / np.float32(3000.0) - 0.2).astype(dtype)
    for mask in (ring, interior):
        mean, median, _ = band_stats(comp, mask, channel, n + 1, 0.3)  # one ID with no pixel
        idx = np.flatnonzero(mask)
        fibre = comp.ravel()[idx].astype(np.int64) - 1
        with np.errstate(invalid="ignore", divide="ignore"):
            expected = np.bincount(fibre, weights=channel.ravel()[idx].astype(np.float64) - 0.3, minlength=n + 1) / (
                np.bincount(fibre, minlength=n + 1).astype(np.float64))
        np.testing.assert_array_equal(mean, expected)
        for i in range(n):
            v = channel[mask & (comp == i + 1)].astype(np.float64)
            assert median[i] == (np.median(v) - 0.3 if v.size else np.nan) or (np.isnan(median[i]) and not v.size)
        assert np.isnan(mean[n]) and np.isnan(median[n])
