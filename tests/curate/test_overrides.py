"""apply_overrides: user corrections from a CSV, with clear errors."""

from __future__ import annotations

import pandas as pd
import pytest

from nclsm_scale.curate import apply_overrides, read_overrides
from nclsm_scale.curate.overrides import load_stored_overrides, merge_overrides, save_stored_overrides
from nclsm_scale.errors import ValidationError


@pytest.fixture()
def table():
    return pd.DataFrame(
        {
            "fibre_id": [1, 2, 3],
            "curation_class": ["AM", "NTM", "FAM"],
            "reasons": ["", "NTM", "FAM;NTM"],
            "confidence": [0.9, 0.6, 0.7],
            "area_seg_px": [100, 200, 300],
        }
    )


def test_overrides_replace_class_reasons_and_confidence(table, tmp_path):
    p = tmp_path / "ov.csv"
    p.write_text("fibre_id,class,reasons\n2,am,\n3,FR,FR;FAM\n")
    out = apply_overrides(table, p)
    assert out.curation_class.tolist() == ["AM", "AM", "FR"]
    assert out.reasons.tolist() == ["", "", "FR;FAM"]
    assert out.confidence.tolist() == [0.9, 1.0, 1.0] and out.overridden.tolist() == [
        False,
        True,
        True,
    ]
    assert table.curation_class.tolist() == ["AM", "NTM", "FAM"]  # input untouched


def test_reasons_default_to_the_class(table, tmp_path):
    p = tmp_path / "ov.csv"
    p.write_text("fibre_id,class\n1,EDGE\n")
    assert apply_overrides(table, p).reasons.tolist()[0] == "EDGE"


@pytest.mark.parametrize(
    "text, match",
    [
        ("fibre_id,class\n9,AM\n", "not in the table"),
        ("fibre_id,class\n1,GOOD\n", "unknown class"),
        ("fibre_id,class,reasons\n1,FR,FR;XX\n", "unknown reason"),
        ("fibre_id,class\n1,AM\n1,FR\n", "more than once"),
        ("id,class\n1,AM\n", "missing column"),
        ("fibre_id,class\nabc,AM\n", "integers"),
    ],
)
def test_bad_override_files_raise(table, tmp_path, text, match):
    p = tmp_path / "ov.csv"
    p.write_text(text)
    with pytest.raises(ValidationError, match=match):
        apply_overrides(table, p)


def test_missing_file_raises(table, tmp_path):
    with pytest.raises(ValidationError, match="cannot read"):
        apply_overrides(table, tmp_path / "nope.csv")


def test_newer_overrides_win_per_fibre(tmp_path):
    old, new = tmp_path / "old.csv", tmp_path / "new.csv"
    old.write_text("fibre_id,class\n3,FR\n1,NTM\n")
    new.write_text("fibre_id,class,reasons\n3,AM,\n2,FAM,FAM;NTM\n")
    merged = merge_overrides(read_overrides(old), read_overrides(new))
    assert merged.to_dict("list") == {
        "fibre_id": [1, 2, 3], "class": ["NTM", "FAM", "AM"], "reasons": ["NTM", "FAM;NTM", ""]
    }


def test_stored_overrides_round_trip_and_drop_changed_fibres(table, tmp_path, caplog):
    ov = tmp_path / "ov.csv"
    ov.write_text("fibre_id,class\n1,FR\n3,AM\n")
    store = tmp_path / "S1.overrides.csv"
    assert store == tmp_path / "S1.overrides.csv"
    assert save_stored_overrides(store, read_overrides(ov), table) == store
    back = load_stored_overrides(store, table)
    assert back.to_dict("list") == {"fibre_id": [1, 3], "class": ["FR", "AM"], "reasons": ["FR", ""]}
    resegmented = table.assign(area_seg_px=[100, 200, 301])
    with caplog.at_level("WARNING", logger="nclsm_scale.curate.overrides"):
        assert load_stored_overrides(store, resegmented)["fibre_id"].tolist() == [1]
    assert "1 stored override(s) dropped" in caplog.text
    assert load_stored_overrides(store, table.iloc[1:])["fibre_id"].tolist() == [3]
    assert save_stored_overrides(store, back.iloc[:0], table) is None and not store.exists()
    assert load_stored_overrides(store, table).empty


def test_stored_overrides_of_earlier_versions_name_the_area_area_px(table, tmp_path):
    store = tmp_path / "S1.overrides.csv"
    store.write_text("fibre_id,class,reasons,area_px\n1,FR,FR,100\n3,AM,,299\n")
    assert load_stored_overrides(store, table)["fibre_id"].tolist() == [1]  # fibre 3 changed
    store.write_text("fibre_id,class,reasons\n1,FR,FR\n")
    with pytest.raises(ValidationError, match="area_seg_px"):
        load_stored_overrides(store, table)
