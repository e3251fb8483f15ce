"""The FR model: exported trees predict as scikit-learn does, neighbour references, and its place in curation."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from nclsm_scale.config import CurateConfig
from nclsm_scale.curate import curate_fibres, fr_model
from nclsm_scale.curate.fr_model import FEATURES, TreeEnsemble, fr_features, neighbour_ratio


@pytest.fixture(scope="module")
def fitted():
    """A small boosted model on data with NaNs (the third feature is never missing while training)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 4))
    y = (x[:, 0] + 0.5 * x[:, 1] ** 2 - x[:, 2] > 0.3) | (rng.random(600) < 0.05)
    x[rng.random(600) < 0.1, 0] = np.nan
    x[rng.random(600) < 0.1, 3] = np.nan
    model = HistGradientBoostingClassifier(max_depth=3, max_iter=40, early_stopping=False, random_state=0).fit(x, y)
    test = rng.normal(size=(500, 4))
    test[rng.random(500) < 0.2, 0] = np.nan
    test[rng.random(500) < 0.2, 2] = np.nan
    test[:5, 1] = model._bin_mapper.bin_thresholds_[1][:5]  # values on split thresholds go left
    return model, test


def test_exported_trees_predict_as_sklearn(fitted, tmp_path):
    model, test = fitted
    ens = TreeEnsemble.from_sklearn(model, ("a", "b", "c", "d"), 0.5, note="test")
    np.testing.assert_allclose(ens.probability(test), model.predict_proba(test)[:, 1], rtol=0, atol=1e-12)
    assert np.array_equal(ens.raw(test) >= 0, model.predict(test))
    again = TreeEnsemble.load(ens.save(tmp_path / "m.json"))
    assert np.array_equal(again.raw(test), ens.raw(test)) and again.about == {"note": "test"}
    assert again.features == ("a", "b", "c", "d") and again.threshold == 0.5


def test_predictions_do_not_depend_on_the_block(fitted, monkeypatch):
    model, test = fitted
    ens = TreeEnsemble.from_sklearn(model, ("a", "b", "c", "d"), 0.3)
    whole = ens.raw(test)
    monkeypatch.setattr(fr_model, "_BLOCK", 7)
    assert np.array_equal(ens.raw(test), whole)
    t = np.log(0.3 / 0.7)
    assert np.array_equal(ens.score(test) >= 0, whole >= t)


def test_neighbour_ratio_is_the_value_over_the_median_of_the_k_nearest_usable_others(monkeypatch):
    rng = np.random.default_rng(5)
    n, k = 300, 12
    table = pd.DataFrame({"centroid_y_um": rng.uniform(0, 500, n), "centroid_x_um": rng.uniform(0, 500, n),
                          "v": rng.uniform(1, 2, n)})
    table.loc[rng.random(n) < 0.15, "v"] = np.nan
    use = rng.random(n) < 0.6
    xy = table[["centroid_y_um", "centroid_x_um"]].to_numpy()
    v = table["v"].to_numpy()
    expected = np.full(n, np.nan)
    for i in range(n):
        d = np.hypot(*(xy - xy[i]).T)
        d[i] = np.inf
        near = np.argsort(d)[:k]
        vals = v[near][use[near] & np.isfinite(v[near])]
        if vals.size >= 4:
            expected[i] = v[i] / np.median(vals)
    np.testing.assert_array_equal(neighbour_ratio(table, ["v"], k, use)["v"], expected)
    monkeypatch.setattr(fr_model, "_BLOCK", 17)
    np.testing.assert_array_equal(neighbour_ratio(table, ["v"], k, use)["v"], expected)
    assert np.isnan(neighbour_ratio(table.iloc[:1], ["v"], k, use[:1])["v"]).all()


def test_features_compare_with_neighbours_outside_folds(measured_sections):
    table, _, _ = measured_sections[0]
    f = fr_features(table, CurateConfig())
    assert list(f.columns) == list(FEATURES) and f.index.equals(table.index)
    plain = (table.fold_fraction < 0.3) & table.membrane_interior_median.notna()
    assert 0.8 < f.loc[plain, "membrane_interior_rel"].median() < 1.25  # plain tissue: like its neighbours
    folded = (table.fold_fraction > 0.8) & table.membrane_interior_median.notna()
    assert folded.sum() >= 10
    assert f.loc[folded, "membrane_interior_rel"].median() > 1.3  # under a second layer: brighter
    assert f.loc[folded, "membrane_interior_p75_rel"].median() > 1.3
    assert (f["membrane_interior_p75_over_median"].dropna() >= 1.0).all()  # the 75th percentile is above the median


def test_fr_method_rules_is_the_rule_and_the_model_is_the_default(measured_sections):
    table, gt, px = measured_sections[0]
    strict = dict(fr_min_interior_membrane=1.0, fr_min_interior_membrane_in_fold=1.0, fr_min_fold_fraction=1.0)
    rules = curate_fibres(table, CurateConfig(fr_method="rules", **strict), pixel_size_um=px)
    assert not rules.reasons.str.contains("FR").any()  # the rules' thresholds decide
    model = curate_fibres(table, pixel_size_um=px)
    fr = model.reasons.str.contains("FR").to_numpy()
    assert fr.sum() >= 20 and (gt[fr] == "FR").mean() >= 0.85
    bundled = TreeEnsemble.bundled()
    assert bundled is not None and bundled.features == FEATURES and 0.0 < bundled.threshold < 1.0
    x = fr_features(table, CurateConfig()).to_numpy(np.float64)
    judged = table.interior_membrane_fraction.notna().to_numpy()
    assert np.array_equal(model.score_FR.to_numpy()[judged], bundled.score(x)[judged])


def test_without_a_bundled_model_the_rules_decide_with_a_warning(measured_sections, monkeypatch, tmp_path, caplog):
    table, _, px = measured_sections[0]
    monkeypatch.setattr(fr_model, "BUNDLED", tmp_path / "absent.json")
    with caplog.at_level(logging.WARNING, logger="nclsm_scale.curate.rules"):
        c = curate_fibres(table, pixel_size_um=px)
    assert "no bundled FR model" in caplog.text
    rules = curate_fibres(table, CurateConfig(fr_method="rules"), pixel_size_um=px)
    assert np.array_equal(c.score_FR.to_numpy(), rules.score_FR.to_numpy(), equal_nan=True)
