"""The fibre tables users read, and per-slide and per-archive statistics from them (``aggregate``).

Fibre types (slides with myosin heavy-chain channels) are summarised over the
analysable fibres: count, share and CSA per type (:func:`type_summary`), the
standard readout of muscle labs; ``not_judged`` names the reasons a slide's
channels or pixel size could not judge for any fibre.

:func:`assemble_fibre_tables` joins each slide's ``measure`` and ``curate`` tables
(:func:`nclsm_scale.tables.join_fibre_tables`) after the slide's manifest
metadata into ``tables/fibres/<slide>.parquet``, all with one schema (the union of
the slides' channel columns, NaN where a slide lacks the channel), so the folder
reads as one dataset (:func:`nclsm_scale.layout.read_fibres`).
:func:`slide_stats` turns one slide's table into one row: fibre counts per class
and per reason code, % analysable, tissue / fold / analysable area, densities,
CSA and min-Feret mean / median / SD / CV and mito intensity quantiles of the
analysable fibres, and curate's slide quality control (:data:`~nclsm_scale.tables.QC_COLUMNS`).
:func:`slide_histograms` bins the same fibres
(``cfg.aggregate`` edges; the last bin is open). :func:`aggregate_tables` does
every slide, joins manifest metadata and pools fibres per metadata group;
:func:`aggregate_run` reads a run's tables and writes ``tables/slides.parquet``
(+ ``.csv``, :data:`~nclsm_scale.tables.SLIDE_COLUMNS`), ``tables/groups.parquet``
(+ ``.csv``, with a manifest, :data:`~nclsm_scale.tables.GROUP_COLUMNS`) and
``tables/histograms.nc`` (xarray; variables with ``units`` and ``long_name``).

Definitions: SD is the sample standard deviation (ddof 1), CV = SD / mean,
densities are fibres per mm2 (all fibres per tissue area; analysable fibres per
analysable area = tissue minus folds); ``mito`` is the background-subtracted
interior mean of the mito channel, ``mito_rel`` that divided by the slide's
median analysable fibre.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nclsm_scale.config import AggregateConfig
from nclsm_scale.errors import ValidationError
from nclsm_scale.layout import SCHEMA_KEY, RunLayout, read_fibre_table, write_table
from nclsm_scale.tables import (
    CURATE_COLUMNS,
    FIBRE_TYPES,
    GROUP_COLUMNS,
    MEASURE_COLUMNS,
    PRIORITY,
    QC_COLUMNS,
    SCHEMA_VERSION,
    SLIDE_COLUMNS,
    TYPE_KEYS,
    Column,
    FibreClass,
    fibre_column,
    fibre_columns,
    join_fibre_tables,
    manifest_columns,
)

__all__ = [
    "AggregateResult",
    "aggregate_run",
    "assemble_fibre_tables",
    "aggregate_tables",
    "read_manifest",
    "slide_histograms",
    "slide_stats",
    "summarise",
    "type_summary",
]

logger = logging.getLogger(__name__)

#: Every class, analysable first, in the order tables and plots show them.
CLASSES = tuple(c.value for c in FibreClass)
#: Histogram variables: (name, fibre-table column or None for mito_rel, config field of the edges, what is binned).
HISTOGRAMS = (
    ("csa", "area_um2", "csa_bins_um2", "cross-sectional area"),
    ("feret_min", "feret_min_um", "feret_min_bins_um", "minimum Feret diameter"),
    ("mito_rel", None, "mito_rel_bins", "mito interior mean over the slide's median analysable fibre"),
)


def type_summary(fibre_type: pd.Series, area_um2: pd.Series) -> dict[str, float]:
    """Count, proportion and CSA per fibre type: the standard fibre-type readout.

    Parameters
    ----------
    fibre_type : Series of str
        One of :data:`FIBRE_TYPES` per fibre.
    area_um2 : Series of float
        CSA per fibre, same index.

    Returns
    -------
    dict of str to float
        ``n_typed`` (fibres of a callable type) and, per type key ``k`` of
        :data:`TYPE_KEYS` (``I``, ``IIa``, ``IIx``, ``I_IIa``, ``IIa_IIx``,
        ``unclassified``): ``type_k_n``; ``type_k_pct``, % of the typed fibres
        (``type_unclassified_pct``: % of all fibres); ``type_k_csa_um2_mean`` and
        ``type_k_csa_um2_median`` (NaN without fibres).

    Raises
    ------
    ValueError
        If a value is not one of :data:`FIBRE_TYPES`.

    Examples
    --------
    >>> s = type_summary(pd.Series(["I", "I", "IIa", "unclassified"]), pd.Series([4000.0, 5000.0, 6000.0, 100.0]))
    >>> s["type_I_n"], s["type_I_pct"], s["type_I_csa_um2_mean"], s["type_unclassified_pct"]
    (2.0, 66.66666666666667, 4500.0, 25.0)
    """
    types = fibre_type.astype(object)
    unknown = sorted(set(types.dropna()) - set(FIBRE_TYPES)) + (["NaN"] if types.isna().any() else [])
    if unknown:
        raise ValueError(f"unknown fibre types {unknown}; expected one of {list(FIBRE_TYPES)}.")
    area = area_um2.reindex(types.index).to_numpy(np.float64)
    typed = int((types != "unclassified").sum())
    out: dict[str, float] = {"n_typed": float(typed)}
    for t, key in TYPE_KEYS.items():
        a = area[(types == t).to_numpy()]
        a = a[np.isfinite(a)]
        n = float((types == t).sum())
        denominator = len(types) if t == "unclassified" else typed
        out[f"type_{key}_n"] = n
        out[f"type_{key}_pct"] = 100.0 * n / denominator if denominator else np.nan
        out[f"type_{key}_csa_um2_mean"] = float(a.mean()) if a.size else np.nan
        out[f"type_{key}_csa_um2_median"] = float(np.median(a)) if a.size else np.nan
    return out


def _moments(values: np.ndarray, prefix: str) -> dict[str, float]:
    v = values[np.isfinite(values)]
    mean = float(v.mean()) if v.size else np.nan
    sd = float(v.std(ddof=1)) if v.size > 1 else np.nan
    return {
        f"{prefix}_mean": mean,
        f"{prefix}_median": float(np.median(v)) if v.size else np.nan,
        f"{prefix}_sd": sd,
        f"{prefix}_cv": sd / mean if v.size > 1 and mean else np.nan,
    }


def _mito(table: pd.DataFrame) -> np.ndarray:
    """The fibres' mito interior means (NaN on a slide without a mito channel)."""
    if "mito_interior_mean" not in table.columns:
        return np.full(len(table), np.nan)
    return table["mito_interior_mean"].to_numpy(np.float64)


