"""GeoJSON export on constructed labels: every piece and hole, exact rasterisation, blocks, streaming, QuPath fields."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pandas as pd
import pytest
import zarr
from geojson_checks import (
    GEOJSON_SCHEMA,
    QUPATH_PROPERTIES,
    boundary_pixels,
    check_rings,
    rasterise,
)
from scipy import ndimage

from nclsm_scale.report.geojson import REASON_CODES, export_geojson, fibre_polygons


def _labels() -> np.ndarray:
    """Fibres across 16 px blocks: a square, one in two pieces, a ring with an island fibre in its hole, a blob."""
    lab = np.zeros((64, 96), np.uint32)
    lab[2:10, 2:12] = 1
    lab[14:20, 3:9] = 2
    lab[24:27, 10:14] = 2  # second piece of fibre 2
    lab[12:44, 20:56] = 3
    lab[18:38, 26:50] = 0  # hole of fibre 3
    lab[22:30, 30:40] = 4  # island fibre inside the hole
    lab[33:35, 44:46] = 3  # a small piece of 3 inside its own hole
    yy, xx = np.mgrid[:64, :96]
    lab[(yy - 48) ** 2 + (xx - 75) ** 2 < 12**2] = 5
    lab[50, 75] = 0  # a one-pixel hole
    lab[60:63, 2:5] = 6
    lab[61, 5] = 6
    lab[62, 6] = 6  # touches 6 only diagonally: a second piece
    return lab


def _table(lab: np.ndarray) -> pd.DataFrame:
    ids = np.unique(lab[lab > 0]).astype(np.int64)
    boxes = ndimage.find_objects(lab)
    b = np.array([[s[0].start, s[1].start, s[0].stop, s[1].stop] for s in (boxes[i - 1] for i in ids)])
    area = np.bincount(lab.ravel(), minlength=ids.max() + 1)[ids]
    cls = ["AM", "NTM", "FR", "AM", "EDGE", "DEBRIS"][: len(ids)]
    return pd.DataFrame({
        "slide": "C1", "fibre_id": ids.astype(np.uint32),
        "bbox_y0_px": b[:, 0], "bbox_x0_px": b[:, 1], "bbox_y1_px": b[:, 2], "bbox_x1_px": b[:, 3],
        "area_seg_px": area, "area_um2": area * 1.0, "feret_min_um": np.linspace(3, 9, len(ids)),
        "curation_class": cls, "reasons": ["", "FR;NTM", "FR", "", "EDGE", "DEBRIS"][: len(ids)],
        "confidence": [0.9, 0.8, np.nan, 0.7, 0.95, 1.0][: len(ids)], "not_judged": "NF",
        "overridden": [False, False, False, False, False, True][: len(ids)], "fibre_type": "",
    })


@pytest.fixture(scope="module")
def constructed(tmp_path_factory):
    from nclsm_scale.io.labels import fill_label_pyramid
    from nclsm_scale.io.ome_zarr import create_image, create_labels

    lab = _labels()
    path = tmp_path_factory.mktemp("geojson") / "C1.ome.zarr"
    create_image(path, (1, *lab.shape), np.uint8, pixel_size_um=1.0, channel_names=["membrane"], chunk_px=32,
                 shard_px=0, min_level_px=16)
    create_labels(path, "fibres", dtype=np.uint32)
    zarr.open_array(str(path), path="labels/fibres/0", mode="r+")[0] = lab
    fill_label_pyramid(path, "fibres", 0)
    meta = {"level": 0, "level0_scale": 1.0, "shape_yx": list(lab.shape), "slide_name": "C1"}
    return {"path": path, "labels": lab, "table": _table(lab), "meta": meta}


def _export(c, tmp_path, name="out.geojson", **kw):
    out = export_geojson(c["path"], c["table"], c["meta"], tmp_path / name, **kw)
    return out, json.loads(out.read_text())


def test_every_piece_and_hole_rasterises_to_the_fibre_exactly(constructed, tmp_path) -> None:
    lab = constructed["labels"]
    _, fc = _export(constructed, tmp_path, tolerance_px=0.0, block_px=16)
    jsonschema.validate(fc, GEOJSON_SCHEMA)
    feats = {f["properties"]["fibre_id"]: f for f in fc["features"]}
    assert sorted(feats) == [1, 2, 3, 4, 5, 6] and len(fc["features"]) == 6  # each fibre once
    for fid, feat in feats.items():
        check_rings(feat["geometry"])
        got = rasterise(feat["geometry"], 1.0, (0, 0, *lab.shape))
        np.testing.assert_array_equal(got, lab == fid, err_msg=f"fibre {fid}")
    assert feats[2]["geometry"]["type"] == "MultiPolygon" and len(feats[2]["geometry"]["coordinates"]) == 2
    assert feats[6]["geometry"]["type"] == "MultiPolygon"  # diagonal contact only: two pieces
    ring3 = feats[3]["geometry"]
    assert ring3["type"] == "MultiPolygon" and [len(p) for p in ring3["coordinates"]] == [2, 1]  # ring + hole, island
    assert feats[5]["geometry"]["type"] == "Polygon" and len(feats[5]["geometry"]["coordinates"]) == 2


def test_simplified_outlines_differ_only_on_boundary_pixels(constructed, tmp_path) -> None:
    lab = constructed["labels"]
    tol = 0.5
    _, fc = _export(constructed, tmp_path, tolerance_px=tol, block_px=16)
    for feat in fc["features"]:
        fid = feat["properties"]["fibre_id"]
        check_rings(feat["geometry"])
        mask = lab == fid
        got = rasterise(feat["geometry"], 1.0, (0, 0, *lab.shape))
        assert not (got ^ mask)[~boundary_pixels(mask)].any(), fid
        assert abs(int(got.sum()) - int(mask.sum())) <= tol * boundary_pixels(mask).sum() + 1, fid


def test_output_is_the_same_for_any_block_size_and_on_the_cluster(constructed, tmp_path, client) -> None:
    texts = [_export(constructed, tmp_path, f"b{b}.geojson", block_px=b)[0].read_text() for b in (7, 16, 2048)]
    by_id = [sorted(json.loads(t)["features"], key=lambda f: f["properties"]["fibre_id"]) for t in texts]
    assert by_id[0] == by_id[1] == by_id[2]
    on_cluster = _export(constructed, tmp_path, "cluster.geojson", block_px=16, client=client, batch_blocks=3)[0]
    assert on_cluster.read_text() == texts[1]  # deterministic order whatever finishes first
    assert len(texts[1].splitlines()) == 1 + 6 + 1  # head, one feature per line, tail


def test_properties_follow_qupath(constructed, tmp_path) -> None:
    _, fc = _export(constructed, tmp_path)
    rows = constructed["table"].set_index("fibre_id")
    for feat in fc["features"]:
        p = feat["properties"]
        jsonschema.validate(p, QUPATH_PROPERTIES)
        fid = p["fibre_id"]
        row = rows.loc[fid]
        assert p["objectType"] == "detection" and p["name"] == f"fibre {fid}" and p["slide"] == "C1"
        assert p["classification"]["name"] == row.curation_class
        assert p["reasons"] == row.reasons and p["metadata"]["reasons"] == row.reasons
        assert p["not_judged"] == "NF" and p["metadata"] == {**p["metadata"], "slide": "C1", "fibre_id": str(fid)}
        m = p["measurements"]
        assert m["fibre_id"] == fid and m["CSA µm²"] == row.area_um2 and m["min Feret µm"] == row.feret_min_um
        assert {k for k in m if k.startswith("reason ")} == {f"reason {c}" for c in REASON_CODES}
        assert all(m[f"reason {c}"] == int(c in row.reasons.split(";")) for c in REASON_CODES)
        assert m["overridden"] == int(row.overridden)
        if np.isnan(row.confidence):
            assert "confidence" not in m and p["confidence"] is None  # no NaN in strict JSON
        else:
            assert m["confidence"] == p["confidence"] == row.confidence


def test_fibre_polygons_orient_and_close_rings() -> None:
    m = np.zeros((7, 7), bool)
    m[1:6, 1:6] = True
    m[3, 3] = False
    (rings,) = fibre_polygons(m)
    assert len(rings) == 2
    for i, ring in enumerate(rings):
        x, y = ring[:, 1], ring[:, 0]
        area = 0.5 * (np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))
        assert (ring[0] == ring[-1]).all() and (area > 0) == (i == 0)
    assert abs(0.5 * abs(np.dot(rings[0][:-1, 1], rings[0][1:, 0]) - np.dot(rings[0][1:, 1], rings[0][:-1, 0]))
               - 0.5 * abs(np.dot(rings[1][:-1, 1], rings[1][1:, 0]) - np.dot(rings[1][1:, 1], rings[1][:-1, 0]))
               - 24) <= 0.5  # 24 pixels: the midpoint outline loses half a pixel per piece, a hole gives it back


def test_unwritable_output_is_one_line(constructed, tmp_path) -> None:
    from nclsm_scale.errors import SlideWriteError

    (tmp_path / "file").write_text("")
    with pytest.raises(SlideWriteError, match="cannot write"):
        export_geojson(constructed["path"], constructed["table"], constructed["meta"], tmp_path / "file" / "x.geojson")


@pytest.mark.parametrize("block_px", [5, 16, 40])
def test_ownership_is_measures_first_pixel_rule(constructed, block_px) -> None:
    from nclsm_scale.grid import BlockGrid
    from nclsm_scale.measure.driver import owned_ids
    from nclsm_scale.report.geojson import first_pixel_owned

    lab, table = constructed["labels"], constructed["table"]
    boxes = table[["fibre_id", "bbox_y0_px", "bbox_x0_px", "bbox_y1_px", "bbox_x1_px"]].to_numpy(np.int64)
    owners = np.zeros(len(boxes), int)
    for b in BlockGrid(lab.shape, block_px).blocks():
        core = (b.y0, b.x0, b.y1, b.x1)
        mine = first_pixel_owned(lab, boxes, (0, 0), core)
        assert boxes[mine, 0].tolist() == owned_ids(lab, core).tolist()
        owners += mine
    assert (owners == 1).all()


def test_an_empty_table_gives_an_empty_collection(constructed, tmp_path) -> None:
    c = {**constructed, "table": constructed["table"].iloc[:0]}
    _, fc = _export(c, tmp_path)
    assert fc == {"type": "FeatureCollection", "features": []}
