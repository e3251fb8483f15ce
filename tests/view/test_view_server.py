"""The viewer over real HTTP on a real run: tiles against the stored pyramid, fibres, class edits, re-aggregation."""

from __future__ import annotations

import json

import imagecodecs
import numpy as np
import pandas as pd
import pytest
import zarr

from nclsm_scale.layout import read_fibre_table
from nclsm_scale.normalise import NormStats, slide_norm
from nclsm_scale.slide import open_slide
from nclsm_scale.tables import FibreClass
from nclsm_scale.view.tiles import composite_tile


def _png(http, url: str) -> np.ndarray:
    status, body, ctype = http(url)
    assert status == 200 and ctype == "image/png", body[:200]
    return imagecodecs.png_decode(body)


def _boundaries(labels: np.ndarray, width: int = 2) -> np.ndarray:
    """Labelled pixels with another value up to ``width`` px along their row or column (outside: background)."""
    p, w = np.pad(labels, width), width
    ny, nx = labels.shape
    diff = np.zeros(labels.shape, bool)
    for d in range(-w, w + 1):
        diff |= (p[w + d : w + d + ny, w:-w] != labels) | (p[w:-w, w + d : w + d + nx] != labels)
    return diff & (labels > 0)


@pytest.mark.parametrize(("level", "tx", "ty"), [(0, 1, 2), (1, 1, 0), (2, 0, 0)])
def test_image_tile_is_the_composite_of_the_stored_level_with_the_runs_normalisation(viewer, view_run, http,
                                                                                     level, tx, ty) -> None:
    store = view_run["store"]
    slide = open_slide(store)
    whole = np.asarray(zarr.open_array(str(store), path=str(level), mode="r"))
    stats = NormStats.model_validate(view_run["norm"])
    shown = sorted(slide.roles[r] for r in ("membrane", "mito") if r in slide.roles)
    colors = [(255, 0, 0) if c == slide.roles.get("membrane") else (0, 255, 0) for c in shown]
    want = composite_tile(whole, stats, shown, colors)[ty * 256 : (ty + 1) * 256, tx * 256 : (tx + 1) * 256]
    got = _png(http, f"{viewer['url']}/tiles/V1/image/{level}/{tx}_{ty}.png")
    assert got.shape == want.shape and (got == want).all()
    status, jpeg, ctype = http(f"{viewer['url']}/tiles/V1/image/{level}/{tx}_{ty}.jpg")
    assert status == 200 and ctype == "image/jpeg"
    assert np.abs(imagecodecs.jpeg8_decode(jpeg).astype(int) - want).mean() < 8  # lossy, but the same tile
    # the store's own constants would give another image: run.json's were used
    assert (composite_tile(whole, slide_norm(slide), shown, colors)[: got.shape[0], : got.shape[1]] != want).any()


@pytest.mark.parametrize(("level", "tx", "ty"), [(0, 1, 1), (1, 0, 1)])
def test_fibre_tile_paints_class_colours_exactly_on_fibre_boundaries(viewer, view_run, http, level, tx, ty) -> None:
    store, layout = view_run["store"], view_run["layout"]
    labels = np.asarray(zarr.open_array(str(store), path=f"labels/fibres/{level}", mode="r")[0])
    table, _ = read_fibre_table(layout.fibre_table("V1"))
    lut = np.zeros((labels.max() + 1, 3), np.uint8)
    for row in table.itertuples():
        lut[row.fibre_id] = FibreClass(row.curation_class).rgb
    window = np.s_[ty * 256 : (ty + 1) * 256, tx * 256 : (tx + 1) * 256]
    edge = _boundaries(labels)[window]
    got = _png(http, f"{viewer['url']}/tiles/V1/fibres/{level}/{tx}_{ty}.png")
    assert got.shape == (*edge.shape, 4) and edge.sum() > 500
    assert (got[..., 3] == np.where(edge, 255, 0)).all()
    assert (got[edge][:, :3] == lut[labels[window][edge]]).all()
    tinted = _png(http, f"{viewer['url']}/tiles/V1/fibres/{level}/{tx}_{ty}.png?fill=48")
    assert (tinted[edge] == got[edge]).all() and set(np.unique(tinted[~edge][:, 3])) == {0, 48}



def test_fibre_tile_leaves_out_hidden_classes_and_reasons(viewer, view_run, http) -> None:
    labels = np.asarray(zarr.open_array(str(view_run["store"]), path="labels/fibres/2", mode="r")[0])
    table, _ = read_fibre_table(view_run["layout"].fibre_table("V1"))
    got = _png(http, f"{viewer['url']}/tiles/V1/fibres/2/0_0.png?hide=AM&hide_reasons=EDGE")
    hidden = set(table.loc[(table["curation_class"] == "AM") | table["reasons"].str.contains("EDGE"), "fibre_id"])
    drawn = set(labels[got[..., 3] > 0].tolist())
    assert drawn and hidden and drawn == set(labels[_boundaries(labels)].tolist()) - hidden


