"""Class edits read back from QuPath GeoJSON: what QuPath keeps, and one clear error per problem."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from nclsm_scale.curate.qupath import qupath_edits, qupath_overrides
from nclsm_scale.errors import ValidationError

TABLE = pd.DataFrame({
    "fibre_id": [1, 2, 3], "curation_class": ["AM", "FR", "AM"],
    "bbox_x0_px": [0, 20, 40], "bbox_y0_px": [0, 0, 0], "bbox_x1_px": [10, 30, 50], "bbox_y1_px": [10, 10, 10],
})


def _square(x0: float) -> dict:
    ring = [[x0 + 1, 1], [x0 + 9, 1], [x0 + 9, 9], [x0 + 1, 9], [x0 + 1, 1]]
    return {"type": "Polygon", "coordinates": [ring]}


def _feature(fid: int, cls: str | None, *, measurements=None, **props) -> dict:
    """A feature as QuPath writes it: an id, geometry and only the properties QuPath keeps."""
    p = {"objectType": "detection", "name": f"fibre {fid}",
         "measurements": measurements if measurements is not None else {"fibre_id": fid, "CSA µm²": 50.0}, **props}
    if cls is not None:
        p["classification"] = {"name": cls, "color": [255, 0, 0]}
    return {"type": "Feature", "id": f"00000000-0000-4000-8000-00000000000{fid}",
            "geometry": _square(20 * (fid - 1)), "properties": p}


def _write(tmp_path, features, wrap=True):
    path = tmp_path / "qupath.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features} if wrap else features))
    return path


def test_changed_classes_become_overrides(tmp_path) -> None:
    path = _write(tmp_path, [_feature(1, "NTM"), _feature(2, "AM"), _feature(3, "AM")])
    ov = qupath_overrides(qupath_edits(path, TABLE, "S1"), TABLE)
    assert ov.to_dict("list") == {"fibre_id": [1, 2], "class": ["NTM", "AM"], "reasons": ["NTM", ""]}


def test_fibre_id_is_found_wherever_qupath_left_it(tmp_path) -> None:
    feats = [
        _feature(1, "FR", measurements=[{"name": "fibre_id", "value": 1.0}]),  # QuPath before 0.4: a list
        _feature(2, "am", measurements={}),  # name "fibre 2" only; class names are case-insensitive
        _feature(3, "NTM", measurements={}, name="renamed", metadata={"fibre_id": "3", "slide": "S1"}),
        {"type": "Feature", "geometry": _square(100), "properties": {"objectType": "annotation"}},  # user drawing
    ]
    edits = qupath_edits(_write(tmp_path, feats, wrap=False), TABLE, "S1")  # QuPath's plain-array export
    assert edits.to_dict("list") == {"fibre_id": [1, 2, 3], "class": ["FR", "AM", "NTM"]}
    names = {"type": "Feature", "geometry": _square(0),
             "properties": {"name": "fibre 1", "classification": {"names": ["NTM"], "color": [1, 2, 3]}}}
    assert qupath_edits(_write(tmp_path, [names]), TABLE, "S1")["class"].tolist() == ["NTM"]


@pytest.mark.parametrize(("features", "message"), [
    ([_feature(1, "Tumor")], r"unknown class\(es\) \['TUMOR'\]; allowed: AM, DEBRIS"),
    ([_feature(1, None)], r"1 fibre\(s\) have no classification"),
    ([_feature(9, "AM")], r"1 fibre_id\(s\) not in slide 'S1', e.g. \[9\]"),
    ([_feature(1, "AM"), _feature(1, "NTM")], r"fibre_id\(s\) \[1\] appear more than once"),
    ([_feature(1, "AM", metadata={"slide": "S2"})], r"features of slide 'S2', not 'S1'"),
    ([_feature(1, "AM", slide="S2")], r"features of slide 'S2', not 'S1'"),
    ([{**_feature(1, "AM"), "geometry": _square(300)}], r"lie away from the fibres of slide 'S1'.*another slide"),
    ([_feature(1, "AM", measurements={"fibre_id": 1.5})], r"fibre_id must be positive integers"),
    ([{"type": "Feature", "geometry": _square(0), "properties": {"objectType": "detection"}}],
     r"1 detection\(s\) carry no fibre_id"),
])
def test_problems_are_one_line_naming_the_file(tmp_path, features, message) -> None:
    path = _write(tmp_path, features)
    with pytest.raises(ValidationError, match=message) as err:
        qupath_edits(path, TABLE, "S1")
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_not_geojson(tmp_path) -> None:
    path = tmp_path / "bad.geojson"
    path.write_text("{not json")
    with pytest.raises(ValidationError, match="cannot read the QuPath GeoJSON"):
        qupath_edits(path, TABLE, "S1")
    path.write_text('{"type": "Point", "coordinates": [0, 0]}')
    with pytest.raises(ValidationError, match="not a GeoJSON FeatureCollection"):
        qupath_edits(path, TABLE, "S1")
