"""The run directory and slide names: every path a run reads or writes, and the table files in it.

::

    RUN/
      slides/<slide>.ome.zarr        converted slides (convert); labels/fibres, labels/regions (segment),
                                     labels/folds and the classes in labels/fibres' metadata (curate) inside
      slides/<slide>.ome.zarr.segment/  segment's resumable intermediate state (:func:`work_dir`)
      tables/measure/<slide>.parquet one row per fibre: measurements (measure)
      tables/curate/<slide>.parquet  one row per fibre: classes, reasons, fold fraction (curate), and
                     <slide>.overrides.csv the user overrides curate remembers
      tables/fibres/<slide>.parquet  one row per fibre, every column: the manifest's metadata, measure's and
                                     curate's joined (aggregate); the folder reads as one dataset (:func:`read_fibres`)
      tables/manifest.csv            slide metadata (slide, subject, diagnosis, muscle, ...)
      tables/slides.parquet, .csv    one row per slide (aggregate)
      tables/groups.parquet, .csv    one row per metadata group (aggregate, with a manifest)
      tables/histograms.nc           per-slide histograms as an xarray Dataset
      report/index.html              the report, PNG figures and <slide>.geojson beside it
      run.json                       config, versions, model hash (written by ``run``)

Each stage writes only its own files, so rerunning or deleting one stage's output
never touches another's. Tables are written by :func:`write_table` with their
declared columns (:mod:`nclsm_scale.tables`): each Parquet field's metadata holds
its ``unit`` and ``description``, the file's key-value metadata the schema version
under ``nclsm_scale.schema_version``. A fibre table also carries its provenance
there under ``nclsm`` (slide path, segmentation level, pixel sizes, tissue areas),
so later stages need only the table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from nclsm_scale.errors import SlideReadError, SlideWriteError
from nclsm_scale.tables import SCHEMA_VERSION, Column

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "IMAGE_SUFFIXES",
    "RunLayout",
    "SCHEMA_KEY",
    "read_fibre_table",
    "read_fibres",
    "read_table_meta",
    "slide_id_of",
    "slide_name",
    "work_dir",
    "write_table",
]

_META_KEY = b"nclsm"
#: Key of the schema version (:data:`nclsm_scale.tables.SCHEMA_VERSION`) in a table file's key-value metadata.
SCHEMA_KEY = b"nclsm_scale.schema_version"

#: File name endings a slide's id is cut from (the longest that matches, case-insensitive).
IMAGE_SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.zarr", ".tiff", ".tif", ".zarr", ".svs", ".ndpi", ".btf",
                  ".tf8", ".scn", ".qptiff", ".png", ".jpg", ".jpeg")


def slide_name(slide_path: str | Path) -> str:
    """Slide name of a store path: ``run/slides/S1.ome.zarr`` -> ``S1``."""
    return Path(str(slide_path).rstrip("/")).name.removesuffix(".zarr").removesuffix(".ome")


def slide_id_of(path: str | Path) -> str:
    """Slide id of a source file: its name without the image suffixes (``S1.ome.tiff`` -> ``S1``)."""
    name = Path(str(path).rstrip("/")).name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def work_dir(store_path: str | Path, stage: str) -> Path:
    """Folder of a stage's intermediate state of a slide, beside its store: ``<store>.<stage>``."""
    p = Path(str(store_path).rstrip("/"))
    return p.with_name(f"{p.name}.{stage}")


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run directory (nothing is created until a stage writes)."""

    root: Path

    @classmethod
    def for_slide(cls, slide_path: str | Path) -> RunLayout:
        """The run a slide belongs to: the parent of ``slides/``, else the slide's own folder."""
        parent = Path(str(slide_path).rstrip("/")).resolve().parent
        return cls(parent.parent if parent.name == "slides" else parent)

    @property
    def slides(self) -> Path:
        """Folder of converted slides."""
        return self.root / "slides"

    @property
    def tables(self) -> Path:
        """Folder of tables."""
        return self.root / "tables"

    @property
    def fibres(self) -> Path:
        """Folder of the per-slide fibre tables users read (every column)."""
        return self.tables / "fibres"

    @property
    def measure_tables(self) -> Path:
        """Folder of ``measure``'s per-slide tables."""
        return self.tables / "measure"

    @property
    def curate_tables(self) -> Path:
        """Folder of ``curate``'s per-slide tables and remembered overrides."""
        return self.tables / "curate"

    @property
    def manifest(self) -> Path:
        """The run's copy of the slide metadata (CSV with a ``slide`` column)."""
        return self.tables / "manifest.csv"

    @property
    def slides_table(self) -> Path:
        """Per-slide statistics (Parquet; a CSV copy beside it)."""
        return self.tables / "slides.parquet"

    @property
    def groups_table(self) -> Path:
        """Per-group statistics (Parquet; a CSV copy beside it)."""
        return self.tables / "groups.parquet"

    @property
    def histograms(self) -> Path:
        """Per-slide histograms (netCDF)."""
        return self.tables / "histograms.nc"

    @property
    def report(self) -> Path:
        """Report folder (``index.html``, PNG figures, GeoJSON)."""
        return self.root / "report"

    @property
    def run_json(self) -> Path:
        """Run provenance (config, versions, model hash)."""
        return self.root / "run.json"

    def run_record(self) -> dict[str, Any]:
        """What ``run.json`` holds; empty when it is absent or unreadable."""
        try:
            record = json.loads(self.run_json.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}
        return record if isinstance(record, dict) else {}

    def slide(self, name: str) -> Path:
        """Store of slide ``name``."""
        return self.slides / f"{name}.ome.zarr"

    def fibre_table(self, name: str) -> Path:
        """The fibre table users read of slide ``name``."""
        return self.fibres / f"{name}.parquet"

    def measure_table(self, name: str) -> Path:
        """``measure``'s table of slide ``name``."""
        return self.measure_tables / f"{name}.parquet"

    def curate_table(self, name: str) -> Path:
        """``curate``'s table of slide ``name``."""
        return self.curate_tables / f"{name}.parquet"

    def overrides(self, name: str) -> Path:
        """The overrides ``curate`` remembers for slide ``name``."""
        return self.curate_tables / f"{name}.overrides.csv"

    def stage_outputs(self, name: str, stage: str) -> list[Path]:
        """What stage ``stage`` writes for slide ``name`` (the store's ``labels/`` belong to the later stages)."""
        store = self.slide(name)
        outputs = {
            "convert": [store],
            "segment": [store / "labels" / "fibres", store / "labels" / "regions"],
            "measure": [self.measure_table(name)],
            "curate": [store / "labels" / "folds", self.curate_table(name)],
        }
        return outputs[stage]

    def stage_skip(self, name: str, stage: str) -> list[Path]:
        """Paths inside ``stage_outputs(name, stage)`` that its manifest leaves out.

        convert's store holds the later stages' ``labels/``. The metadata of
        ``labels/fibres`` is segment's, but ``curate`` rewrites its ``image-label``
        colours and properties (the classes, for napari) each time it runs, so
        segment's manifest lists only its arrays; segment's completion mark in that
        metadata is checked on its own.
        """
        labels = self.slide(name) / "labels"
        return {"convert": [labels], "segment": [labels / "fibres" / "zarr.json"]}.get(stage, [])

    def archive_outputs(self) -> list[Path]:
        """What ``aggregate`` and ``report`` write for the whole archive."""
        csv = [p.with_suffix(".csv") for p in (self.slides_table, self.groups_table)]
        return [self.fibres, self.slides_table, self.groups_table, *csv, self.histograms, self.manifest, self.report]

    def curated_slides(self) -> list[str]:
        """Names of the slides with a curate table, sorted."""
        return sorted(p.stem for p in self.curate_tables.glob("*.parquet"))


