"""Table files of a run: declared columns with units, the schema version, and reading them back."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest

from nclsm_scale.errors import SlideReadError
from nclsm_scale.layout import SCHEMA_KEY, RunLayout, read_fibre_table, read_fibres, write_table
from nclsm_scale.tables import CURATE_COLUMNS, SCHEMA_VERSION, Column, empty_table


def test_write_table_types_text_and_describes_every_column(tmp_path) -> None:
    columns = {"slide": CURATE_COLUMNS["slide"], "age": Column("float64", "year", "Age at biopsy."),
               "note": Column("str", "", "Free text.")}
    table = pd.DataFrame({"slide": ["S1", "S1"], "age": [61, 62], "note": pd.Series([3, None], dtype=object)})
    path = write_table(table, tmp_path / "t.parquet", columns, {"level": 1})
    schema = pq.read_schema(path)
    assert [str(f.type) for f in schema] == ["string", "double", "string"]
    assert schema.field("age").metadata == {b"unit": b"year", b"description": b"Age at biopsy."}
    assert schema.metadata[SCHEMA_KEY] == str(SCHEMA_VERSION).encode()
    table, meta = read_fibre_table(path)
    assert table["note"].tolist()[0] == "3" and pd.isna(table["note"].tolist()[1]) and meta == {"level": 1}
    with pytest.raises(KeyError, match="undeclared"):
        write_table(pd.DataFrame({"slide": ["S1"], "other": [1]}), tmp_path / "u.parquet", columns)


def test_tables_of_another_schema_version_are_refused(tmp_path) -> None:
    path = tmp_path / "old.parquet"
    empty_table(CURATE_COLUMNS).to_parquet(path)  # written without the contract: no schema version
    with pytest.raises(SlideReadError, match="schema version none"):
        read_fibre_table(path)


def test_read_fibres_needs_an_aggregated_run(tmp_path) -> None:
    RunLayout(tmp_path).fibres.mkdir(parents=True)
    with pytest.raises(SlideReadError, match="no fibre tables"):
        read_fibres(tmp_path)
