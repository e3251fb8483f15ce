"""The curate driver on a real LocalCluster: folds into labels/folds, exact fold fractions, overrides."""

from __future__ import annotations

import hashlib

import numpy as np
import ome_zarr_models
import pandas as pd
import pytest
import zarr

from nclsm_scale.aggregate import aggregate_run
from nclsm_scale.config import RunConfig, SynthConfig
from nclsm_scale.curate import curate_slide, detect_folds, fr_model
from nclsm_scale.curate import driver as curate_driver
from nclsm_scale.curate.folds import fold_channels
from nclsm_scale.errors import ValidationError
from nclsm_scale.layout import RunLayout, read_fibre_table
from nclsm_scale.measure.driver import measure_slide
from nclsm_scale.normalise import slide_norm
from nclsm_scale.slide import open_slide
from nclsm_scale.synth import generate_section
from nclsm_scale.tables import CURATE_COLUMNS, FOLD, FibreClass, join_fibre_tables


@pytest.fixture(scope="module")
def measured(tmp_path_factory, client, write_section_store):
    """A measured 1024^2 px, 1 um/px slide with two fold bands (tissue only in labels/regions)."""
    s = generate_section(SynthConfig(size_px=(1024, 1024), pixel_size_um=1.0, seed=2, folds=2,
                                     fold_width_um=200.0, fam_fraction=0.1))
    path = tmp_path_factory.mktemp("curate") / "run" / "slides" / "S1.ome.zarr"
    write_section_store(path, s)
    measure_slide(path, RunConfig.model_validate({"grid": {"block_px": 512}}), client)
    return path, s


def _cfg(block_px: int) -> RunConfig:
    return RunConfig.model_validate({"grid": {"block_px": block_px}})


def _joined(path, res) -> tuple[pd.DataFrame, dict]:
    """Curate's table joined with measure's (what users read), and curate's metadata."""
    curated, meta = read_fibre_table(res.table)
    assert list(curated.columns) == list(CURATE_COLUMNS)
    measured, _ = read_fibre_table(RunLayout(path.parent.parent).measure_table("S1"))
    return join_fibre_tables(measured, curated), meta


def _curate_and_aggregate(path, cfg, client, **kw):
    res = curate_slide(path, cfg, client, **kw)
    layout = RunLayout(path.parent.parent)
    aggregate_run(layout.root, cfg.aggregate)
    return res, layout.slides_table


def test_folds_are_written_and_fold_fractions_are_exact(client, measured) -> None:
    path, s = measured
    tissue_before = np.asarray(zarr.open_array(str(path), path="labels/regions/3", mode="r")[0])
    res = curate_slide(path, _cfg(256), client)
    a, _ = _joined(path, res)
    folds0 = np.asarray(zarr.open_array(str(path), path="labels/folds/0", mode="r")[0])
    low = np.asarray(zarr.open_array(str(path), path="labels/folds/3", mode="r")[0])
    tissue = np.asarray(zarr.open_array(str(path), path="labels/regions/3", mode="r")[0])
    assert np.array_equal(tissue, tissue_before)  # segment's output is left as it was
    assert (low == FOLD).any() and set(np.unique(low)) == {0, FOLD} and (tissue[low == FOLD] > 0).all()
    assert np.array_equal(folds0 > 0, np.kron(low > 0, np.ones((8, 8), bool))[:1024, :1024])
    in_fold = np.bincount(s.fibres[folds0 == FOLD], minlength=len(a) + 1)[1:]
    assert np.array_equal(a["fold_fraction"].to_numpy(), in_fold / a["area_seg_px"].to_numpy())
    again = curate_slide(path, _cfg(4096), client)
    b, meta = _joined(path, again)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert meta["fold_area_um2"] == float((low == FOLD).sum() * 64)
    assert meta["fr_model"]["sha256"] == hashlib.sha256(fr_model.BUNDLED.read_bytes()).hexdigest()
    assert meta["tissue_area_um2"] == float((tissue > 0).sum() * 64)
    assert sum(meta["class_counts"].values()) == len(a) == res.n_fibres
    fr = a["curation_class"] == "FR"
    first = a["reasons"].str.split(";").str[0]
    assert (a["reasons"].str.contains("FR") == (a["score_FR"] >= 0)).all() and fr.any()
    assert a.loc[a["fold_fraction"] >= 0.5, "reasons"].str.contains("FR").all()
    assert ((first == a["curation_class"]) | (a["curation_class"] == "AM")).all()