def _analysable(table: pd.DataFrame, cfg: AggregateConfig) -> pd.DataFrame:
    if "curation_class" not in table.columns:
        raise ValidationError("the fibre table has no curation_class; run `nclsm-scale curate` first.")
    return table[table["curation_class"].astype(str).isin(cfg.analysable_classes)]


def summarise(table: pd.DataFrame, cfg: AggregateConfig) -> dict[str, float]:
    """Counts, class shares and size / intensity statistics of a set of fibres (one slide or a group)."""
    am = _analysable(table, cfg)
    cls = table["curation_class"].astype(str)
    n = len(table)
    row: dict[str, Any] = {"n_fibres": n}
    for c in CLASSES:
        row[f"n_{c}"] = int((cls == c).sum())
    codes = table["reasons"].astype(str).str.split(";")
    for r in PRIORITY:
        row[f"reason_{r.value}"] = int(codes.map(lambda cs, v=r.value: v in cs).sum())
    row["n_overridden"] = int(table["overridden"].sum()) if "overridden" in table else 0
    row["n_analysable"] = len(am)
    row["pct_analysable"] = 100.0 * len(am) / n if n else np.nan
    row.update(_moments(am["area_um2"].to_numpy(np.float64), "csa_um2"))
    row.update(_moments(am["feret_min_um"].to_numpy(np.float64), "feret_min_um"))
    mito = _mito(am)
    row.update(_moments(mito, "mito"))
    finite = mito[np.isfinite(mito)]
    for q in (10, 90):
        row[f"mito_p{q}"] = float(np.percentile(finite, q)) if finite.size else np.nan
    judged_nowhere = table["not_judged"].astype(str).str.split(";") if "not_judged" in table else pd.Series([])
    row["not_judged"] = ";".join(r.value for r in PRIORITY
                                 if len(judged_nowhere) and judged_nowhere.map(lambda cs, v=r.value: v in cs).all())
    typed = am["fibre_type"].astype(str) if "fibre_type" in am else pd.Series([], dtype=str)
    if len(typed) and (typed != "").all():
        row.update(type_summary(typed, am["area_um2"]))
    return row


