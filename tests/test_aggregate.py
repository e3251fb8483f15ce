"""Slide and archive statistics from curated tables: counts, sizes, histograms, groups, files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import xarray as xr

import nclsm_scale
from nclsm_scale.aggregate import aggregate_run, aggregate_tables, slide_histograms, slide_stats
from nclsm_scale.config import AggregateConfig
from nclsm_scale.errors import ValidationError
from nclsm_scale.layout import SCHEMA_KEY, RunLayout, write_table
from nclsm_scale.tables import CURATE_COLUMNS, QC_COLUMNS, SCHEMA_VERSION, fibre_columns, measure_columns

MEASURED = measure_columns(["membrane", "mito"])


def _table(classes, areas, ferets, mito, reasons=None) -> pd.DataFrame:
    n = len(classes)
    return pd.DataFrame({
        "fibre_id": np.arange(1, n + 1, dtype=np.uint32), "curation_class": classes,
        "reasons": reasons or [("" if c == "AM" else c) for c in classes],
        "area_um2": np.asarray(areas, float), "feret_min_um": np.asarray(ferets, float),
        "mito_interior_mean": np.asarray(mito, float), "overridden": [False] * n,
    })


META = {"slide_name": "A", "slide_id": "A", "pixel_size_um": 0.5, "segmentation_pixel_size_um": 1.0, "level": 1,
        "tissue_area_um2": 2e6, "fold_area_um2": 5e5}


def _write_stage_tables(layout: RunLayout, name: str, t: pd.DataFrame, measured=MEASURED) -> None:
    """Write ``t``'s columns as measure's and curate's tables of slide ``name`` (other columns zero)."""
    full = pd.DataFrame({k: t[k] if k in t else np.full(len(t), "") if c.dtype == "str" else np.zeros(len(t), c.dtype)
                         for k, c in {**measured, **CURATE_COLUMNS}.items()}).assign(slide=name)
    meta = {**META, "slide_name": name, "slide_id": name}
    write_table(full[list(measured)], layout.measure_table(name), measured, meta)
    write_table(full[list(CURATE_COLUMNS)], layout.curate_table(name), CURATE_COLUMNS, {})


def test_slide_stats_counts_sizes_and_densities() -> None:
    t = _table(["AM", "AM", "AM", "EDGE", "FR", "NTM"], [1000, 2000, 6000, 50, 4000, 4000],
               [30, 40, 90, 5, 60, 60], [100, 200, 300, 1, 1, 1],
               reasons=["", "", "", "EDGE", "FR;FAM", "NTM"])
    row = slide_stats(t, META, AggregateConfig())
    assert (row["n_fibres"], row["n_AM"], row["n_EDGE"], row["n_FR"], row["n_NTM"], row["n_FAM"]) == (6, 3, 1, 1, 1, 0)
    assert row["reason_FAM"] == 1 and row["reason_FR"] == 1
    assert row["pct_analysable"] == 50.0
    assert row["csa_um2_mean"] == 3000.0 and row["csa_um2_median"] == 2000.0
    assert row["csa_um2_sd"] == pytest.approx(np.std([1000, 2000, 6000], ddof=1))
    assert row["csa_um2_cv"] == pytest.approx(row["csa_um2_sd"] / 3000.0)
    assert row["feret_min_um_median"] == 40.0 and row["mito_median"] == 200.0
    assert row["tissue_area_mm2"] == 2.0 and row["analysable_area_mm2"] == 1.5
    assert (row["pixel_size_um"], row["segmentation_pixel_size_um"], row["segmentation_level"]) == (0.5, 1.0, 1)
    assert row["fibre_density_per_mm2"] == 3.0 and row["analysable_density_per_mm2"] == 2.0


def test_slide_qc_reaches_the_slide_row_and_a_flagged_slide_has_none_analysable() -> None:
    qc = {"qc_flag": "no_membrane_contrast", "qc_tissue_fraction": 0.8, "qc_membrane_contrast": 0.01,
          "qc_focus": float("nan"), "qc_rejected_fraction": 0.5}
    t = _table(["QC", "QC"], [1000, 2000], [30, 40], [1, 1], reasons=["QC", "QC;NTM"])
    row = slide_stats(t, {**META, "qc": qc}, AggregateConfig())
    assert {k: row[k] for k in QC_COLUMNS if k != "qc_focus"} == {k: v for k, v in qc.items() if k != "qc_focus"}
    assert np.isnan(row["qc_focus"]) and (row["n_QC"], row["n_analysable"], row["reason_NTM"]) == (2, 0, 1)
    before_qc = slide_stats(t, META, AggregateConfig())  # a table curated before slide QC existed
    assert before_qc["qc_flag"] == "" and np.isnan(before_qc["qc_membrane_contrast"])