def test_fold_tiles_on_the_workers_give_the_folds_of_the_whole_level(client, measured, monkeypatch) -> None:
    """Tiles of 24 px (36 tasks) and of the default size write the same folds and classes."""
    path, _ = measured
    a, _ = _joined(path, curate_slide(path, _cfg(512), client))
    low = np.asarray(zarr.open_array(str(path), path="labels/folds/3", mode="r")[0]) == FOLD
    slide = open_slide(path)
    norm = slide_norm(slide)
    planes = fold_channels(slide.read(3, 0, 0, 128, 128), slide.roles, norm.lo,
                           [h - lo for lo, h in zip(norm.lo, norm.hi, strict=True)])
    tissue = slide.read_labels("regions", 3, 0, 0, 128, 128) > 0
    assert low.any() and np.array_equal(
        low, detect_folds(planes, tissue, pixel_size_um=8.0, background=[0.0, 0.0], tile_px=4096))
    monkeypatch.setattr(curate_driver, "TILE_PX", 24)
    b, _ = _joined(path, curate_slide(path, _cfg(512), client))
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert np.array_equal(np.asarray(zarr.open_array(str(path), path="labels/folds/3", mode="r")[0]) == FOLD, low)


def _overrides_csv(path, tmp_path, client):
    before, _ = _joined(path, curate_slide(path, _cfg(512), client, clear_overrides=True))
    ids = before["fibre_id"].iloc[:3].tolist()
    csv = tmp_path / "fix.csv"
    csv.write_text("fibre_id,class,reasons\n" + f"{ids[0]},AM,\n{ids[1]},FAM,FAM\n{ids[2]},NTM,NTM;EDGE\n")
    return csv, ids


@pytest.mark.slow
def test_cli_applies_overrides(client, measured, run_cli, tmp_path) -> None:
    path, _ = measured
    csv, _ = _overrides_csv(path, tmp_path, client)
    res = run_cli("curate", str(path), "--overrides", str(csv), "--workers", "1")
    assert res.returncode == 0, res.stderr
    assert "3 overridden" in res.stdout
    again = run_cli("curate", str(path), "--workers", "1")  # remembered without the CSV
    assert again.returncode == 0, again.stderr
    assert "3 overridden" in again.stdout
    cleared = run_cli("curate", str(path), "--clear-overrides", "--workers", "1")
    assert cleared.returncode == 0, cleared.stderr
    assert "0 overridden" in cleared.stdout


def test_overrides_recurate_and_reaggregate(client, measured, tmp_path) -> None:
    path, _ = measured
    layout = RunLayout(path.parent.parent)
    csv, ids = _overrides_csv(path, tmp_path, client)
    res, slides_table = _curate_and_aggregate(path, _cfg(512), client, overrides=csv)
    assert res.n_overridden == 3 and slides_table == layout.slides_table
    after, meta = read_fibre_table(layout.fibre_table("S1"))
    assert after.set_index("fibre_id").loc[ids, "curation_class"].tolist() == ["AM", "FAM", "NTM"]
    assert after["overridden"].sum() == 3
    assert meta["overrides"] == {"stored": str(layout.overrides("S1")), "n": 3, "added_from": str(csv),
                                 "qupath_from": None, "n_from_qupath": 0}
    slides = pd.read_parquet(layout.slides_table)
    counts = after["curation_class"].value_counts()
    assert slides.loc[0, "n_overridden"] == 3
    assert all(slides.loc[0, f"n_{c}"] == counts.get(c, 0) for c in ("AM", "FAM", "NTM", "EDGE", "FR"))
    bad = tmp_path / "bad.csv"
    bad.write_text("fibre_id,class\n999999,AM\n")
    with pytest.raises(ValidationError, match="not in the table"):
        curate_slide(path, _cfg(512), client, overrides=bad)


