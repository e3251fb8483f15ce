"""Fibre typing: synthetic slides with known types, invariance, fallbacks, and the real FiberSight image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from skimage.morphology import disk

from nclsm_scale.aggregate import type_summary
from nclsm_scale.curate.types import TYPE_ISOFORMS, TYPE_ROLES, call_fibre_types
from nclsm_scale.tables import FIBRE_TYPES

ROLES = tuple(TYPE_ROLES)
#: Typical human vastus lateralis, with a few hybrids of each kind.
HUMAN = {"I": 0.45, "IIa": 0.33, "IIx": 0.12, "I/IIa": 0.05, "IIa/IIx": 0.05}
NO_IIX = {"I": 0.5, "IIa": 0.47, "I/IIa": 0.03}
SEEDS = (0, 1, 2)


def make_slide(
    n: int,
    shares: dict[str, float],
    *,
    seed: int,
    fold: float = 10.0,
    sigma_log: float = 0.3,
    neg_cv: float = 0.5,
    scales: tuple[float, float, float] = (1.0, 100.0, 0.5),
    roles: tuple[str, ...] = ROLES,
    unstained: tuple[str, ...] = (),
    autofluorescence: dict[str, float] | None = None,
    spill: dict[tuple[str, str], float] | None = None,
    outlier_share: float = 0.0,
    nan_share: float = 0.0,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """A slide's interior means with known types: (intensity, true type, fibres to score).

    Positive fibres are log-normal around 1000 (log-SD ``sigma_log``; hybrids at
    0.5-1 x that in both channels); negatives normal around ``1000 / fold`` with
    CV ``neg_cv`` (some below zero, as after background subtraction). Each
    channel is then scaled (``scales``: brightness differing 200x between
    channels). ``unstained`` channels hold negatives only; ``autofluorescence``
    multiplies the negatives of type-I fibres; ``spill[a, b]`` adds that share of
    channel a's signal (in b's positive units) to b. Outliers (one channel x 30 or
    x -5) and NaN rows are not scored.
    """
    rng = np.random.default_rng(seed)
    counts = np.floor(np.array(list(shares.values())) * n).astype(int)
    counts[0] += n - counts.sum()
    truth = rng.permutation(np.repeat(list(shares), counts))
    hybrid = np.array([len(TYPE_ISOFORMS[t]) > 1 for t in truth])
    x = {}
    for role in ROLES:
        stained = np.array([TYPE_ROLES[role] in TYPE_ISOFORMS[t] for t in truth]) & (role not in unstained)
        level = 1000.0 * rng.lognormal(0.0, sigma_log, n) * np.where(hybrid, rng.uniform(0.5, 1.0, n), 1.0)
        negative = 1000.0 / fold * (1.0 + neg_cv * rng.standard_normal(n))
        negative *= np.where(truth == "I", (autofluorescence or {}).get(role, 1.0), 1.0)
        x[role] = np.where(stained, level, negative)
    for (a, b), s in (spill or {}).items():
        x[b] = x[b] + s * x[a]
    table = pd.DataFrame({r: x[r] * scales[ROLES.index(r)] for r in roles}, index=np.arange(100, 100 + n))
    scored = np.ones(n, bool)
    for i in rng.choice(n, int(outlier_share * n), replace=False):
        table.iloc[i, rng.integers(len(roles))] *= rng.choice([30.0, -5.0])
        scored[i] = False
    rows = rng.choice(n, int(nan_share * n), replace=False)
    table.iloc[rows] = np.nan
    scored[rows] = False
    return table, truth, scored


def expected_calls(truth: np.ndarray, roles) -> np.ndarray:
    """What a perfect caller returns with only ``roles`` stained (types merged or unclassified)."""
    present = frozenset(TYPE_ROLES[r] for r in roles)
    name = {t: next((u for u, s in TYPE_ISOFORMS.items() if s == iso & present), "unclassified")
            for t, iso in TYPE_ISOFORMS.items()}
    return np.array([name[t] for t in truth])


#: Scenario -> (make_slide arguments, least accuracy on every seed). "Separable" populations:
#: positives log-normal (log-SD 0.3) around >= 6 x the negatives' mean, negatives' CV 0.5.
#: Everywhere at most 2 % of the fibres get a wrong type (errors are "unclassified"), 5 % at fold 4.
SCENARIOS: dict[str, tuple[dict, float]] = {
    "human, 3 channels, 200x brightness range": (dict(n=300, shares=HUMAN), 0.95),
    "fold 6 between positive and negative": (dict(n=300, shares=HUMAN, fold=6.0), 0.95),
    "no IIx fibres (IIx channel unstained)": (dict(n=300, shares=NO_IIX, unstained=("myh2x",)), 0.95),
    "no IIx fibres, type I autofluorescent in IIx": (
        dict(n=300, shares=NO_IIX, unstained=("myh2x",), autofluorescence={"myh2x": 1.6}), 0.95),
    "92 % IIa (IIa nearly all positive)": (dict(n=300, shares={"IIa": 0.92, "I": 0.08}), 0.95),
    "5 % IIx": (dict(n=300, shares={"I": 0.5, "IIa": 0.45, "IIx": 0.05}), 0.95),
    "20 % I/IIa hybrids": (dict(n=300, shares={"I": 0.35, "IIa": 0.35, "I/IIa": 0.2, "IIx": 0.1}), 0.95),
    "every I fibre an I/IIa hybrid": (dict(n=300, shares={"I/IIa": 0.4, "IIa": 0.4, "IIx": 0.2}), 0.95),
    "I and IIa channels only": (dict(n=300, shares=HUMAN, roles=("myh1", "myh2a")), 0.95),
    "IIa and IIx channels only": (dict(n=300, shares=HUMAN, roles=("myh2a", "myh2x")), 0.95),
    "15 fibres": (dict(n=15, shares={"I": 0.4, "IIa": 0.4, "IIx": 0.2}), 0.9),
    "15 fibres, no IIx": (dict(n=15, shares={"I": 0.4, "IIa": 0.6}, unstained=("myh2x",)), 0.9),
    "5 % NaN fibres": (dict(n=300, shares=HUMAN, nan_share=0.05), 0.95),
    "3 % outliers": (dict(n=300, shares=HUMAN, outlier_share=0.03), 0.95),
    "30 % spillover I -> IIa": (dict(n=300, shares=HUMAN, spill={("myh1", "myh2a"): 0.3}), 0.95),
    "fold 4 (overlapping tails)": (dict(n=300, shares=HUMAN, fold=4.0, sigma_log=0.35), 0.7),
}


@pytest.fixture(scope="module")
def runs() -> dict[str, list[tuple[pd.DataFrame, np.ndarray, np.ndarray, object]]]:
    """Every scenario on every seed: (intensity, expected call, scored, result)."""
    out = {}
    for name, (kw, _) in SCENARIOS.items():
        out[name] = []
        for seed in SEEDS:
            table, truth, scored = make_slide(seed=seed, **kw)
            out[name].append((table, expected_calls(truth, table.columns), scored, call_fibre_types(table)))
    return out


@pytest.mark.parametrize("name", SCENARIOS)
def test_accuracy_per_scenario(runs, name):
    # Measured (3 seeds, worst): >= 0.986 in every separable scenario but fold 6 (0.96) and 15 fibres
    # without IIx (0.93: one fibre unclassified); fold 4: 0.81 (17 % unclassified, 3.3 % wrong types).
    for _, expected, scored, result in runs[name]:
        called = result.fibre_type.to_numpy()
        accuracy = (called == expected)[scored].mean()
        assert accuracy >= SCENARIOS[name][1], (name, accuracy, result.notes)
        wrong_type = ((called != expected) & (called != "unclassified"))[scored].mean()
        assert wrong_type <= (0.05 if "fold 4" in name else 0.02), (name, wrong_type)


def test_confidence_is_calibrated(runs):
    # Typed fibres (unclassified is no call). Measured: 99.9 % of the 11,490 fibres typed with
    # confidence >= 0.9 are right, pooled; >= 98.8 % in every scenario (the least: fold 4).
    pooled = []
    for name, slides in runs.items():
        conf = np.concatenate([r.type_confidence.to_numpy()[s] for _, _, s, r in slides])
        right = np.concatenate([(r.fibre_type.to_numpy() == e)[s] for _, e, s, r in slides])
        typed = np.concatenate([(r.fibre_type.to_numpy() != "unclassified")[s] for _, _, s, r in slides])
        assert np.all((conf >= 0) & (conf <= 1))
        confident = typed & (conf >= 0.9)
        if confident.sum() >= 20:
            assert right[confident].mean() >= 0.95, (name, right[confident].mean())
        pooled.append(right[confident])
    assert np.concatenate(pooled).mean() >= 0.98


def test_scaling_a_channel_changes_no_call():
    table, _, _ = make_slide(300, HUMAN, seed=5, spill={("myh1", "myh2a"): 0.3})
    base = call_fibre_types(table)
    for role in ROLES:
        for factor in (1e-3, 7.3, 1e3):
            scaled = table.assign(**{role: table[role] * factor})
            result = call_fibre_types(scaled)
            pd.testing.assert_series_equal(result.fibre_type, base.fibre_type)
            np.testing.assert_allclose(result.type_confidence, base.type_confidence, atol=1e-9)
            assert result.channels[role].threshold == pytest.approx(base.channels[role].threshold * factor)


def test_absent_isoform_is_negative_not_split(runs):
    for name in ("no IIx fibres (IIx channel unstained)", "no IIx fibres, type I autofluorescent in IIx"):
        for *_, result in runs[name]:
            fit = result.channels["myh2x"]
            assert fit.method == "unimodal: all negative" and not fit.bimodal and np.isnan(fit.threshold)
            assert (result.positive_probability["myh2x"] == 0).all()
            assert "IIx" not in set(result.fibre_type)


def test_channel_fits_report_threshold_and_share(runs):
    table, expected, _, result = runs["human, 3 channels, 200x brightness range"][0]
    for role, fit in result.channels.items():
        assert fit.bimodal and fit.method == "mixture" and fit.n_fit == len(table)
        true_share = np.mean([TYPE_ROLES[role] in TYPE_ISOFORMS.get(t, ()) for t in expected])
        assert fit.positive_share == pytest.approx(true_share, abs=0.02)
        negative = table[role][result.positive_probability[role] < 0.5]
        positive = table[role][result.positive_probability[role] >= 0.5]
        assert negative.max() < fit.threshold < positive.min()
        assert fit.description.startswith(f"MyHC {TYPE_ROLES[role]} ({role}): mixture")


def test_missing_channel_merges_types_and_says_so(runs):
    *_, result = runs["I and IIa channels only"][0]
    assert result.callable_types == ("I", "IIa", "I/IIa")
    assert "IIa includes IIa/IIx (no channel for the isoform that tells them apart)" in result.notes
    assert any(n.startswith("IIx: not callable") for n in result.notes)
    *_, result = runs["IIa and IIx channels only"][0]
    assert result.callable_types == ("IIa", "IIx", "IIa/IIx")
    assert "IIa includes I/IIa (no channel for the isoform that tells them apart)" in result.notes


def test_few_fibres_use_shared_width_and_too_few_are_unclassified(runs):
    for *_, result in runs["15 fibres"]:
        assert {f.method for f in result.channels.values()} == {"mixture, shared width (few fibres)"}
    table, _, _ = make_slide(5, {"I": 0.6, "IIa": 0.4}, seed=0)
    result = call_fibre_types(table)
    assert (result.fibre_type == "unclassified").all()
    assert result.positive_probability.isna().all().all()
    assert all(f.method == "too few fibres" for f in result.channels.values())
    assert len(result.notes) == 3


@pytest.mark.parametrize("seed", SEEDS)
def test_overlapping_populations_leave_fibres_unclassified_not_mistyped(seed):
    # Positives only 2.5 x the negatives (log-SD 0.35): the populations overlap (D < 2).
    # Measured (3 seeds): 18-45 % of the fibres typed, 2-8 % of those wrongly (0.3-3.7 % of all).
    table, truth, _ = make_slide(300, HUMAN, seed=seed, fold=2.5, sigma_log=0.35)
    result = call_fibre_types(table)
    assert any("overlapping" in f.method for f in result.channels.values())
    assert any("overlapping" in n for n in result.notes)
    called = result.fibre_type.to_numpy()
    typed = called != "unclassified"
    wrong = called != expected_calls(truth, ROLES)
    assert typed.mean() <= 0.6 and wrong[typed].mean() <= 0.12 and (wrong & typed).mean() <= 0.05


def test_a_muscle_of_one_type():
    # I and IIa stained; every fibre type I, 10 % I/IIa: the unimodal I channel is positive everywhere.
    table, truth, _ = make_slide(200, {"I": 0.9, "I/IIa": 0.1}, seed=0, roles=("myh1", "myh2a"))
    result = call_fibre_types(table)
    assert result.channels["myh1"].method == "unimodal: all positive"
    assert (result.fibre_type.to_numpy() == truth).mean() >= 0.95
    # With IIx stained too, I or IIx could be the one expressed everywhere: undecided, all unclassified.
    table, _, _ = make_slide(200, {"I": 0.9, "I/IIa": 0.1}, seed=0)
    result = call_fibre_types(table)
    assert result.channels["myh1"].method == result.channels["myh2x"].method == "unimodal: all undecided"
    assert (result.fibre_type == "unclassified").all()


def test_nan_fibres_and_columns():
    table, truth, scored = make_slide(300, HUMAN, seed=0, nan_share=0.05)
    table["myh2x"] = np.nan
    result = call_fibre_types(table)
    assert (result.fibre_type[~scored] == "unclassified").all() and (result.type_confidence[~scored] == 0).all()
    assert result.positive_probability[~scored].isna().all().all()
    assert "myh2x: no finite value, treated as absent" in result.notes
    assert result.callable_types == ("I", "IIa", "I/IIa")
    assert (result.fibre_type.to_numpy() == expected_calls(truth, ("myh1", "myh2a")))[scored].mean() >= 0.95
    # A fibre unmeasured in one deciding channel only is uncertain there.
    one = make_slide(300, HUMAN, seed=1)[0]
    one.iloc[0, 1] = np.nan
    result = call_fibre_types(one)
    assert result.fibre_type.iloc[0] == "unclassified"


def test_spillover_is_subtracted(runs):
    for table, expected, scored, result in runs["30 % spillover I -> IIa"]:
        fit = result.channels["myh2a"]
        assert set(fit.spillover) == {"myh1"}
        assert fit.spillover["myh1"] == pytest.approx(0.3 * 100.0, rel=0.2)  # x 100: IIa's scale over I's
        naive = call_fibre_types(table, spillover=False).fibre_type.to_numpy()
        assert (naive == expected)[scored].mean() < 0.95  # type I fibres become I/IIa hybrids
    for name in ("20 % I/IIa hybrids", "every I fibre an I/IIa hybrid", "human, 3 channels, 200x brightness range"):
        for *_, result in runs[name]:
            assert not any(f.spillover for f in result.channels.values()), name  # co-expression stays


def test_fit_mask_keeps_debris_out_of_the_fit():
    table, truth, _ = make_slide(300, HUMAN, seed=3)
    rng = np.random.default_rng(3)
    debris = pd.DataFrame(rng.uniform(5, 40, (30, 3)) * table.median().to_numpy(), columns=list(ROLES))
    both = pd.concat([table, debris], ignore_index=True)
    fit = np.r_[np.ones(len(table), bool), np.zeros(len(debris), bool)]
    result = call_fibre_types(both, fit_mask=fit)
    assert all(f.n_fit == len(table) for f in result.channels.values())
    assert (result.fibre_type.to_numpy()[: len(table)] == expected_calls(truth, ROLES)).mean() >= 0.95
    assert result.fibre_type.isin(FIBRE_TYPES).all() and len(result.fibre_type) == len(both)
    assert (result.fibre_type.to_numpy()[len(table):] == "unclassified").all()  # bright in every channel


def test_table_and_input_errors(runs):
    table, _, _, result = runs["human, 3 channels, 200x brightness range"][0]
    out = result.table()
    assert list(out.columns) == ["fibre_type", "type_confidence"] + [f"{r}_positive_probability" for r in ROLES]
    assert out.index.equals(table.index)
    with pytest.raises(ValueError, match="no fibre-type channel"):
        call_fibre_types(pd.DataFrame({"membrane": [1.0, 2.0]}))
    with pytest.raises(ValueError, match="fit_mask"):
        call_fibre_types(table, fit_mask=np.ones(3, bool))


def test_type_summary():
    types = pd.Series(["I", "I", "IIa", "I/IIa", "unclassified"], index=[5, 6, 7, 8, 9])
    area = pd.Series({5: 4000.0, 6: 5000.0, 7: 6000.0, 8: np.nan, 9: 100.0}).iloc[::-1]  # aligned by index
    s = type_summary(types, area)
    assert s["n_typed"] == 4
    assert (s["type_I_n"], s["type_I_pct"], s["type_I_csa_um2_mean"], s["type_I_csa_um2_median"]) == (
        2, 50.0, 4500.0, 4500.0)
    assert (s["type_IIa_n"], s["type_IIa_pct"], s["type_IIa_csa_um2_mean"]) == (1, 25.0, 6000.0)
    assert s["type_I_IIa_n"] == 1 and np.isnan(s["type_I_IIa_csa_um2_mean"])  # its only area is NaN
    assert s["type_IIx_n"] == 0 and s["type_IIx_pct"] == 0 and np.isnan(s["type_IIx_csa_um2_median"])
    assert s["type_unclassified_pct"] == 20.0 and s["type_unclassified_csa_um2_mean"] == 100.0
    assert len(s) == 1 + 4 * len(FIBRE_TYPES)
    assert np.isnan(type_summary(pd.Series(["unclassified"]), pd.Series([1.0]))["type_I_pct"])
    with pytest.raises(ValueError, match="unknown fibre types"):
        type_summary(pd.Series(["I", "IIb"]), pd.Series([1.0, 2.0]))


# --- The real FiberSight image -------------------------------------------------------------------

REAL = Path("/work/shared/data/real/fibersight-human")

#: Our visual reading of skm_hs_cw.tif, fibre label -> type: NOT published ground truth. Read from
#: per-fibre crops of each channel at one display range per channel and an RGB composite. Type I
#: fibres are bright in MyHC I and dark in IIx; their IIa signal is clearly dimmer than that of the
#: IIa-bright fibres (and about a constant 0.18 x their MyHC I signal: bleed-through or
#: cross-reactivity), so we read them as I, not I/IIa. The IIx channel is as bright in the
#: IIa-bright fibres as in the IIa-dark ones, so by the stated channel roles the IIa-bright fibres
#: are IIa/IIx and the IIa-dark ones IIx. (Half the fibres being IIa/IIx is unusual biology: if
#: this IIx antibody also binds IIa myosin, those fibres are IIa; the image cannot tell.)
#: Fibre 48 (bottom-right corner, odd texture, dim grey in MyHC I) is IIx with low certainty.
VISUAL_READING = {
    "I": [6, 11, 12, 24, 32, 49],
    "IIa/IIx": [1, 2, 10, 14, 15, 16, 17, 18, 21, 22, 23, 26, 29, 30, 31, 34, 35, 36, 40, 43, 44, 46, 47, 50,
                55, 56],
    "IIx": [3, 4, 5, 7, 8, 9, 13, 19, 20, 25, 27, 28, 33, 37, 38, 39, 41, 42, 45, 48, 51, 52, 53, 54],
}


def interior_means(image: np.ndarray, labels: np.ndarray, erode_px: int = 2, percentile: float = 5.0) -> pd.DataFrame:
    """Per label and MyHC channel (first three planes): interior mean minus the background.

    The interior is the label eroded by ``erode_px`` (pixels within that distance of
    another label or the background are dropped); the background is the
    ``percentile`` of the unlabelled pixels.
    """
    footprint = disk(erode_px)
    same = ndimage.minimum_filter(labels, footprint=footprint) == ndimage.maximum_filter(labels, footprint=footprint)
    interior = np.where(same, labels, 0)
    ids = np.unique(labels[labels > 0])
    unlabelled = labels == 0
    return pd.DataFrame(
        {
            role: np.asarray(ndimage.mean(image[c], interior, ids)) - np.percentile(image[c][unlabelled], percentile)
            for c, role in enumerate(ROLES)
        },
        index=pd.Index(ids, name="fibre_id"),
    )


@pytest.mark.skipif(not REAL.is_dir(), reason=f"real FiberSight image not available ({REAL} is missing)")
def test_real_fibersight_image_agrees_with_visual_reading():
    import tifffile

    image = tifffile.imread(REAL / "skm_hs_cw.tif").astype(np.float64)
    labels = tifffile.imread(REAL / "skm_hs_cw_labels.tif").astype(np.int64)
    result = call_fibre_types(interior_means(image, labels))
    reading = pd.Series({i: t for t, ids in VISUAL_READING.items() for i in ids}).sort_index()
    assert reading.index.equals(result.fibre_type.index)
    agreement = (result.fibre_type == reading).mean()
    assert agreement >= 0.9, pd.DataFrame({"visual": reading, "called": result.fibre_type})[
        result.fibre_type != reading
    ]
    # Measured: 56 / 56 (also with 1-5 px erosion and background percentiles 1-25); every channel
    # bimodal. It rests on the spillover step: 0.11 x MyHC I is subtracted from IIa; without it the
    # six type I fibres are called I/IIa (50 / 56 = 0.89).
    assert all(f.bimodal for f in result.channels.values())
    assert set(result.channels["myh2a"].spillover) == {"myh1"}
