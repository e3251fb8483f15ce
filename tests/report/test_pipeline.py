"""End to end on a real LocalCluster: every table and the report agree with each other and the ground truth."""

from __future__ import annotations

import base64
import html as html_lib
import json
import re

import numpy as np
import pandas as pd
import pytest

from nclsm_scale.layout import read_fibre_table
from nclsm_scale.tables import FibreClass


def test_stages_write_the_run_layout(e2e_run) -> None:
    layout = e2e_run["layout"]
    assert e2e_run["table"] == layout.measure_table("E1")
    for path in (layout.slides_table, layout.slides_table.with_suffix(".csv"), layout.groups_table,
                 layout.histograms, layout.manifest, layout.report / "index.html",
                 layout.report / "E1.geojson", layout.report / "E1_classes.png", layout.report / "hist_csa.png"):
        assert path.is_file(), path
    table, meta = read_fibre_table(layout.fibre_table("E1"))
    assert table["fibre_id"].tolist() == list(range(1, e2e_run["seg"].n_fibres + 1))
    assert meta["level"] == 1 and meta["level0_scale"] == 2.0
    assert meta["tissue_area_um2"] > meta["fold_area_um2"] > 0


def test_curated_classes_agree_with_ground_truth(e2e_run) -> None:
    table, _ = read_fibre_table(e2e_run["layout"].fibre_table("E1"))
    gt = pd.read_parquet(e2e_run["gt_table"])
    # segmentation from exact GT maps: the fibre count matches the ground truth within a few fibres
    assert abs(len(table) - len(gt)) <= 0.05 * len(gt)
    cls = table["curation_class"].astype(str)
    assert {"AM", "EDGE", "FR"} <= set(cls)
    fr = table[cls == "FR"]
    assert (fr["fold_fraction"] >= 0.3).any()  # the synthetic fold band was found and its fibres rejected


def _html_cells(html: str, table_id: str) -> dict[tuple[str, str], str]:
    block = re.search(rf'<table id="{table_id}">(.*?)</table>', html, re.S).group(1)
    return {(r, c): v for r, c, v in re.findall(r'<td data-row="([^"]*)" data-col="([^"]*)">([^<]*)</td>', block)}


def test_every_number_in_the_report_comes_from_slides_parquet(e2e_run) -> None:
    html = e2e_run["index"].read_text()
    slides = pd.read_parquet(e2e_run["layout"].slides_table).set_index("slide")
    cells = _html_cells(html, "slides")
    assert len(cells) == slides.shape[1] == len([c for c in cells if c[0] == "E1"])
    numeric = 0
    for (row, col), text in cells.items():
        value = slides.loc[row, col]
        if isinstance(value, str):
            assert text == value
        elif pd.isna(value):
            assert text == ""
        else:
            assert float(text) == float(f"{float(value):.6g}"), (col, text, value)
            numeric += 1
    assert numeric > 30
    assert slides.loc["E1", "n_fibres"] == sum(slides.loc["E1", f"n_{c.value}"] for c in FibreClass)
    groups = _html_cells(html, "groups")
    assert groups[("P1 / control / vastus lateralis", "n_fibres")] == str(slides.loc["E1", "n_fibres"])


def test_report_is_self_contained(e2e_run) -> None:
    html = e2e_run["index"].read_text()
    assert "<script" not in html and "<link" not in html and "http://" not in html and "https://" not in html
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 5  # thumbnail, class breakdown, three histograms
    assert all(base64.b64decode(img)[:8] == b"\x89PNG\r\n\x1a\n" for img in images)
    prov = re.search(r'<ul id="provenance"[^>]*>(.*?)</ul>', html, re.S).group(1)
    assert "<code>grid.block_px = 256</code>" in prov and "numpy " in prov and "sha256" in prov
    assert "synth." not in prov and "<code>segment.maps = &quot;maps.zarr&quot;</code>" in prov


def test_report_has_no_local_path_and_writes_units_as_symbols(e2e_run) -> None:
    html = e2e_run["index"].read_text()
    root = e2e_run["layout"].root
    assert str(root) not in html and str(root.parent) not in html and str(root.resolve()) not in html
    assert not re.search(r"\b(um|um2|mm2)\b", re.sub(r'src="data:[^"]*"', "", html))
    assert "(µm²)" in html and "(µm)" in html and "(mm²)" in html and "scale bar in µm" in html


