"""The run directory and slide names: every path a run reads or writes, and the table files in it.

::

    RUN/
      slides/<slide>.ome.zarr        converted slides (convert); labels/fibres, labels/regions (segment),
                                     labels/folds (curate) inside
      slides/<slide>.ome.zarr.segment/  segment's resumable intermediate state (:func:`work_dir`)
      tables/measure/<slide>.parquet one row per fibre: measurements (measure)
      tables/curate/<slide>.parquet  one row per fibre: classes, reasons, fold fraction (curate), and
                     <slide>.overrides.csv the user overrides curate remembers
      tables/fibres/<slide>.parquet  one row per fibre, every column: measure's and curate's joined (aggregate)
      tables/manifest.csv            slide metadata (slide, subject, diagnosis, muscle, ...)
      tables/slides.parquet, .csv    one row per slide (aggregate)
      tables/groups.parquet, .csv    one row per metadata group (aggregate, with a manifest)
      tables/histograms.nc           per-slide histograms as an xarray Dataset
      report/index.html              the report, PNG figures and <slide>.geojson beside it
      run.json                       config, versions, model hash (written by ``run``)

Each stage writes only its own files, so rerunning or deleting one stage's output
never touches another's. A fibre table carries its own provenance in the Parquet
key-value metadata under ``nclsm`` (slide path, segmentation level, pixel size,
tissue areas), so later stages need only the table.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from nclsm_scale.errors import SlideReadError, SlideWriteError

__all__ = [
    "IMAGE_SUFFIXES",
    "RunLayout",
    "read_fibre_table",
    "read_table_meta",
    "slide_id_of",
    "slide_name",
    "work_dir",
    "write_fibre_table",
]

_META_KEY = b"nclsm"

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
        """Paths inside ``stage_outputs(name, stage)`` that other stages own (the store's ``labels/``)."""
        return [self.slide(name) / "labels"] if stage == "convert" else []

    def archive_outputs(self) -> list[Path]:
        """What ``aggregate`` and ``report`` write for the whole archive."""
        csv = [p.with_suffix(".csv") for p in (self.slides_table, self.groups_table)]
        return [self.fibres, self.slides_table, self.groups_table, *csv, self.histograms, self.manifest, self.report]

    def curated_slides(self) -> list[str]:
        """Names of the slides with a curate table, sorted."""
        return sorted(p.stem for p in self.curate_tables.glob("*.parquet"))


def write_fibre_table(table: pd.DataFrame, path: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``table`` to Parquet atomically with ``meta`` (JSON) in the file's key-value metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrow = pa.Table.from_pandas(table, preserve_index=False)
        schema_meta = dict(arrow.schema.metadata or {})
        schema_meta[_META_KEY] = json.dumps(meta, default=str).encode()
        pq.write_table(arrow.replace_schema_metadata(schema_meta), tmp)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SlideWriteError(f"cannot write the fibre table {path}: {exc}") from None
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
    """A fibre table and its ``nclsm`` metadata."""
    path = Path(path)
    if not path.is_file():
        raise SlideReadError(f"fibre table {path} not found; run `nclsm-scale measure` first.")
    try:
        table = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise SlideReadError(f"cannot read the fibre table {path}: {exc}") from None
    return table, read_table_meta(path)