def slide_stats(table: pd.DataFrame, meta: Mapping[str, Any], cfg: AggregateConfig) -> dict[str, Any]:
    """One row of slide statistics from a curated table and its metadata (areas in um2)."""
    row: dict[str, Any] = {
        "slide": meta.get("slide_name", ""), "slide_id": meta.get("slide_id", ""),
        "pixel_size_um": meta.get("pixel_size_um", np.nan),
        "segmentation_pixel_size_um": meta.get("segmentation_pixel_size_um", np.nan),
        "segmentation_level": meta.get("level", -1),
    }
    row.update(summarise(table, cfg))
    tissue = float(meta.get("tissue_area_um2", np.nan)) / 1e6
    fold = float(meta.get("fold_area_um2", np.nan)) / 1e6
    row["tissue_area_mm2"] = tissue
    row["fold_area_mm2"] = fold
    row["analysable_area_mm2"] = tissue - fold
    row["fibre_density_per_mm2"] = row["n_fibres"] / tissue if tissue > 0 else np.nan
    row["analysable_density_per_mm2"] = (
        row["n_analysable"] / (tissue - fold) if tissue - fold > 0 else np.nan
    )
    qc = meta.get("qc", {})  # curate's slide QC (tables.QC_COLUMNS); absent from tables curated before it
    row.update({k: qc.get(k, "" if c.dtype == "str" else np.nan) for k, c in QC_COLUMNS.items()})
    return row


def _edges(cfg: AggregateConfig, field: str) -> np.ndarray:
    return np.append(np.asarray(getattr(cfg, field), np.float64), np.inf)


def slide_histograms(table: pd.DataFrame, cfg: AggregateConfig) -> dict[str, np.ndarray]:
    """Counts of analysable fibres per bin: ``csa``, ``feret_min``, ``mito_rel`` (last bin open)."""
    am = _analysable(table, cfg)
    mito = _mito(am)
    finite = mito[np.isfinite(mito)]
    ref = float(np.median(finite)) if finite.size else np.nan
    out = {}
    for name, column, field, _ in HISTOGRAMS:
        values = am[column].to_numpy(np.float64) if column else mito / ref
        values = values[np.isfinite(values)]
        out[name] = np.histogram(values, _edges(cfg, field))[0].astype(np.int64)
    return out


def read_manifest(manifest: pd.DataFrame | Mapping[str, Mapping[str, Any]] | str | Path | None) -> pd.DataFrame | None:
    """A manifest as a DataFrame with a ``slide`` column (from a DataFrame, ``{slide: {col: value}}`` or CSV)."""
    if manifest is None:
        return None
    if isinstance(manifest, (str, Path)):
        try:
            manifest = pd.read_csv(manifest)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise ValidationError(f"{manifest}: cannot read the manifest CSV: {exc}") from None
    if isinstance(manifest, Mapping):
        manifest = pd.DataFrame.from_dict(dict(manifest), orient="index").rename_axis("slide").reset_index()
    df = pd.DataFrame(manifest).copy()
    if "slide" not in df.columns:
        if "slide_id" not in df.columns:
            raise ValidationError(f"the manifest needs a 'slide' or 'slide_id' column, has {list(df.columns)}")
        df = df.rename(columns={"slide_id": "slide"})
    df["slide"] = df["slide"].astype(str)
    return df


@dataclass
class AggregateResult:
    """Archive statistics: one row per slide, per group (or None), and histograms."""

    slides: pd.DataFrame
    groups: pd.DataFrame | None
    histograms: Any  # xarray.Dataset


