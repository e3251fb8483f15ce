"""Slide QC: membrane contrast and focus on synthetic sections, noise and blank images; flags and rejection."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from nclsm_scale.config import CurateConfig, SynthConfig
from nclsm_scale.curate import curate_fibres
from nclsm_scale.curate.qc import (
    NO_FIBRES,
    NO_MEMBRANE_CONTRAST,
    NO_TISSUE,
    focus_share,
    membrane_contrast,
    reject_slide,
    slide_qc,
    tissue_picks,
)
from nclsm_scale.io.readers import assign_roles
from nclsm_scale.measure import measure_fibres
from nclsm_scale.normalise import compute_norm
from nclsm_scale.synth import generate_section

CFG = CurateConfig()


def _measured_on(image: np.ndarray, labels: np.ndarray, names: list[str]) -> pd.DataFrame:
    norm = compute_norm(image)
    return measure_fibres(labels, image, pixel_size_um=1.0, channel_roles=assign_roles(names), channel_names=names,
                          background=list(norm.lo), scale=[h - lo for lo, h in zip(norm.lo, norm.hi, strict=True)])


@pytest.fixture(scope="module")
def section():
    return generate_section(SynthConfig(size_px=(768, 768), pixel_size_um=1.0, seed=21, folds=0))


def test_muscle_sections_of_every_look_have_membrane_contrast_far_above_the_threshold(measured_sections):
    # default looks, dim and noisy, membrane + myosin without mito
    contrasts = [membrane_contrast(t, CFG.debris_max_um2) for t, _, _ in measured_sections]
    assert min(contrasts) > 2 * CFG.qc_min_membrane_contrast, contrasts


def test_outlines_on_noise_or_a_blank_image_have_no_membrane_contrast(section):
    rng = np.random.default_rng(3)
    names = list(section.channel_names)
    noise = rng.normal(1000.0, 100.0, section.image.shape).clip(0).astype(np.uint16)
    blank = np.full(section.image.shape, 100, np.uint16)
    on_noise = _measured_on(noise, section.fibres, names)
    assert abs(membrane_contrast(on_noise, CFG.debris_max_um2)) < 0.05
    on_blank = _measured_on(blank, section.fibres, names)
    assert math.isnan(membrane_contrast(on_blank, CFG.debris_max_um2))  # no signal at all: not judged
    assert math.isnan(membrane_contrast(on_noise.drop(columns=["membrane_ring_median"])))  # no membrane channel


def test_focus_falls_with_blur_and_is_not_judged_on_noise():
    sharp, blurred = [
        focus_share([generate_section(SynthConfig(size_px=(512, 512), pixel_size_um=1.0, seed=22, folds=0,
                                                  blur_sigma_um_range=blur)).image[0]], 1.0)
        for blur in ((0.4, 0.6), (2.5, 2.5))
    ]
    assert sharp > 0.3 and blurred < 0.15 and blurred < sharp / 2, (sharp, blurred)
    noise = np.random.default_rng(4).normal(1000.0, 100.0, (512, 512))
    assert math.isnan(focus_share([noise], 1.0))
    assert math.isnan(focus_share([np.full((256, 256), 100.0)], 1.0))
    assert math.isnan(focus_share([], 1.0))


def _curated(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    table["fold_fraction"] = 0.0
    return curate_fibres(table, CFG, pixel_size_um=1.0)


def test_a_muscle_slide_passes_and_noise_or_blank_slides_are_flagged(section):
    names = list(section.channel_names)
    tissue = section.regions[::8, ::8] > 0
    good = slide_qc(_curated(_measured_on(section.image, section.fibres, names)), tissue, 8.0, 0.4, CFG)
    assert good.qc_flag == "" and good.qc_membrane_contrast > 0.4
    assert 0.3 < good.qc_tissue_fraction <= 1.0 and 0.0 < good.qc_rejected_fraction < 1.0
    noise = np.random.default_rng(5).normal(1000.0, 100.0, section.image.shape).clip(0).astype(np.uint16)
    on_noise = slide_qc(_curated(_measured_on(noise, section.fibres, names)), np.ones_like(tissue), 8.0,
                        math.nan, CFG)
    assert on_noise.qc_flag == NO_MEMBRANE_CONTRAST  # the tissue mask finds "tissue" in noise: contrast decides
    empty = _curated(_measured_on(section.image, np.zeros_like(section.fibres), names))
    blank = slide_qc(empty, np.zeros_like(tissue), 8.0, math.nan, CFG)
    assert blank.qc_flag == f"{NO_TISSUE};{NO_FIBRES}" and math.isnan(blank.qc_rejected_fraction)
    assert set(blank.record()) == {"qc_flag", "qc_tissue_fraction", "qc_membrane_contrast", "qc_focus",
                                   "qc_rejected_fraction"}


def test_a_flagged_slide_has_no_analysable_fibre_and_keeps_its_reasons(section):
    curated = _curated(_measured_on(section.image, section.fibres, list(section.channel_names)))
    rejected = reject_slide(curated)
    assert (rejected["curation_class"] == "QC").all() and (rejected["confidence"] == 1.0).all()
    for before, after in zip(curated["reasons"], rejected["reasons"], strict=True):
        assert after == (f"QC;{before}" if before else "QC")
    assert curated["curation_class"].eq("AM").any()  # the input is left as it was


@pytest.mark.parametrize("n", [1, 7, 25, 10_000])
def test_tissue_picks_are_the_evenly_ranked_tissue_pixels(n):
    """The same pixels as listing every tissue pixel and taking evenly spaced ranks."""
    tissue = np.random.default_rng(3).random((300, 211)) > 0.8
    tissue[:40] = False  # empty rows first
    ys, xs = np.nonzero(tissue)
    ranks = np.unique(np.linspace(0, ys.size - 1, min(n, ys.size)).round().astype(int))
    assert tissue_picks(tissue, n) == [(int(ys[i]), int(xs[i])) for i in ranks]
    assert tissue_picks(np.zeros((5, 5), bool), n) == []
