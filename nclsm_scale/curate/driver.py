"""Driver of ``curate``: folds into ``labels/folds``, fold fraction per fibre, rules, overrides.

1. Folds are detected on the regions level (about 8 um/px) from the image and the
   tissue of ``labels/regions``: their scores tile by tile on the workers
   (:func:`~nclsm_scale.curate.folds.tile_masks`), the hysteresis on the masks in
   the client (:func:`~nclsm_scale.curate.folds.hysteresis`); written as
   ``labels/folds`` (value :data:`~nclsm_scale.tables.FOLD`), pyramid filled.
2. ``fold_fraction``: a Dask pass over the block cores of the segmentation level
   that meet a fold counts each fibre's pixels inside the fold (integer counts,
   so independent of the block size); divided by ``area_seg_px``.
3. :func:`~nclsm_scale.curate.rules.curate_fibres` with ``cfg.curate`` (reasons
   the slide's channels or pixel size cannot judge are listed, not guessed); the
   slide's quality control (:mod:`~nclsm_scale.curate.qc`: a slide without muscle
   has all its fibres rejected as QC); fibre
   types from the myosin channels (:func:`~nclsm_scale.curate.types.slide_fibre_types`),
   then the user's overrides: those remembered beside the curate table
   (``RunLayout.overrides``), updated by the overrides CSV if given and by the
   classes changed in a GeoJSON exported from QuPath
   (:func:`~nclsm_scale.curate.qupath.qupath_overrides`), which are remembered in turn.

``curate`` reads ``measure``'s table and writes only its own outputs:
``labels/folds`` and ``tables/curate/<slide>.parquet``
(:data:`~nclsm_scale.tables.CURATE_COLUMNS`, keyed by ``slide`` and ``fibre_id``,
with the tissue, fold and analysable areas and the slide QC in its metadata).
Rerunning re-derives everything from the measured columns, so new thresholds or
a new overrides file never need ``segment`` or ``measure`` again, and earlier
overrides stay applied until cleared (``clear_overrides``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from nclsm_scale.cluster import fan_out
from nclsm_scale.config import RunConfig
from nclsm_scale.curate import overrides as ov
from nclsm_scale.curate.folds import TILE_PX, FoldTile, fold_channels, fold_tiles, hysteresis, tile_masks
from nclsm_scale.curate.fr_model import bundled_record
from nclsm_scale.curate.napari import label_metadata
from nclsm_scale.curate.qc import SlideQC, focus_share, focus_tiles, reject_slide, slide_qc
from nclsm_scale.curate.qupath import qupath_edits, qupath_overrides
from nclsm_scale.curate.rules import curate_fibres
from nclsm_scale.curate.types import slide_fibre_types
from nclsm_scale.errors import SlideReadError
from nclsm_scale.grid import Block, BlockGrid
from nclsm_scale.io.labels import fill_label_pyramid
from nclsm_scale.io.ome_zarr import annotate_labels, create_labels
from nclsm_scale.layout import RunLayout, read_fibre_table, write_table
from nclsm_scale.normalise import slide_norm
from nclsm_scale.slide import Slide, open_slide
from nclsm_scale.tables import CURATE_COLUMNS, FOLD, FOLD_COLORS, MEASURE_COLUMNS

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["CurateResult", "curate_slide", "fold_counts", "fold_counts_task", "fold_tile_task", "write_folds"]

logger = logging.getLogger(__name__)


@dataclass
class CurateResult:
    """What ``curate`` did to one slide."""

    table: Path
    n_fibres: int
    class_counts: dict[str, int]
    tissue_area_um2: float
    fold_area_um2: float
    n_overridden: int
    seconds: float
    qc: SlideQC
    n_from_qupath: int = 0


def write_folds(slide: Slide, level: int, cfg: RunConfig, client: Client) -> tuple[np.ndarray, np.ndarray]:
    """Detect folds on ``level`` and write them as ``labels/folds``; return the tissue and fold masks there.

    The fold scores are computed tile by tile on the workers (:func:`fold_tile_task`),
    so the client holds masks of the level, not its image.
    """
    tissue = np.asarray(slide.label_array("regions", level)[0]) > 0
    c = cfg.curate
    px = slide.pixel_size_um(level)
    folds = np.zeros(tissue.shape, bool)
    if tissue.any():
        norm = slide_norm(slide)
        scale = [h - lo for lo, h in zip(norm.lo, norm.hi, strict=True)]
        tiles = fold_tiles(tissue.shape, TILE_PX, pixel_size_um=px, smooth_um=c.fold_smooth_um,
                           reference_um=c.fold_reference_um)
        kw = {"pixel_size_um": px, "min_ratio": c.fold_min_ratio, "low_ratio": c.fold_low_ratio,
              "smooth_um": c.fold_smooth_um, "reference_um": c.fold_reference_um}
        parts = fan_out(client, fold_tile_task, [(slide.path, level, list(norm.lo), scale, t, kw) for t in tiles],
                        desc="curate: fold scores")
        folds = hysteresis(tiles, parts, tissue, pixel_size_um=px, smooth_um=c.fold_smooth_um,
                           min_area_um2=c.fold_min_area_um2)
    create_labels(slide.path, "folds", dtype=np.uint8, colors=FOLD_COLORS)
    slide.label_array("folds", level, mode="r+")[0] = folds.astype(np.uint8) * np.uint8(FOLD)
    fill_label_pyramid(slide.path, "folds", level, run=partial(fan_out, client, desc="curate: folds"))
    return tissue, folds


def fold_tile_task(
    slide_path: str, level: int, lo: list[float], scale: list[float], tile: FoldTile, kw: dict[str, float]
) -> tuple[np.ndarray, int]:
    """One tile's fold threshold masks and exclusions (:func:`~nclsm_scale.curate.folds.tile_masks`)."""
    slide = open_slide(slide_path)
    window = (tile.wy0, tile.wx0, tile.wy1, tile.wx1)
    image = fold_channels(slide.read(level, *window), slide.roles, lo, scale)
    return tile_masks(image, slide.read_labels("regions", level, *window) > 0, tile, **kw)