def test_histograms_use_configured_bins_with_an_open_last_bin() -> None:
    cfg = AggregateConfig(csa_bins_um2=[0, 1000, 5000], feret_min_bins_um=[0, 50],
                          mito_rel_bins=[0, 0.75, 1.25])
    t = _table(["AM"] * 4 + ["EDGE"], [500, 1000, 4999, 9000, 100], [10, 49, 50, 200, 1],
               [50, 100, 100, 300, 1])
    h = slide_histograms(t, cfg)
    assert h["csa"].tolist() == [1, 2, 1] and h["feret_min"].tolist() == [2, 2]
    assert h["mito_rel"].tolist() == [1, 2, 1]  # relative to the analysable median (100)


def test_bins_must_increase() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        AggregateConfig(csa_bins_um2=[0, 500, 500])


def test_archive_table_joins_manifest_and_pools_groups(tmp_path) -> None:
    layout = RunLayout(tmp_path)
    a = _table(["AM", "AM", "EDGE"], [1000, 3000, 10], [30, 50, 2], [1, 2, 3])
    b = _table(["AM", "FAM"], [5000, 4000], [70, 60], [4, 5])
    c = _table(["AM"], [2000], [40], [6])
    for name, t in (("A", a), ("B", b), ("C", c)):
        _write_stage_tables(layout, name, t)
    manifest = pd.DataFrame({"slide": ["A", "B", "C"], "subject": ["P1", "P1", "P2"],
                             "diagnosis": ["ctrl", "ctrl", "mito"]})
    res = aggregate_run(tmp_path, AggregateConfig(), manifest)
    slides = pd.read_parquet(layout.slides_table)
    assert slides["slide"].tolist() == ["A", "B", "C"] and slides["subject"].tolist() == ["P1", "P1", "P2"]
    pd.testing.assert_frame_equal(pd.read_csv(layout.slides_table.with_suffix(".csv"))[["slide", "n_AM"]],
                                  slides[["slide", "n_AM"]], check_dtype=False)
    groups = pd.read_parquet(layout.groups_table).set_index("subject")
    assert groups.loc["P1", "n_slides"] == 2 and groups.loc["P1", "n_fibres"] == 5
    assert groups.loc["P1", "csa_um2_mean"] == 3000.0  # pooled over the AM fibres of A and B
    assert groups.loc["P1", "tissue_area_mm2"] == 4.0
    ds = xr.open_dataset(layout.histograms, engine="scipy")
    assert list(ds["slide"].values) == ["A", "B", "C"]
    assert ds["csa_count"].sel(slide="A").values.sum() == 2
    assert np.array_equal(ds["class_count"].values, res.histograms["class_count"].values)
    ds.close()
    again = aggregate_run(tmp_path, AggregateConfig())  # the saved manifest is reused
    assert again.slides["subject"].tolist() == ["P1", "P1", "P2"]
    joined = pd.read_parquet(layout.fibre_table("B"))  # what users read: every column, in declared order
    assert list(joined.columns) == fibre_columns(MEASURED, ["subject", "diagnosis"])
    assert joined["curation_class"].tolist() == ["AM", "FAM"] and joined["subject"].tolist() == ["P1", "P1"]
    only = aggregate_run(tmp_path, AggregateConfig(), slides=["C", "A"])
    assert only.slides["slide"].tolist() == ["A", "C"]


def test_uncurated_tables_and_empty_runs_are_clear_errors(tmp_path) -> None:
    t = _table(["AM"], [1000], [30], [1]).drop(columns=["curation_class"])
    with pytest.raises(ValidationError, match="curate"):
        aggregate_tables({"A": (t, META)}, AggregateConfig())
    with pytest.raises(ValidationError, match="no curated slides"):
        aggregate_run(tmp_path, AggregateConfig())


def test_fibre_types_and_reasons_not_judged_reach_the_slide_row() -> None:
    t = _table(["AM", "AM", "AM", "NTM"], [1000, 3000, 5000, 2000], [30, 50, 70, 40], [1, 2, 3, 4])
    t["fibre_type"] = ["I", "IIa", "IIa", "I"]
    t["not_judged"] = "FAM"
    row = slide_stats(t, META, AggregateConfig())
    assert row["type_I_n"] == 1 and row["type_IIa_pct"] == pytest.approx(200 / 3)  # over analysable fibres
    assert row["type_IIa_csa_um2_mean"] == 4000.0 and row["not_judged"] == "FAM"
    untyped = slide_stats(t.assign(fibre_type=""), META, AggregateConfig())
    assert "type_I_n" not in untyped


def _two_slides(layout: RunLayout) -> None:
    """Slide A (membrane, mito; in the manifest) and slide B (membrane, MyHC I; not in it)."""
    _write_stage_tables(layout, "A", _table(["AM", "AM", "EDGE"], [1000, 3000, 10], [30, 50, 2], [1, 2, 3]))
    _write_stage_tables(layout, "B", _table(["AM", "FAM"], [5000, 4000], [70, 60], [4, 5]).drop(
        columns="mito_interior_mean"), measured=measure_columns(["membrane", "myh1"]))