def test_overrides_are_remembered_across_reruns(client, measured, tmp_path, caplog) -> None:
    path, _ = measured
    layout = RunLayout(path.parent.parent)
    csv, ids = _overrides_csv(path, tmp_path, client)
    res, _ = _curate_and_aggregate(path, _cfg(512), client, overrides=csv)
    store = layout.overrides("S1")
    assert store == layout.curate_tables / "S1.overrides.csv" and store.is_file()
    # new thresholds, no CSV: the rules change the other fibres, the user's corrections stay
    strict = RunConfig.model_validate({"grid": {"block_px": 512}, "curate": {"ntm_min_aspect_ratio": 20.0,
                                                                         "ntm_cut_field_aspect_ratio": 20.0}})
    res, slides_table = _curate_and_aggregate(path, strict, client)
    after, meta = read_fibre_table(res.table)
    by_id = after.set_index("fibre_id")
    assert by_id.loc[ids, "curation_class"].tolist() == ["AM", "FAM", "NTM"] and res.n_overridden == 3
    assert (after.loc[~after["overridden"], "curation_class"] != "NTM").all()
    assert meta["overrides"]["n"] == 3 and meta["overrides"]["added_from"] is None
    assert pd.read_parquet(slides_table).loc[0, "n_overridden"] == 3
    # a later CSV replaces its fibres' entries and keeps the others
    extra = int(after["fibre_id"].iloc[5])
    csv2 = tmp_path / "more.csv"
    csv2.write_text(f"fibre_id,class\n{ids[1]},FR\n{extra},EDGE\n")
    res, _ = _curate_and_aggregate(path, _cfg(512), client, overrides=csv2)
    by_id = read_fibre_table(res.table)[0].set_index("fibre_id")
    assert by_id.loc[[*ids, extra], "curation_class"].tolist() == ["AM", "FR", "NTM", "EDGE"]
    assert by_id.loc[ids[1], "reasons"] == "FR" and res.n_overridden == 4
    # an entry whose fibre changed (the slide was segmented again) is dropped, with a warning
    stored = pd.read_csv(store)
    stored.loc[stored["fibre_id"] == ids[0], "area_seg_px"] += 1
    stored.to_csv(store, index=False)
    with caplog.at_level("WARNING", logger="nclsm_scale.curate.overrides"):
        res = curate_slide(path, _cfg(512), client)
    assert res.n_overridden == 3 and "1 stored override(s) dropped" in caplog.text
    assert pd.read_csv(store)["fibre_id"].tolist() == sorted([ids[1], ids[2], extra])
    res = curate_slide(path, _cfg(512), client, clear_overrides=True)
    assert res.n_overridden == 0 and not store.exists()


def test_a_slide_with_myosin_stains_gets_fibre_types_and_fam_left_unjudged(tmp_path, client, write_section_store):
    """Membrane plus MyHC I, IIa and IIx, no mito: types follow the ground truth; FAM needs a mito stain."""
    s = generate_section(SynthConfig(size_px=(768, 768), pixel_size_um=1.0, seed=11, fam_fraction=0.05,
                                     stains=["membrane", "myh1", "myh2a", "myh2x"]))
    path = tmp_path / "run" / "slides" / "T1.ome.zarr"
    write_section_store(path, s)
    measure_slide(path, _cfg(512), client)
    res = curate_slide(path, _cfg(512), client)
    curated, _ = read_fibre_table(res.table)
    assert (curated["not_judged"] == "FAM").all() and not (curated["curation_class"] == "FAM").any()
    whole = curated["curation_class"].isin(["AM", "NTM"]).to_numpy()
    truth = s.table["gt_type"].astype(str).to_numpy()
    called = curated["fibre_type"].to_numpy()
    typed = whole & (called != "unclassified")
    assert typed.sum() >= 0.9 * whole.sum() and (called[typed] == truth[typed]).mean() >= 0.95


