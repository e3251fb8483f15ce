"""Curation rules: per-class precision/recall on synthetic ground truth, priorities, confidence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nclsm_scale.config import CurateConfig
from nclsm_scale.curate import curate_fibres
from nclsm_scale.tables import PRIORITY, FibreClass

TARGETS = {"NTM": 0.9, "FR": 0.9, "FAM": 0.8}
#: Per-section regression floor (each of the four sections; pooled they meet TARGETS:
#: NTM P 0.94 R 0.91, FR P 0.92 R 0.94, FAM P 0.99 R 0.98). Worst section now: NTM R 0.85
#: (seed 4, dim), FR P 0.88 (seed 3), FR R 0.87 (seed 2), FAM R 0.97.
FLOOR = {"NTM": 0.8, "FR": 0.8, "FAM": 0.9}


def primary_without_edge(reasons: pd.Series) -> np.ndarray:
    """The first reason other than EDGE (the synthetic ground truth has no EDGE class)."""
    return np.array(
        [next((r for r in cell.split(";") if r and r != "EDGE"), "AM") for cell in reasons]
    )


def scores(measured_sections) -> pd.DataFrame:
    rows = []
    for k, (table, gt) in enumerate(measured_sections):
        pred = primary_without_edge(curate_fibres(table).reasons)
        keep = gt != "DEBRIS"
        for cls in TARGETS:
            tp = int(((pred == cls) & (gt == cls) & keep).sum())
            fp = int(((pred == cls) & (gt != cls) & keep).sum())
            fn = int(((pred != cls) & (gt == cls) & keep).sum())
            rows.append(dict(section=k, cls=cls, tp=tp, fp=fp, fn=fn))
    return pd.DataFrame(rows)


def test_precision_recall_on_synthetic_ground_truth(measured_sections):
    s = scores(measured_sections)
    s = s[s.tp + s.fn >= 20].set_index(["section", "cls"])  # classes a section holds enough of
    precision, recall = s.tp / (s.tp + s.fp), s.tp / (s.tp + s.fn)
    for (section, cls), floor in ((k, FLOOR[k[1]]) for k in s.index):
        assert precision[section, cls] >= floor, (section, cls, precision[section, cls])
        assert recall[section, cls] >= floor, (section, cls, recall[section, cls])


def test_precision_recall_meet_targets(measured_sections):
    s = scores(measured_sections).groupby("cls")[["tp", "fp", "fn"]].sum()
    precision, recall = s.tp / (s.tp + s.fp), s.tp / (s.tp + s.fn)
    for cls, target in TARGETS.items():
        assert s.loc[cls, "tp"] >= 100, f"too few {cls} fibres to score"
        assert precision[cls] >= target and recall[cls] >= target, (cls, precision[cls], recall[cls])


@pytest.mark.slow
def test_precision_recall_on_more_seeds_and_looks(more_sections):
    s = scores(more_sections)
    pooled = s.groupby("cls")[["tp", "fp", "fn"]].sum()
    for cls, target in TARGETS.items():
        tp, fp, fn = pooled.loc[cls]
        assert tp / (tp + fp) >= target and tp / (tp + fn) >= target, (cls, tp, fp, fn)
    s = s[s.tp + s.fn >= 20]
    assert (s.tp / (s.tp + s.fp) >= 0.8).all() and (s.tp / (s.tp + s.fn) >= 0.8).all(), s


def test_without_a_membrane_channel_the_fold_alone_decides_fr(measured_sections):
    table, _ = measured_sections[0]
    t = table.assign(interior_membrane_fraction=np.nan)
    c = curate_fibres(t)
    fr = c.reasons.str.contains("FR").to_numpy()
    assert np.array_equal(fr, t.fold_fraction.to_numpy() >= 0.3) and fr.any()


def test_edge_only_at_image_or_tissue_border(measured_sections):
    for table, _ in measured_sections:
        c = curate_fibres(table)
        edge = c.reasons.str.split(";").map(lambda r: "EDGE" in r).to_numpy(bool)
        assert edge[c.touches_image_border.to_numpy(bool)].all()
        assert edge[table.attrs["far_from_border"]].mean() <= 0.01  # 1 of ~450 on seed 3
        assert edge.sum() <= 1.7 * c.touches_image_border.sum()  # few fibres on the outline


def test_am_is_most_fibres_and_classes_follow_priority(measured_sections):
    table, gt = measured_sections[0]
    c = curate_fibres(table)
    assert set(c.curation_class) <= {r.value for r in FibreClass}
    order = [r.value for r in PRIORITY]
    for cls, reasons in zip(c.curation_class, c.reasons, strict=True):
        codes = reasons.split(";") if reasons else []
        assert codes == sorted(codes, key=order.index)
        assert cls == (codes[0] if codes else "AM")
    assert (c.curation_class == "AM").mean() > 0.4
    assert (
        (c.curation_class == "EDGE")
        == (c.touches_image_border | c.touches_tissue_border) & (c.area_um2 >= 150)
    ).all()
    assert c.confidence.between(0.5, 1.0).all()


def test_thresholds_come_from_config_and_confidence_grows_with_margin(measured_sections):
    table, _ = measured_sections[0]
    none = curate_fibres(
        table,
        CurateConfig(
            ntm_min_aspect_ratio=20.0,
            ntm_min_field_aspect_ratio=20.0,
            fam_min_dark_blobs=1000,
            fr_min_interior_membrane=1.0,
            fr_min_interior_membrane_in_fold=1.0,
            edge_image_border=False,
            edge_tissue_border=False,
            debris_max_um2=0.0,
        ),
    )
    assert (none.curation_class == "AM").all()
    base = curate_fibres(table)
    am: list[int] = []  # three analysable fibres far apart (outside each other's neighbourhood)
    xy = table[["centroid_y_um", "centroid_x_um"]].to_numpy()
    for i in np.flatnonzero((base.curation_class.to_numpy() == "AM") & ~table.touches_image_border.to_numpy()):
        if len(am) < 3 and all(np.hypot(*(xy[i] - xy[j])) > 500.0 for j in am):
            am.append(i)
    t = table.copy()
    t["ellipse_aspect_ratio"], t["orientation_deg"] = 1.3, 0.0  # a coherently elongated field
    t.loc[t.index[am], "ellipse_aspect_ratio"] = [1.45, 3.0, 3.0]
    t.loc[t.index[am[2]], "orientation_deg"] = 90.0  # elongated across the field: not oblique
    c = curate_fibres(t, CurateConfig(ntm_min_field_aspect_ratio=1.2)).iloc[am]
    assert list(c.curation_class) == ["NTM", "NTM", "AM"]
    assert c.confidence.iloc[0] < c.confidence.iloc[1]
    assert c.aligned_aspect_ratio.iloc[2] == pytest.approx(1 / 3.0)


def test_a_fibre_cut_by_the_image_border_is_ntm_by_its_neighbourhood_only(measured_sections):
    table, _ = measured_sections[0]
    t = table.copy()
    t["ellipse_aspect_ratio"], t["orientation_deg"] = 1.0, 0.0
    cut = t.touches_image_border.to_numpy()
    t.loc[cut, "ellipse_aspect_ratio"] = 5.0  # slivers: their shape must not make a field
    c = curate_fibres(t)
    assert c.field_aspect_ratio.max() == pytest.approx(1.0) and not c.reasons.str.contains("NTM").any()
    t.loc[~cut, "ellipse_aspect_ratio"] = 2.0
    t.loc[cut, "ellipse_aspect_ratio"] = 1.0  # round in an oblique field: the field decides
    c = curate_fibres(t)
    assert c.reasons[cut].str.contains("NTM").all() and c.reasons[cut].str.contains("EDGE").all()


@pytest.mark.parametrize("value, expected", [(100.0, "DEBRIS"), (5000.0, "AM")])
def test_debris_by_area(measured_sections, value, expected):
    table, _ = measured_sections[0]
    i = np.flatnonzero(curate_fibres(table).curation_class.to_numpy() == "AM")[0]
    t = table.copy()
    t.loc[t.index[i], "area_um2"] = value
    assert curate_fibres(t).curation_class.iloc[i] == expected