def test_fibre_tables_read_as_one_dataset_with_the_manifest_metadata(tmp_path) -> None:
    layout = RunLayout(tmp_path)
    _two_slides(layout)
    (layout.fibres / "gone.parquet").parent.mkdir(parents=True)
    (layout.fibres / "gone.parquet").write_bytes(b"a slide aggregated before and not now")
    aggregate_run(tmp_path, AggregateConfig(), pd.DataFrame({"slide": ["A"], "subject": ["P1"], "age": [61]}))
    assert sorted(p.name for p in layout.fibres.iterdir()) == ["A.parquet", "B.parquet"]
    fibres = nclsm_scale.read_fibres(tmp_path)
    assert list(fibres.columns[:4]) == ["slide", "subject", "age", "fibre_id"]
    assert fibres["slide"].tolist() == ["A"] * 3 + ["B"] * 2 and fibres["fibre_id"].tolist() == [1, 2, 3, 1, 2]
    assert fibres["subject"].tolist()[:3] == ["P1"] * 3 and fibres["subject"].isna()[3:].all()
    assert fibres["age"].tolist()[:3] == [61.0] * 3 and fibres["age"].isna()[3:].all()
    assert fibres["mito_interior_mean"].isna().tolist() == [False] * 3 + [True] * 2  # B has no mito channel
    assert fibres["myh1_interior_mean"].isna().tolist() == [True] * 3 + [False] * 2
    schemas = [pq.read_schema(layout.fibre_table(n)) for n in "AB"]
    assert schemas[0].equals(schemas[1]) and schemas[0].field("age").type == "double"
    dataset = ds.dataset(layout.fibres, format="parquet")
    assert dataset.schema.equals(schemas[0]) and dataset.to_table().num_rows == 5
    pd.testing.assert_frame_equal(pd.read_parquet(layout.fibres), fibres)
    assert nclsm_scale.read_fibres(tmp_path, columns=["slide", "area_um2"]).shape == (5, 2)
    aggregate_run(tmp_path, AggregateConfig(), slides=["B"])  # the folder holds the slides aggregated
    assert sorted(p.name for p in layout.fibres.iterdir()) == ["B.parquet"]


def test_every_table_declares_units_meanings_and_its_schema_version(tmp_path) -> None:
    layout = RunLayout(tmp_path)
    _two_slides(layout)
    aggregate_run(tmp_path, AggregateConfig(), pd.DataFrame({"slide": ["A", "B"], "subject": ["P1", "P2"]}))
    paths = [layout.measure_table("A"), layout.curate_table("A"), layout.fibre_table("B"), layout.slides_table,
             layout.groups_table]
    for path in paths:
        schema = pq.read_schema(path)
        assert schema.metadata[SCHEMA_KEY] == str(SCHEMA_VERSION).encode(), path
        for field in schema:
            assert set(field.metadata) == {b"unit", b"description"} and field.metadata[b"description"], field.name
    fibres, slides = pq.read_schema(layout.fibre_table("B")), pq.read_schema(layout.slides_table)
    unit = {k: fibres.field(k).metadata[b"unit"].decode() for k in ("area_um2", "centroid_x_px", "area_seg_px",
                                                                    "membrane_ring_mean", "fold_fraction")}
    assert unit == {"area_um2": "um2", "centroid_x_px": "px", "area_seg_px": "px", "membrane_ring_mean": "counts",
                    "fold_fraction": ""}
    assert b"level-0" in fibres.field("centroid_x_px").metadata[b"description"]
    assert b"manifest" in fibres.field("subject").metadata[b"description"]
    assert slides.field("pixel_size_um").metadata[b"unit"] == b"um"
    assert b"level 0" in slides.field("pixel_size_um").metadata[b"description"]
    assert b"segment" in slides.field("segmentation_pixel_size_um").metadata[b"description"]
    assert pd.read_parquet(layout.slides_table)[["pixel_size_um", "segmentation_pixel_size_um"]].values.tolist() == \
        [[0.5, 1.0]] * 2
    with xr.open_dataset(layout.histograms, engine="scipy") as hist:
        assert hist.attrs[SCHEMA_KEY.decode()] == SCHEMA_VERSION
        for name in [*hist.data_vars, "csa_lo", "csa_hi", "feret_min_lo", "mito_rel_hi"]:
            assert hist[name].attrs["units"] and hist[name].attrs["long_name"], name
        assert (hist["csa_lo"].attrs["units"], hist["feret_min_hi"].attrs["units"]) == ("um2", "um")
        assert (hist["mito_rel_lo"].attrs["units"], hist["csa_count"].attrs["units"]) == ("1", "1")