def _arrow_type(col: Column) -> pa.DataType:
    import numpy as np
    import pyarrow as pa

    return pa.string() if col.dtype == "str" else pa.from_numpy_dtype(np.dtype(col.dtype))


def write_table(
    table: pd.DataFrame, path: str | Path, columns: Mapping[str, Column], meta: Mapping[str, Any] | None = None
) -> Path:
    """Write ``table`` to Parquet atomically, every column typed and described by its declaration.

    Each field gets its declared type (text columns: their values as ``str``, NaN
    as null) and ``unit`` and ``description`` metadata; the file gets
    :data:`SCHEMA_KEY` and, when given, ``meta`` (JSON) under ``nclsm``.

    Raises
    ------
    KeyError
        When a column of ``table`` is not in ``columns`` (a programming error).
    SlideWriteError
        When the file cannot be written.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    undeclared = [c for c in table.columns if c not in columns]
    if undeclared:
        raise KeyError(f"undeclared table columns: {undeclared}")
    schema = pa.schema([
        pa.field(k, _arrow_type(columns[k]), metadata={"unit": columns[k].unit, "description": columns[k].description})
        for k in table.columns
    ])
    text = {k: table[k].where(table[k].isna(), table[k].astype(str)) for k in table.columns
            if columns[k].dtype == "str"}
    arrow = pa.Table.from_pandas(table.assign(**text), schema=schema, preserve_index=False)
    schema_meta = {**(arrow.schema.metadata or {}), SCHEMA_KEY: str(SCHEMA_VERSION).encode()}
    if meta is not None:
        schema_meta[_META_KEY] = json.dumps(dict(meta), default=str).encode()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(arrow.replace_schema_metadata(schema_meta), tmp)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SlideWriteError(f"cannot write the table {path}: {exc}") from None
    return path


def read_table_meta(path: str | Path) -> dict[str, Any]:
    """The ``nclsm`` metadata of a fibre table (``{}`` when it has none)."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, ValueError) as exc:
        raise SlideReadError(f"cannot read the fibre table {path}: {exc}") from None
    return json.loads(meta[_META_KEY]) if _META_KEY in meta else {}


