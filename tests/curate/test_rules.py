"""Curation rules: per-class precision/recall on synthetic ground truth, priorities, confidence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nclsm_scale.config import CurateConfig
from nclsm_scale.curate import PRIORITY, Reason, curate_fibres

TARGETS = {"NTM": 0.9, "FR": 0.9, "FAM": 0.8}
#: Regression floor over the four sections. FR and NTM are still below their targets
#: (FR P 0.79 R 0.86, NTM P 0.90 R 0.90 on these sections; see /work/notes/curate_eval.md).
FLOOR = {"NTM": 0.85, "FR": 0.75, "FAM": 0.85}


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
    s = scores(measured_sections).groupby("cls")[["tp", "fp", "fn"]].sum()
    precision, recall = s.tp / (s.tp + s.fp), s.tp / (s.tp + s.fn)
    for cls, floor in FLOOR.items():
        assert s.loc[cls, "tp"] >= 100, f"too few {cls} fibres to score"
        assert precision[cls] >= floor, (cls, precision[cls])
        assert recall[cls] >= floor, (cls, recall[cls])


@pytest.mark.xfail(reason="FR precision ~0.79 and NTM ~0.89-0.90: fold detection at low resolution "
                   "is not yet good enough (see /work/notes/curate_eval.md)", strict=False)
def test_precision_recall_meet_targets(measured_sections):
    s = scores(measured_sections).groupby("cls")[["tp", "fp", "fn"]].sum()
    precision, recall = s.tp / (s.tp + s.fp), s.tp / (s.tp + s.fn)
    for cls, target in TARGETS.items():
        assert precision[cls] >= target and recall[cls] >= target, (cls, precision[cls], recall[cls])


def test_edge_only_at_image_or_tissue_border(measured_sections):
    for table, gt in measured_sections:
        c = curate_fibres(table)
        edge = c.reasons.str.split(";").map(lambda r: "EDGE" in r).to_numpy(bool)
        assert edge[c.touches_image_border.to_numpy(bool)].all()
        assert edge[table.attrs["far_from_border"]].mean() <= 0.01  # 1 of ~450 on seed 3
        assert edge.sum() <= 1.7 * c.touches_image_border.sum()  # few fibres on the outline


def test_am_is_most_fibres_and_classes_follow_priority(measured_sections):
    table, gt = measured_sections[0]
    c = curate_fibres(table)
    assert set(c.curation_class) <= {r.value for r in Reason}
    order = [r.value for r in PRIORITY]
    for cls, reasons in zip(c.curation_class, c.reasons):
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
            fam_min_dark_blobs=1000,
            fr_min_fold_fraction=1.0,
            fr_min_membrane_ratio=20.0,
            edge_image_border=False,
            edge_tissue_border=False,
            debris_max_um2=0.0,
        ),
    )
    # fr_min_fold_fraction cannot exceed 1: only fibres wholly inside a detected fold stay FR
    assert (
        (none.curation_class == "AM")
        | ((none.curation_class == "FR") & (none.fold_fraction == 1.0))
    ).all()
    assert (none.curation_class == "AM").mean() > 0.9
    base = curate_fibres(table)
    am = np.flatnonzero(base.curation_class.to_numpy() == "AM")[:2]
    t = table.copy()
    t.loc[t.index[am], "ellipse_aspect_ratio"] = [1.55, 3.0]
    c = curate_fibres(t, CurateConfig(ntm_min_field_aspect_ratio=1.01)).iloc[am]
    assert list(c.curation_class) == ["NTM", "NTM"] and c.confidence.iloc[0] < c.confidence.iloc[1]


@pytest.mark.parametrize("value, expected", [(100.0, "DEBRIS"), (5000.0, "AM")])
def test_debris_by_area(measured_sections, value, expected):
    table, _ = measured_sections[0]
    i = np.flatnonzero(curate_fibres(table).curation_class.to_numpy() == "AM")[0]
    t = table.copy()
    t.loc[t.index[i], "area_um2"] = value
    assert curate_fibres(t).curation_class.iloc[i] == expected
