"""apply_overrides: user corrections from a CSV, with clear errors."""

from __future__ import annotations

import pandas as pd
import pytest

from nclsm_scale.curate import apply_overrides
from nclsm_scale.errors import ValidationError


@pytest.fixture()
def table():
    return pd.DataFrame(
        {
            "fibre_id": [1, 2, 3],
            "curation_class": ["AM", "NTM", "FAM"],
            "reasons": ["", "NTM", "FAM;NTM"],
            "confidence": [0.9, 0.6, 0.7],
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