def aggregate_tables(
    tables: Mapping[str, tuple[pd.DataFrame, Mapping[str, Any]]],
    cfg: AggregateConfig,
    manifest: pd.DataFrame | Mapping[str, Mapping[str, Any]] | str | Path | None = None,
) -> AggregateResult:
    """Statistics of curated tables ``{slide: (table, meta)}``, joined with manifest metadata."""
    names = sorted(tables)
    rows = []
    hists: dict[str, list[np.ndarray]] = {name: [] for name, *_ in HISTOGRAMS}
    for name in names:
        table, meta = tables[name]
        rows.append({**slide_stats(table, meta, cfg), "slide": name})
        for key, counts in slide_histograms(table, cfg).items():
            hists[key].append(counts)
    slides = pd.DataFrame(rows)
    meta_df = read_manifest(manifest)
    groups = None
    if meta_df is not None:
        extra = [c for c in meta_df.columns if c != "slide" and c not in slides.columns]
        slides = slides.merge(meta_df[["slide", *extra]], on="slide", how="left")
        by = [c for c in cfg.group_by if c in slides.columns]
        if by:
            groups = _group_stats(tables, slides, by, cfg)
    return AggregateResult(slides, groups, _histogram_dataset(names, hists, slides, cfg))


def _histogram_dataset(names: list[str], hists: dict[str, list[np.ndarray]], slides: pd.DataFrame,
                       cfg: AggregateConfig) -> Any:
    """The histograms as an xarray Dataset; each variable has ``units`` (CF: "1" if dimensionless) and ``long_name``."""
    import xarray as xr

    coords: dict[str, Any] = {"slide": ("slide", names, {"long_name": "slide name in the run"})}
    data = {}
    for name, column, field, what in HISTOGRAMS:
        edges = _edges(cfg, field)
        dim = f"{name}_bin"
        units = (MEASURE_COLUMNS[column].unit if column else "") or "1"
        coords[f"{name}_lo"] = (dim, edges[:-1], {"units": units, "long_name": f"lower edge of the {what} bin"})
        coords[f"{name}_hi"] = (dim, edges[1:], {"units": units,
                                                 "long_name": f"upper edge (exclusive) of the {what} bin"})
        counts = np.stack(hists[name]) if names else np.zeros((0, edges.size - 1), np.int64)
        data[f"{name}_count"] = (("slide", dim), counts,
                                 {"units": "1", "long_name": f"analysable fibres per bin of {what}"})
    data["class_count"] = (("slide", "class"), slides[[f"n_{c}" for c in CLASSES]].to_numpy(np.int64)
                           if names else np.zeros((0, len(CLASSES)), np.int64),
                           {"units": "1", "long_name": "fibres per primary curation class"})
    coords["class"] = ("class", list(CLASSES), {"long_name": "curation class (nclsm_scale.tables.FibreClass)"})
    return xr.Dataset(data, coords=coords, attrs={
        "description": "Histograms of analysable fibres per slide; bins [lo, hi), the last open.",
        "analysable_classes": ",".join(cfg.analysable_classes),
        SCHEMA_KEY.decode(): SCHEMA_VERSION,
    })