def fold_counts(labels: np.ndarray, fold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fibre IDs with pixels inside ``fold`` (bool, same grid as ``labels``) and their pixel counts there."""
    ids, counts = np.unique(labels[fold & (labels > 0)], return_counts=True)
    return ids.astype(np.int64), counts.astype(np.int64)


def fold_counts_task(
    slide_path: str, level: int, regions_level: int, scale: float, block: Block
) -> tuple[np.ndarray, np.ndarray]:
    """Fibre IDs of a block core and their pixel counts inside folds."""
    slide = open_slide(slide_path)
    b = block
    labels = slide.read_labels("fibres", level, b.y0, b.x0, b.y1, b.x1)
    fold = slide.read_labels_lowres("folds", regions_level, scale, b.y0, b.x0, b.y1, b.x1) == FOLD
    return fold_counts(labels, fold)


def _fold_fraction(
    slide: Slide, level: int, reg_level: int, scale: float, folds: np.ndarray,
    table: pd.DataFrame, block_px: int, client: Client,
) -> np.ndarray:
    """Each fibre's share of pixels in the folds (``scale``: regions level px / segmentation level px)."""
    shape = slide.levels[level].shape[1:]
    blocks = []
    for b in BlockGrid((int(shape[0]), int(shape[1])), block_px).blocks():
        ly0, lx0 = int((b.y0 + 0.5) / scale), int((b.x0 + 0.5) / scale)
        ly1, lx1 = int((b.y1 - 0.5) / scale) + 1, int((b.x1 - 0.5) / scale) + 1
        if folds[ly0:ly1, lx0:lx1].any():
            blocks.append(b)
    counts = np.zeros(len(table), np.int64)
    parts = fan_out(client, fold_counts_task, [(slide.path, level, reg_level, scale, b) for b in blocks],
                    desc="curate: fold fractions")
    index = pd.Index(table["fibre_id"].astype(np.int64))
    for ids, n in parts:
        rows = index.get_indexer(pd.Index(ids))
        if (rows < 0).any():
            raise SlideReadError(
                f"{slide.path}: labels hold fibres {ids[rows < 0][:5].tolist()} missing from the "
                "fibre table; run `nclsm-scale measure` again."
            )
        np.add.at(counts, rows, n)
    return counts / table["area_seg_px"].to_numpy(np.float64)


def _with_types(curated: pd.DataFrame) -> pd.DataFrame:
    """``fibre_type`` and ``type_confidence`` from the myosin channels, fitted on the fibres curation kept whole."""
    types = slide_fibre_types(curated, fit_mask=~curated["curation_class"].isin(["NF", "DEBRIS", "EDGE"]).to_numpy())
    out = curated.copy()
    if types is None:
        out["fibre_type"], out["type_confidence"] = "", np.nan
        return out
    out["fibre_type"] = types.fibre_type.to_numpy()
    out["type_confidence"] = types.type_confidence.to_numpy()
    for note in types.notes:
        logger.info("fibre types: %s", note)
    return out


def _annotate_fibres(slide: Slide, curated: pd.DataFrame, measured: pd.DataFrame, max_fibres: int) -> None:
    """Classes, reasons and key measurements as the ``image-label`` metadata of ``labels/fibres`` (napari).

    Above ``max_fibres`` fibres the default metadata (no properties) is written, so
    no earlier run's classes stay behind.
    """
    if len(curated) > max_fibres:
        annotate_labels(slide.path, "fibres", None, None)
        logger.info("%s: %d fibres, over curate.napari_max_fibres (%d): no classes in labels/fibres for napari",
                    slide.path, len(curated), max_fibres)
        return
    extra = ["fibre_id", *(c for c in measured.columns if c not in curated.columns)]
    colors, properties = label_metadata(curated.merge(measured[extra], on="fibre_id", how="left"))
    annotate_labels(slide.path, "fibres", colors, properties)


def curate_slide(
    slide_path: str | Path,
    cfg: RunConfig,
    client: Client,
    *,
    layout: RunLayout | None = None,
    measured_path: str | Path | None = None,
    overrides: str | Path | None = None,
    clear_overrides: bool = False,
    qupath: str | Path | None = None,
) -> CurateResult:
    """Curate a measured slide: folds, ``fold_fraction``, classes with reasons, overrides.

    Parameters
    ----------
    slide_path : path of the segmented ``.ome.zarr`` slide.
    cfg : RunConfig
        ``cfg.curate`` (rules and fold detection), ``cfg.segment`` (levels), ``cfg.grid`` (block size).
    client : distributed.Client
    layout : RunLayout, optional
        The run the outputs go to; default ``RunLayout.for_slide(slide_path)``.
    measured_path : path, optional
        ``measure``'s table; default the run's ``tables/measure/<slide>.parquet``.
    overrides : path, optional
        CSV ``fibre_id,class[,reasons]`` of user corrections; they are added to (and
        replace, fibre by fibre) the overrides remembered from earlier runs.
    clear_overrides : bool
        Forget the remembered overrides first.
    qupath : path, optional
        GeoJSON exported from QuPath after reclassifying detections of this slide's
        ``report/<slide>.geojson``: each fibre whose class there differs from its
        class now becomes an override (applied after the CSV's).
    """
    t0 = time.perf_counter()
    slide = open_slide(slide_path)
    if "regions" not in slide.labels or "fibres" not in slide.labels:
        raise SlideReadError(f"{slide.path}: no labels/fibres or labels/regions; run `nclsm-scale segment` first.")
    layout = layout or RunLayout.for_slide(slide.path)
    measured, meta = read_fibre_table(measured_path or layout.measure_table(slide.name))
    missing = [c for c in MEASURE_COLUMNS if c not in measured.columns]
    if missing:
        raise SlideReadError(f"{slide.path}: the measured table lacks {missing}; run `nclsm-scale measure` again.")
    edits = qupath_edits(qupath, measured, slide.name) if qupath is not None else None  # fail before any work
    level = slide.segmentation_level(cfg.segment)
    reg_level = slide.region_level(cfg.segment)
    reg_px = slide.pixel_size_um(reg_level)
    tissue, folds = write_folds(slide, reg_level, cfg, client)
    table = measured.copy()
    table["fold_fraction"] = _fold_fraction(
        slide, level, reg_level, reg_px / slide.pixel_size_um(level), folds, table, cfg.grid.block_px, client
    )
    curated = curate_fibres(table, cfg.curate, pixel_size_um=float(meta.get("segmentation_pixel_size_um", np.nan)))
    qc = slide_qc(curated, tissue, reg_px, focus_share(*focus_tiles(slide, tissue, reg_level)), cfg.curate)
    if qc.qc_flag:
        logger.warning("%s: slide QC failed (%s; tissue %.3g of the slide, membrane contrast %.3g): every fibre is "
                       "class QC", slide.path, qc.qc_flag, qc.qc_tissue_fraction, qc.qc_membrane_contrast)
        curated = reject_slide(curated)
    curated = _with_types(curated)
    store = layout.overrides(slide.name)
    remembered = ov.load_stored_overrides(store, table)
    if clear_overrides:
        remembered = remembered.iloc[:0]
    given = remembered.iloc[:0]
    if overrides is not None:
        given = ov.read_overrides(overrides)
        ov.check_fibres(given, table, overrides)
    from_qupath = given.iloc[:0]
    if edits is not None:
        from_qupath = qupath_overrides(edits, ov.apply_overrides(curated, ov.merge_overrides(remembered, given)))
        given = ov.merge_overrides(given, from_qupath)
    merged = ov.merge_overrides(remembered, given)
    curated = ov.apply_overrides(curated, merged)[list(CURATE_COLUMNS)]
    ov.save_stored_overrides(store, merged, table)
    tissue_um2 = float(np.count_nonzero(tissue)) * reg_px**2
    fold_um2 = float(np.count_nonzero(folds)) * reg_px**2
    counts = {str(k): int(v) for k, v in curated["curation_class"].value_counts().sort_index().items()}
    own = {
        "curate": cfg.curate.model_dump(mode="json"),
        "fr_model": bundled_record() if cfg.curate.fr_method == "model" else None,
        "overrides": {"stored": str(store) if len(merged) else None, "n": len(merged),
                      "added_from": str(overrides) if overrides is not None else None,
                      "qupath_from": str(qupath) if qupath is not None else None, "n_from_qupath": len(from_qupath)},
        "regions_level": reg_level, "regions_pixel_size_um": reg_px,
        "tissue_area_um2": tissue_um2, "fold_area_um2": fold_um2,
        "analysable_area_um2": tissue_um2 - fold_um2, "class_counts": counts, "qc": qc.record(),
    }
    path = write_table(curated, layout.curate_table(slide.name), CURATE_COLUMNS, own)
    _annotate_fibres(slide, curated, table, cfg.curate.napari_max_fibres)
    result = CurateResult(path, len(curated), counts, tissue_um2, fold_um2,
                          int(curated["overridden"].sum()), time.perf_counter() - t0, qc, len(from_qupath))
    logger.info("%s: curated %d fibres %s, %.1f s", slide.path, result.n_fibres, counts, result.seconds)
    return result