def test_thumbnail_outlines_fibres_in_the_legend_colours_with_a_scale_bar(e2e_run) -> None:
    from PIL import Image

    layout = e2e_run["layout"]
    rgb = np.asarray(Image.open(layout.report / "E1_classes.png").convert("RGB"))
    table, _ = read_fibre_table(layout.fibre_table("E1"))
    for code in set(table["curation_class"].astype(str)):
        exact = np.all(rgb == np.array(FibreClass(code).rgb, np.uint8), axis=-1).sum()
        assert exact >= 20, code  # drawn unblended, so the pixels carry the legend colour exactly
    white = np.all(rgb == 255, axis=-1)
    bottom_left = white[-40:, : rgb.shape[1] // 2]
    assert bottom_left.sum(axis=1).max() >= 0.1 * rgb.shape[1]  # the scale bar
    html = e2e_run["index"].read_text()
    assert "scale bar in µm" in html


def test_report_spells_out_classes_and_reasons(e2e_run) -> None:
    html = e2e_run["index"].read_text()
    slides = pd.read_parquet(e2e_run["layout"].slides_table)
    block = re.search(r'<table id="classes">(.*?)</table>', html, re.S).group(1)
    rows = re.findall(r"</i>(\w+)</td><td class=\"k\">([^<]*)</td><td>(\d+)</td><td>([^<]*)</td>", block)
    assert [r[0] for r in rows] == [c.value for c in FibreClass]
    for code, meaning, n, n_reason in rows:
        c = FibreClass(code)
        assert html_lib.unescape(meaning) == c.meaning and int(n) == slides[f"n_{code}"].sum()
        assert n_reason == (str(slides[f"reason_{code}"].sum()) if c.priority is not None else "–")
        assert f'style="background:rgb{c.rgb}"' in block
    assert "A fibre can have several reasons" in html


def test_slide_table_has_one_row_per_slide_with_key_columns_first(e2e_run) -> None:
    html = e2e_run["index"].read_text()
    block = re.search(r'<table id="slides">(.*?)</table>', html, re.S).group(1)
    heads = re.findall(r'<th title="([^"]*)">([^<]*)(?:<br><span class=\'u\'>\(([^)]*)\)</span>)?</th>', block)
    labels = [h[1] for h in heads]
    assert labels[:8] == ["slide", "subject", "diagnosis", "muscle", "fibres", "analysable fibres", "analysable",
                          "CSA median"]
    assert heads[7][2] == "µm²" and heads[6][2] == "%" and "Share of the fibres" in heads[6][0]
    assert block.count("<tr>") == 2  # the header and E1
    assert dict(zip(labels, [h[2] for h in heads], strict=True))["mito mean"] == "raw counts, this slide only"
    groups = re.search(r'<table id="groups">(.*?)</table>', html, re.S).group(1)
    labels = [h[1] for h in re.findall(r'<th title="([^"]*)">([^<]*)', groups)]
    assert labels[:6] == ["group", "slides", "fibres", "analysable fibres", "analysable", "CSA median"]


def test_geojson_polygons_are_level0_outlines_with_classes(e2e_run) -> None:
    import jsonschema
    import zarr
    from geojson_checks import GEOJSON_SCHEMA, QUPATH_PROPERTIES, boundary_pixels, check_rings, rasterise

    layout = e2e_run["layout"]
    table, _ = read_fibre_table(layout.fibre_table("E1"))
    fc = json.loads((layout.report / "E1.geojson").read_text())
    jsonschema.validate(fc, GEOJSON_SCHEMA)
    feats = {f["properties"]["fibre_id"]: f for f in fc["features"]}
    assert len(fc["features"]) == len(feats) == len(table) and set(feats) == set(table["fibre_id"].tolist())
    seg = np.pad(np.asarray(zarr.open_array(str(e2e_run["store"]), path="labels/fibres/1", mode="r")[0]), 1)
    pieces = 0
    for row in table.itertuples():
        feat = feats[row.fibre_id]
        props = feat["properties"]
        jsonschema.validate(props, QUPATH_PROPERTIES)
        assert props["objectType"] == "detection" and props["slide"] == "E1"
        assert props["classification"]["name"] == row.curation_class and props["reasons"] == row.reasons
        assert props["measurements"]["fibre_id"] == row.fibre_id
        assert props["measurements"]["CSA µm²"] == row.area_um2
        check_rings(feat["geometry"])
        pieces += feat["geometry"]["type"] == "MultiPolygon"
        x = np.concatenate([r[:, 0] for p in _polys(feat) for r in p])
        y = np.concatenate([r[:, 1] for p in _polys(feat) for r in p])
        assert x.min() >= row.bbox_x0_px - 1 and x.max() <= row.bbox_x1_px + 1  # the table's box is level 0 too
        assert y.min() >= row.bbox_y0_px - 1 and y.max() <= row.bbox_y1_px + 1
        # rasterised on the segmentation level (2 level-0 px per px): the fibre's pixels up to its boundary
        box = (row.bbox_y0_px // 2 - 1, row.bbox_x0_px // 2 - 1, row.bbox_y1_px // 2 + 1, row.bbox_x1_px // 2 + 1)
        mask = seg[box[0] + 1 : box[2] + 1, box[1] + 1 : box[3] + 1] == row.fibre_id  # seg is padded by 1
        got = rasterise(feat["geometry"], 2.0, box)
        assert mask.sum() == row.area_seg_px and not (got ^ mask)[~boundary_pixels(mask)].any(), row.fibre_id
        assert abs(int(got.sum()) - row.area_seg_px) <= 0.5 * boundary_pixels(mask).sum() + 1


def _polys(feat):
    from geojson_checks import polygons

    return polygons(feat["geometry"])


def test_fibre_positions_are_level0_pixels_of_the_image_labels_and_geojson(e2e_run) -> None:
    """0.5 um/px slide segmented at 1 um/px: the table's _px columns are the level-0 frame, not the segmentation's."""
    import zarr
    from matplotlib.path import Path as Polygon
    from scipy import ndimage

    layout = e2e_run["layout"]
    table, meta = read_fibre_table(layout.fibre_table("E1"))
    assert meta["pixel_size_um"] == 0.5 and meta["segmentation_pixel_size_um"] == 1.0
    labels0 = np.asarray(zarr.open_array(str(e2e_run["store"]), path="labels/fibres/0", mode="r")[0])
    assert labels0.shape == (1536, 1536)
    ids = table["fibre_id"].to_numpy(np.int64)
    # the fibres' own level-0 label pixels: centroid, bounding box and area
    centre = np.array(ndimage.center_of_mass(np.ones_like(labels0), labels0, ids))
    np.testing.assert_allclose(table[["centroid_y_px", "centroid_x_px"]].to_numpy(), centre, rtol=0, atol=1e-9)
    np.testing.assert_allclose(table[["centroid_y_um", "centroid_x_um"]].to_numpy(), centre * 0.5, rtol=0, atol=1e-9)
    boxes = ndimage.find_objects(labels0)
    got = table[["bbox_y0_px", "bbox_x0_px", "bbox_y1_px", "bbox_x1_px"]].to_numpy()
    assert got.tolist() == [[b[0].start, b[1].start, b[0].stop, b[1].stop] for b in (boxes[i - 1] for i in ids)]
    area0 = np.bincount(labels0.ravel(), minlength=ids.max() + 1)[ids]
    np.testing.assert_allclose(table["area_um2"], area0 * 0.25, rtol=1e-12)
    # convex-ish fibres: the centroid pixel is the fibre's own, and the centroid lies inside its GeoJSON polygon
    fc = json.loads((layout.report / "E1.geojson").read_text())
    feats = {f["properties"]["fibre_id"]: f for f in fc["features"]}
    convex = table["solidity"].to_numpy() >= 0.9
    assert convex.sum() > 0.8 * len(table)
    for row in table[convex].itertuples():
        assert labels0[round(row.centroid_y_px), round(row.centroid_x_px)] == row.fibre_id
        rings = [Polygon(p[0]) for p in _polys(feats[row.fibre_id])]  # pixel corners at integers
        assert any(r.contains_point((row.centroid_x_px + 0.5, row.centroid_y_px + 0.5)) for r in rings), row.fibre_id


def test_fibre_table_starts_with_the_slide_and_its_manifest_metadata(e2e_run) -> None:
    layout = e2e_run["layout"]
    table, _ = read_fibre_table(layout.fibre_table("E1"))
    assert list(table.columns[:5]) == ["slide", "subject", "diagnosis", "muscle", "fibre_id"]
    assert set(table["slide"]) == {"E1"} and set(table["muscle"]) == {"vastus lateralis"}
    measured, _ = read_fibre_table(layout.measure_table("E1"))
    curated, _ = read_fibre_table(layout.curate_table("E1"))
    assert list(measured.columns[:2]) == list(curated.columns[:2]) == ["slide", "fibre_id"]
    assert set(measured["slide"]) == set(curated["slide"]) == {"E1"}
    slides = pd.read_parquet(layout.slides_table)
    assert slides[["pixel_size_um", "segmentation_pixel_size_um", "segmentation_level"]].values.tolist() == \
        [[0.5, 1.0, 1]]


def test_report_cli_rebuilds_the_page(e2e_run, run_cli) -> None:
    layout = e2e_run["layout"]
    (layout.report / "index.html").unlink()
    res = run_cli("report", str(layout.root), "--no-geojson", "--workers", "1",
                  "--set", "report.thumbnail_px=400")
    assert res.returncode == 0, res.stderr
    assert (layout.report / "index.html").is_file()
    slides = pd.read_csv(layout.slides_table.with_suffix(".csv"))
    assert slides.loc[0, "subject"] == "P1"  # the saved manifest is reused


def test_slide_qc_reaches_the_slide_table_and_the_report(e2e_run) -> None:
    slides = pd.read_parquet(e2e_run["layout"].slides_table).set_index("slide")
    e1 = slides.loc["E1"]
    assert e1["qc_flag"] == "" and e1["qc_membrane_contrast"] > 0.4 and e1["n_QC"] == 0
    assert 0.3 < e1["qc_tissue_fraction"] <= 1 and 0.25 < e1["qc_focus"] < 1 and 0 < e1["qc_rejected_fraction"] < 1
    assert e2e_run["curate"].qc.record() == {k: e1[k] for k in e2e_run["curate"].qc.record()}
    html = e2e_run["index"].read_text()
    assert "<h2>Quality control</h2><p>Every slide passed QC.</p>" in html
    cells = _html_cells(html, "qc")
    assert cells[("E1", "qc_membrane_contrast")] == f"{e1['qc_membrane_contrast']:.6g}"


def test_qupath_edits_come_back_through_curate(e2e_run, run_cli, client, tmp_path) -> None:
    """Export -> reclassify in QuPath (which keeps only some properties) -> curate --from-qupath -> tables."""
    import shutil

    from nclsm_scale.curate import curate_slide
    from nclsm_scale.errors import ValidationError
    from nclsm_scale.layout import RunLayout

    shutil.copytree(e2e_run["layout"].root, tmp_path / "run")
    layout = RunLayout(tmp_path / "run")
    before, _ = read_fibre_table(layout.fibre_table("E1"))
    cls = before.set_index("fibre_id")["curation_class"].astype(str)
    new = {**{f: "NTM" for f in cls.index[cls == "AM"][:3]}, **{f: "AM" for f in cls.index[cls != "AM"][:2]}}
    fc = json.loads((layout.report / "E1.geojson").read_text())
    kept = []
    for i, feat in enumerate(fc["features"]):  # what QuPath writes back: a UUID, the geometry, the properties it keeps
        p = feat["properties"]
        name = new.get(p["fibre_id"], p["classification"]["name"])
        kept.append({"type": "Feature", "id": f"8c4f3d9e-0000-4000-8000-{i:012d}", "geometry": feat["geometry"],
                     "properties": {"objectType": "detection", "name": p["name"], "measurements": p["measurements"],
                                    "classification": {"name": name, "color": [255, 0, 0]}}})
    edited = tmp_path / "E1.from-qupath.geojson"
    edited.write_text(json.dumps({"type": "FeatureCollection", "features": kept}))
    res = run_cli("curate", str(layout.slide("E1")), "--from-qupath", str(edited), "--workers", "1")
    assert res.returncode == 0, res.stderr
    assert f"{edited}: 5 class change(s) taken from QuPath" in res.stdout
    curated, meta = read_fibre_table(layout.curate_table("E1"))
    curated = curated.set_index("fibre_id")
    expected = cls.copy()
    expected[list(new)] = list(new.values())
    assert (curated["curation_class"].astype(str) == expected).all()
    assert curated["overridden"].sum() == 5 and (curated.loc[list(new), "confidence"] == 1).all()
    assert curated.loc[list(new), "reasons"].tolist() == ["NTM"] * 3 + [""] * 2
    assert meta["overrides"]["n_from_qupath"] == 5 and meta["overrides"]["qupath_from"] == str(edited)
    slides = pd.read_parquet(layout.slides_table).set_index("slide").loc["E1"]
    for c in FibreClass:
        assert slides[f"n_{c.value}"] == (expected == c.value).sum(), c
    assert slides["n_overridden"] == 5
    assert len(pd.read_csv(layout.overrides("E1"))) == 5  # remembered for later runs of curate
    # another slide's GeoJSON: refused before any work, in one line naming the file
    other = tmp_path / "E2.geojson"
    far = {"type": "Polygon", "coordinates": [[[5000, 5000], [5010, 5000], [5010, 5010], [5000, 5000]]]}
    other.write_text(json.dumps({"type": "FeatureCollection", "features": [{**f, "geometry": far} for f in kept[:3]]}))
    with pytest.raises(ValidationError, match=rf"^{other}: 3 of 3 outline\(s\) lie away .*another slide's GeoJSON\?$"):
        curate_slide(layout.slide("E1"), e2e_run["cfg"], client, layout=layout, qupath=other)
    # an unknown class on the command line: exit 1, one line naming the file
    kept[0]["properties"]["classification"]["name"] = "Tumor"
    edited.write_text(json.dumps(kept))
    res = run_cli("curate", str(layout.slide("E1")), "--from-qupath", str(edited), "--workers", "1")
    assert res.returncode == 1 and res.stderr.strip().splitlines()[-1].startswith("error: ")
    assert f"{edited}: unknown class(es) ['TUMOR']" in res.stderr.strip().splitlines()[-1]