def _group_stats(
    tables: Mapping[str, tuple[pd.DataFrame, Mapping[str, Any]]],
    slides: pd.DataFrame,
    by: list[str],
    cfg: AggregateConfig,
) -> pd.DataFrame:
    rows = []
    for key, part in slides.groupby(by, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        fibres = pd.concat([tables[s][0] for s in part["slide"]], ignore_index=True)
        row = dict(zip(by, key, strict=True))
        row["n_slides"] = len(part)
        row.update(summarise(fibres, cfg))
        row["tissue_area_mm2"] = float(part["tissue_area_mm2"].sum())
        row["analysable_area_mm2"] = float(part["analysable_area_mm2"].sum())
        rows.append(row)
    return pd.DataFrame(rows)


def _write(df: pd.DataFrame, path: Path, columns: Mapping[str, Column]) -> None:
    """Write a statistics table (Parquet with ``columns``' units and meanings, the manifest's for the rest; + CSV)."""
    write_table(df, path, {**columns, **manifest_columns(df[[c for c in df.columns if c not in columns]])})
    df.to_csv(path.with_suffix(".csv"), index=False)


def _join(layout: RunLayout, name: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Slide ``name``'s measure and curate tables joined, with measure's metadata updated by curate's."""
    measured, meta = read_fibre_table(layout.measure_table(name))
    curated, curate_meta = read_fibre_table(layout.curate_table(name))
    try:
        table = join_fibre_tables(measured, curated)
    except ValueError as exc:
        raise ValidationError(f"{layout.curate_table(name)}: {exc}") from None
    if not (table["slide"] == name).all():
        raise ValidationError(f"{layout.measure_table(name)} holds fibres of another slide; run measure again.")
    return table, {**meta, **curate_meta}


def assemble_fibre_tables(
    layout: RunLayout, names: list[str], manifest: pd.DataFrame | None = None
) -> dict[str, tuple[pd.DataFrame, dict[str, Any]]]:
    """Write ``tables/fibres/<name>.parquet`` of slides ``names``, all with one schema; remove other slides'.

    Each table holds ``slide``, the slide's ``manifest`` metadata (NaN where the
    manifest has no row for it; a column named like a fibre column is left out),
    measure's columns (the union over the slides: NaN for a channel a slide lacks)
    and curate's (:func:`nclsm_scale.tables.fibre_columns`). Returns ``{name: (table, meta)}``.
    """
    joined = {name: _join(layout, name) for name in names}
    measured = list(dict.fromkeys(c for t, _ in joined.values() for c in t.columns if c not in CURATE_COLUMNS))
    per_slide = pd.DataFrame(index=pd.Index(names, name="slide"))
    if manifest is not None:
        per_slide = manifest.drop_duplicates("slide").set_index("slide").reindex(per_slide.index)
        clash = [c for c in per_slide.columns if c in measured or c in CURATE_COLUMNS]
        if clash:
            logger.warning("manifest column(s) %s are named like fibre columns; left out of the fibre tables", clash)
        per_slide = per_slide.drop(columns=clash)
    order = fibre_columns(measured, list(per_slide.columns))
    columns = {**{k: fibre_column(k) for k in order if k not in per_slide.columns}, **manifest_columns(per_slide)}
    out = {}
    for name, (table, meta) in joined.items():
        values = {k: pd.Series([per_slide.at[name, k]] * len(table), dtype=per_slide[k].dtype)
                  for k in per_slide.columns}
        full = table.assign(**values).reindex(columns=order)
        write_table(full, layout.fibre_table(name), columns, meta)
        out[name] = (full, meta)
    for stale in sorted(set(layout.fibres.glob("*.parquet")) - {layout.fibre_table(n) for n in names}):
        logger.info("%s: removed, its slide is not in this aggregation", stale)
        stale.unlink()
    return out


def aggregate_run(
    run_dir: str | Path,
    cfg: AggregateConfig,
    manifest: pd.DataFrame | Mapping[str, Mapping[str, Any]] | str | Path | None = None,
    slides: list[str] | None = None,
) -> AggregateResult:
    """Assemble the fibre tables of a run's curated slides; write the slide / group tables and histograms.

    ``slides`` names the slides to include (default: every slide with a curate
    table); ``tables/fibres/`` then holds exactly theirs. A given ``manifest`` is
    saved as ``tables/manifest.csv``; without one, that saved copy is used.
    """
    layout = RunLayout(Path(run_dir))
    names = layout.curated_slides() if slides is None else sorted(slides)
    if not names:
        raise ValidationError(f"{layout.curate_tables}: no curated slides; run `measure` and `curate` first.")
    meta_df = read_manifest(manifest)
    if meta_df is not None:
        layout.tables.mkdir(parents=True, exist_ok=True)
        meta_df.to_csv(layout.manifest, index=False)
    elif layout.manifest.is_file():
        meta_df = read_manifest(layout.manifest)
    tables = assemble_fibre_tables(layout, names, meta_df)
    result = aggregate_tables(tables, cfg, meta_df)
    _write(result.slides, layout.slides_table, SLIDE_COLUMNS)
    if result.groups is not None:
        _write(result.groups, layout.groups_table, GROUP_COLUMNS)
    tmp = layout.histograms.with_name(f".{layout.histograms.name}.tmp")
    result.histograms.to_netcdf(tmp, engine="scipy")
    tmp.replace(layout.histograms)
    logger.info("aggregated %d slide(s) into %s", len(tables), layout.tables)
    return result