def read_fibre_table(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A fibre table and its ``nclsm`` metadata.

    Raises
    ------
    SlideReadError
        When the table is missing, unreadable or of another schema version (written by another version of
        nclsm-scale).
    """
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise SlideReadError(f"fibre table {path} not found; run `nclsm-scale measure` first.")
    try:
        version = (pq.read_schema(path).metadata or {}).get(SCHEMA_KEY, b"none").decode()
        table = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise SlideReadError(f"cannot read the fibre table {path}: {exc}") from None
    if version != str(SCHEMA_VERSION):
        raise SlideReadError(
            f"{path} has table schema version {version}, this nclsm-scale writes {SCHEMA_VERSION}; run the stage "
            "that wrote it again (measure for tables/measure, then curate)."
        )
    return table, read_table_meta(path)


def read_fibres(run_dir: str | Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Every slide's fibres of an aggregated run as one DataFrame (``tables/fibres/``, read as one dataset).

    Parameters
    ----------
    run_dir : the run directory.
    columns : sequence of str, optional
        Read only these columns (default all, :func:`nclsm_scale.tables.fibre_columns` order).

    Returns
    -------
    DataFrame
        One row per fibre, slides in name order, ``slide`` first.

    Raises
    ------
    SlideReadError
        When the run has no fibre tables (aggregate it first) or they cannot be read.

    Examples
    --------
    >>> fibres = read_fibres("run")  # doctest: +SKIP
    >>> fibres[fibres["curation_class"] == "AM"].groupby("slide")["feret_min_um"].median()  # doctest: +SKIP
    """
    folder = RunLayout(Path(run_dir)).fibres
    if not any(folder.glob("*.parquet")):
        raise SlideReadError(f"{folder}: no fibre tables; run `nclsm-scale run` or `curate` first.")
    try:
        return pd.read_parquet(folder, columns=None if columns is None else list(columns))
    except (OSError, ValueError) as exc:
        raise SlideReadError(f"cannot read the fibre tables in {folder}: {exc}") from None
