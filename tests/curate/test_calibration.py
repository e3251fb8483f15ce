"""Isotonic calibration of rule scores: monotone, calibrated on data drawn from a known probability, saved."""

from __future__ import annotations

import numpy as np

from nclsm_scale.curate.calibration import Calibration, fit_isotonic


def test_isotonic_fit_is_monotone_and_recovers_a_known_probability():
    rng = np.random.default_rng(0)
    score = rng.uniform(-2, 2, 20000)
    truth = 1 / (1 + np.exp(-3 * score))
    outcome = rng.random(score.size) < truth
    xs, ps = fit_isotonic(score, outcome)
    assert np.all(np.diff(ps) >= 0) and np.all(np.diff(xs) > 0)
    cal = Calibration({"NTM": (xs, ps)})
    grid = np.linspace(-1.5, 1.5, 13)
    assert np.abs(cal.probability("NTM", grid) - 1 / (1 + np.exp(-3 * grid))).max() < 0.06


def test_small_blocks_are_pooled_and_nan_scores_stay_not_judged():
    xs, ps = fit_isotonic(np.array([0.0, 1.0, 2.0, np.nan]), np.array([1, 0, 1, 1]), min_count=2)
    assert len(xs) == 1 and ps[0] == 2 / 3  # every block pooled until it holds two fibres
    cal = Calibration({"FR": (xs, ps)})
    assert np.isnan(cal.probability("FR", np.array([np.nan]))[0])
    assert cal.probability("EDGE", np.array([1.0]))[0] > 0.99  # no map: the logistic fallback


def test_a_calibration_round_trips_through_json(tmp_path):
    cal = Calibration({"FAM": (np.array([-1.0, 0.0, 1.0]), np.array([0.01, 0.4, 0.97]))})
    back = Calibration.load(cal.save(tmp_path / "c.json", fitted_on=["seed 1"]))
    assert np.allclose(back.probability("FAM", np.array([-0.5, 0.5])), [0.205, 0.685])