def test_fold_tile_covers_the_fold_mask(viewer, view_run, http) -> None:
    level = 3
    folds = np.asarray(zarr.open_array(str(view_run["store"]), path=f"labels/folds/{level}", mode="r")[0])
    got = _png(http, f"{viewer['url']}/tiles/V1/folds/{level}/0_0.png")
    assert folds.any() and ((got[..., 3] > 0) == (folds > 0)).all()


def test_fibre_endpoint_returns_the_fibre_under_a_level0_point(viewer, view_run, http) -> None:
    labels0 = np.asarray(zarr.open_array(str(view_run["store"]), path="labels/fibres/0", mode="r")[0])
    table, _ = read_fibre_table(view_run["layout"].fibre_table("V1"))
    rng = np.random.default_rng(0)
    ys, xs = np.nonzero(labels0)
    for i in rng.choice(len(ys), 8, replace=False):
        status, body, _ = http(f"{viewer['url']}/api/V1/fibre?x={xs[i]}&y={ys[i]}")
        fibre = json.loads(body)["fibre"]
        row = table[table["fibre_id"] == labels0[ys[i], xs[i]]].iloc[0]
        assert status == 200 and fibre["fibre_id"] == row["fibre_id"]
        for key in ("area_um2", "feret_min_um", "curation_class", "reasons", "confidence", "not_judged"):
            assert fibre[key] == row[key] or (pd.isna(row[key]) and fibre[key] is None), key
    y, x = np.argwhere(labels0 == 0)[0]
    assert json.loads(http(f"{viewer['url']}/api/V1/fibre?x={x}&y={y}")[1]) == {"fibre": None}


def test_bad_requests_answer_one_line_errors(viewer, http) -> None:
    status, body, _ = http(f"{viewer['url']}/api/NOPE/fibre?x=1&y=1")
    assert status == 404 and "unknown slide 'NOPE'" in json.loads(body)["error"] and "V1" in json.loads(body)["error"]
    assert http(f"{viewer['url']}/tiles/NOPE/image/0/0_0.png")[0] == 404
    assert http(f"{viewer['url']}/tiles/V1/image/9/0_0.png")[0] == 404
    assert http(f"{viewer['url']}/tiles/V1/image/0/9_0.png")[0] == 404
    assert http(f"{viewer['url']}/api/V1/fibre?x=99999&y=1")[0] == 400
    assert http(f"{viewer['url']}/tiles/V1/fibres/0/0_0.png?hide=XX")[0] == 400
    assert http(f"{viewer['url']}/tiles/V1/fibres/0/0_0.jpg")[0] == 404
    assert http(f"{viewer['url']}/static/../run_view.py")[0] == 404
    status, body, ctype = http(f"{viewer['url']}/slide/V1")
    assert status == 200 and b"openseadragon.min.js" in body and ctype.startswith("text/html")
    assert http(f"{viewer['url']}/static/openseadragon/openseadragon.min.js")[0] == 200


def test_a_class_change_writes_the_overrides_and_reaggregation_counts_it(viewer, view_run, http) -> None:
    layout = view_run["layout"]
    before = pd.read_parquet(layout.slides_table).set_index("slide").loc["V1"]
    table, _ = read_fibre_table(layout.fibre_table("V1"))
    am = table[table["curation_class"] == "AM"].iloc[0]
    fid = int(am["fibre_id"])
    status, body, _ = http(f"{viewer['url']}/api/V1/class", {"fibre_id": fid, "class": "FR"})
    assert status == 200, body
    stored = pd.read_csv(layout.overrides("V1"))
    assert stored.to_dict("records") == [{"fibre_id": fid, "class": "FR", "reasons": "FR",
                                          "area_seg_px": int(am["area_seg_px"])}]
    x, y = round(am["centroid_x_px"]), round(am["centroid_y_px"])
    fibre = json.loads(http(f"{viewer['url']}/api/V1/fibre?x={x}&y={y}")[1])["fibre"]
    assert fibre["fibre_id"] == fid and fibre["curation_class"] == "FR" and fibre["overridden"] is True
    assert json.loads(http(f"{viewer['url']}/api/V1/info")[1])["edited"] == ["V1"]
    assert http(f"{viewer['url']}/api/V1/class", {"fibre_id": 10**7, "class": "FR"})[0] == 400
    assert http(f"{viewer['url']}/api/V1/class", {"fibre_id": fid, "class": "BAD"})[0] == 400

    status, body, _ = http(f"{viewer['url']}/api/reaggregate", {})
    assert status == 200, body
    after = pd.read_parquet(layout.slides_table).set_index("slide").loc["V1"]
    assert after["n_AM"] == before["n_AM"] - 1 and after["n_FR"] == before["n_FR"] + 1
    assert after["n_overridden"] == before["n_overridden"] + 1
    assert json.loads(body)["summary"]["V1"]["n_AM"] == after["n_AM"]
    assert json.loads(http(f"{viewer['url']}/api/V1/summary")[1])["n_FR"] == after["n_FR"]
    curated, _ = read_fibre_table(layout.curate_table("V1"))
    assert curated.set_index("fibre_id").loc[fid, "curation_class"] == "FR"
    assert json.loads(http(f"{viewer['url']}/api/V1/info")[1])["edited"] == []
