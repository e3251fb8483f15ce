"""Curation rules: per-class precision/recall on synthetic ground truth, judgeability, priorities, confidence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sections import judgeable, primary_without_edge

from nclsm_scale.config import CurateConfig
from nclsm_scale.curate import curate_fibres
from nclsm_scale.curate.calibration import Calibration
from nclsm_scale.tables import PRIORITY, FibreClass

TARGETS = {"NTM": 0.9, "FR": 0.85, "FAM": 0.9}
#: Per-section regression floor (classes a section holds at least 20 of).
FLOOR = {"NTM": 0.8, "FR": 0.75, "FAM": 0.85}


def curated(section) -> pd.DataFrame:
    table, _, px = section
    return curate_fibres(table, pixel_size_um=px)


def scores(sections) -> pd.DataFrame:
    rows = []
    for k, section in enumerate(sections):
        gt = section[1]
        c = curated(section)
        pred, keep = primary_without_edge(c.reasons), judgeable(gt, c.not_judged)
        for cls in TARGETS:
            tp = int(((pred == cls) & (gt == cls) & keep).sum())
            fp = int(((pred == cls) & (gt != cls) & keep).sum())
            fn = int(((pred != cls) & (gt == cls) & keep).sum())
            rows.append(dict(section=k, cls=cls, tp=tp, fp=fp, fn=fn))
    return pd.DataFrame(rows)


def test_precision_recall_on_synthetic_ground_truth(measured_sections):
    s = scores(measured_sections)
    s = s[s.tp + s.fn >= 20].set_index(["section", "cls"])
    precision, recall = s.tp / (s.tp + s.fp), s.tp / (s.tp + s.fn)
    for (section, cls), floor in ((k, FLOOR[k[1]]) for k in s.index):
        assert precision[section, cls] >= floor, (section, cls, precision[section, cls])
        assert recall[section, cls] >= floor, (section, cls, recall[section, cls])
    pooled = scores(measured_sections).groupby("cls")[["tp", "fp", "fn"]].sum()
    for cls, target in TARGETS.items():
        tp, fp, fn = pooled.loc[cls]
        assert tp >= 100, f"too few {cls} fibres to score"
        assert tp / (tp + fp) >= target and tp / (tp + fn) >= target, (cls, tp, fp, fn)


@pytest.mark.slow
def test_precision_recall_on_more_seeds_and_looks(more_sections):
    pooled = scores(more_sections).groupby("cls")[["tp", "fp", "fn"]].sum()
    for cls, target in TARGETS.items():
        tp, fp, fn = pooled.loc[cls]
        assert tp / (tp + fp) >= target and tp / (tp + fn) >= target, (cls, tp, fp, fn)


def test_membrane_and_myosin_stains_without_mito_judge_nf_but_not_fam(measured_sections):
    """Section 3 has membrane + MyHC channels: the brightest myosin channel is the cytoplasm (NF); FAM needs mito."""
    table, gt, px = measured_sections[3]
    has_interior = table["membrane_interior_median"].notna()
    assert "mito_interior_mean" not in table and table["cytoplasm_interior_median"][has_interior].notna().all()
    c = curate_fibres(table, pixel_size_um=px)
    assert (c["not_judged"][has_interior] == "FAM").all() and c.score_NF[has_interior].notna().all()
    assert not c.reasons.str.contains("FAM").any()


def test_reasons_without_their_evidence_are_not_judged(measured_sections):
    table, gt, px = measured_sections[0]
    bare = table.assign(cytoplasm_interior_median=np.nan, hole_fraction=np.nan, hole_count=0).drop(
        columns=[c for c in table.columns if c.startswith("mito_")])
    c = curate_fibres(bare, pixel_size_um=px)
    assert (c["not_judged"] == "NF;FAM").all()
    assert not c.reasons.str.contains("FAM|NF").any() and c.score_FAM.isna().all()
    coarse = curate_fibres(table, pixel_size_um=3.6)  # holes and sarcolemma lines are not resolved
    assert coarse["not_judged"].str.contains("FAM").all() and not coarse.reasons.str.contains("FAM").any()
    fr = coarse.reasons.str.contains("FR").to_numpy()
    assert np.array_equal(fr, table.fold_fraction.to_numpy() >= 0.3)  # the fold alone decides


def test_without_a_membrane_channel_the_fold_alone_decides_fr(measured_sections):
    table, _, px = measured_sections[0]
    t = table.assign(interior_membrane_fraction=np.nan)
    c = curate_fibres(t, pixel_size_um=px)
    fr = c.reasons.str.contains("FR").to_numpy()
    assert np.array_equal(fr, t.fold_fraction.to_numpy() >= 0.3) and fr.any()


def test_objects_without_fibre_cytoplasm_are_not_fibres(measured_sections):
    table, _, px = measured_sections[0]
    t = table.copy()
    dark = t.index[:5]
    t.loc[dark, "cytoplasm_interior_median"] = 0.01 * t["cytoplasm_interior_median"].median()  # interstitium
    c = curate_fibres(t, pixel_size_um=px)
    assert (c.loc[dark, "curation_class"] == "NF").all() and (c.loc[dark, "cytoplasm_rel"] < 0.15).all()
    assert (c.drop(index=dark)["curation_class"] != "NF").mean() > 0.99


def test_edge_only_at_image_or_tissue_border(measured_sections):
    for table, _, px in measured_sections:
        c = curate_fibres(table, pixel_size_um=px)
        edge = c.reasons.str.split(";").map(lambda r: "EDGE" in r).to_numpy(bool)
        assert edge[c.touches_image_border.to_numpy(bool)].all()
        assert edge[table.attrs["far_from_border"]].mean() <= 0.01
        assert edge.sum() <= 1.7 * c.touches_image_border.sum()  # few fibres on the outline


def test_classes_follow_priority_and_confidence_is_a_probability(measured_sections):
    c = curated(measured_sections[0])
    assert set(c.curation_class) <= {r.value for r in FibreClass}
    order = [r.value for r in PRIORITY]
    for cls, reasons in zip(c.curation_class, c.reasons, strict=True):
        codes = reasons.split(";") if reasons else []
        assert codes == sorted(codes, key=order.index)
        assert cls == (codes[0] if codes else "AM")
    assert (c.curation_class == "AM").mean() > 0.3
    edge = (c.touches_image_border | c.touches_tissue_border) & (c.area_um2 >= 150) & (c.curation_class != "NF")
    assert ((c.curation_class == "EDGE") == edge).all()
    assert c.confidence.between(0.0, 1.0).all()


def test_thresholds_come_from_config(measured_sections):
    table, _, px = measured_sections[0]
    none = curate_fibres(
        table,
        CurateConfig(
            ntm_min_aspect_ratio=20.0, ntm_cut_field_aspect_ratio=20.0, fam_min_holes=1000, fr_method="rules",
            fr_min_interior_membrane=1.0, fr_min_interior_membrane_in_fold=1.0, fr_min_fold_fraction=1.0,
            edge_image_border=False, edge_tissue_border=False, debris_max_um2=0.0, nf_max_cytoplasm=1e-6,
        ),
        pixel_size_um=px,
    )
    assert (none.curation_class == "AM").all()


def test_ntm_is_elongation_against_the_slides_transverse_fibres(measured_sections):
    table, _, px = measured_sections[0]
    base = curate_fibres(table, pixel_size_um=px)
    am: list[int] = []  # three analysable fibres far apart (outside each other's neighbourhood)
    xy = table[["centroid_y_um", "centroid_x_um"]].to_numpy()
    for i in np.flatnonzero((base.curation_class.to_numpy() == "AM") & ~table.touches_image_border.to_numpy()):
        if len(am) < 3 and all(np.hypot(*(xy[i] - xy[j])) > 500.0 for j in am):
            am.append(i)
    t = table.copy()
    t["ellipse_aspect_ratio"], t["orientation_deg"] = 1.2, 0.0  # transverse fibres, a little elongated
    t.loc[t.index[am], "ellipse_aspect_ratio"] = [1.6, 2.0, 2.4]  # round / elongated / clearly elongated
    c = curate_fibres(t, pixel_size_um=px).iloc[am]
    threshold = 1.45 * 1.2  # ntm_relative_aspect_ratio x the transverse reference
    assert c.relative_aspect_ratio.tolist() == pytest.approx([1.6 / 1.2, 2.0 / 1.2, 2.4 / 1.2])
    assert list(c.curation_class) == ["AM", "NTM", "NTM"] and 2.0 >= threshold
    assert c.confidence.iloc[1] <= c.confidence.iloc[2]


def test_a_fibre_cut_by_the_image_border_is_ntm_by_its_neighbourhood_only(measured_sections):
    table, _, px = measured_sections[0]
    t = table.copy()
    t["ellipse_aspect_ratio"], t["orientation_deg"] = 1.0, 0.0
    cut = t.touches_image_border.to_numpy()
    t.loc[cut, "ellipse_aspect_ratio"] = 5.0  # slivers: their shape must not make a field or NTM
    c = curate_fibres(t, pixel_size_um=px)
    assert c.field_aspect_ratio.max() == pytest.approx(1.0) and not c.reasons.str.contains("NTM").any()
    t.loc[~cut, "ellipse_aspect_ratio"] = 2.0
    t.loc[cut, "ellipse_aspect_ratio"] = 1.0  # round in an oblique field: the field decides
    c = curate_fibres(t, pixel_size_um=px)
    assert c.reasons[cut].str.contains("NTM").all() and c.reasons[cut].str.contains("EDGE").all()


@pytest.mark.parametrize("value, expected", [(100.0, "DEBRIS"), (5000.0, "AM")])
def test_debris_by_area(measured_sections, value, expected):
    table, _, px = measured_sections[0]
    i = np.flatnonzero(curate_fibres(table, pixel_size_um=px).curation_class.to_numpy() == "AM")[0]
    t = table.copy()
    t.loc[t.index[i], "area_um2"] = value
    assert curate_fibres(t, pixel_size_um=px).curation_class.iloc[i] == expected


def test_confidence_of_a_rejection_is_its_reasons_calibrated_probability(measured_sections):
    table, _, px = measured_sections[0]
    xs = np.array([-1.0, 0.0, 1.0])
    cal = Calibration({"NTM": (xs, np.array([0.0, 0.6, 0.9])), "FR": (xs, np.array([0.0, 0.5, 0.8])),
                       "FAM": (xs, np.array([0.0, 0.5, 0.95]))})
    c = curate_fibres(table, pixel_size_um=px, calibration=cal)
    ntm = c[c.curation_class == "NTM"]
    assert np.allclose(ntm.confidence, cal.probability("NTM", ntm.score_NTM.to_numpy()))
    am = c[c.curation_class == "AM"]
    expected = np.prod([1 - cal.probability(r, am[f"score_{r}"].to_numpy()) for r in ("FR", "FAM", "NTM")], axis=0)
    expected *= 1 - cal.probability("NF", am["score_NF"].to_numpy())  # NF: the uncalibrated logistic
    expected *= 1 - cal.probability("DEBRIS", am["score_DEBRIS"].to_numpy())
    expected *= 1 - cal.probability("EDGE", am["score_EDGE"].to_numpy())
    assert np.allclose(am.confidence, expected)