def test_a_membrane_and_mito_slide_has_no_fibre_types(measured, client) -> None:
    path, _ = measured
    curated, _ = read_fibre_table(curate_slide(path, _cfg(512), client).table)
    assert (curated["fibre_type"] == "").all() and curated["type_confidence"].isna().all()
    assert (curated["not_judged"] == "").all()


def _napari_fibres(path):
    """The fibres layer as napari-ome-zarr's reader gives it to napari, as a napari Labels layer at full resolution.

    (Without a canvas a multiscale layer looks at its coarsest level; zoomed in, napari shows level 0.)
    """
    from napari.layers import Labels
    from napari_ome_zarr import napari_get_reader

    layers = napari_get_reader(str(path))()
    (data, meta, _), = [layer for layer in layers if layer[2] == "labels" and layer[1]["name"].endswith("fibres")]
    return Labels(data[0], **{k: v for k, v in meta.items() if k in ("name", "properties", "colormap", "scale")})


def test_napari_shows_each_fibres_class_reasons_and_measurements(client, measured, tmp_path) -> None:
    path, _ = measured
    csv, ids = _overrides_csv(path, tmp_path, client)
    before = zarr.open_group(str(path), path="labels/fibres", mode="r").attrs.asdict()
    res = curate_slide(path, _cfg(512), client, overrides=csv)
    table, _ = _joined(path, res)
    layer = _napari_fibres(path)
    features = layer.features.set_index("index")
    by_id = table.set_index("fibre_id")
    assert features.loc[0, "class"] == "background" and len(features) == len(table) + 1
    shown = features.loc[by_id.index]
    assert shown["class"].tolist() == by_id["curation_class"].tolist()  # the overrides included
    assert shown.loc[ids, "class"].tolist() == ["AM", "FAM", "NTM"] and shown.loc[ids[2], "reasons"] == "NTM;EDGE"
    assert np.allclose(shown["CSA µm²"], by_id["area_um2"], atol=0.05)
    assert np.allclose(shown["confidence"], by_id["confidence"], atol=5e-4)
    # every fibre in its class colour, the background transparent
    labels0 = np.asarray(zarr.open_array(str(path), path="labels/fibres/0", mode="r")[0])
    y, x = np.argwhere(labels0 == ids[2])[0]
    assert np.allclose(layer.colormap.map(ids[2])[:3], [c / 255 for c in FibreClass.NTM.rgb], atol=1e-3)
    assert layer.colormap.map(0)[3] == 0
    assert "NTM;EDGE" in str(layer.get_status((0, y, x))["coordinates"])  # what napari shows under the cursor
    # only the image-label metadata changed, and the store still validates
    after = zarr.open_group(str(path), path="labels/fibres", mode="r").attrs.asdict()
    assert after["ome"].pop("image-label") != before["ome"].pop("image-label") and after == before
    model = ome_zarr_models.open_ome_zarr(zarr.open_group(str(path), path="labels/fibres", mode="r"))
    assert len(model.ome_attributes.image_label.properties) == len(table) + 1


def test_napari_classes_are_left_out_of_large_slides(client, measured) -> None:
    path, _ = measured
    cfg = RunConfig.model_validate({"grid": {"block_px": 512}, "curate": {"napari_max_fibres": 10}})
    curate_slide(path, cfg, client)
    label = zarr.open_group(str(path), path="labels/fibres", mode="r").attrs.asdict()["ome"]["image-label"]
    assert "properties" not in label and [c["label-value"] for c in label["colors"]] == [0]
    assert _napari_fibres(path).features.empty
