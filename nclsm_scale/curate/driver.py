"""Driver of ``curate``: folds into ``labels/regions``, fold fraction per fibre, rules, overrides.

1. Folds are detected on the regions level (about 8 um/px) from the image and the
   tissue of ``labels/regions`` (:func:`~nclsm_scale.curate.folds.detect_folds`) and
   written back as value :data:`FOLD` (tissue keeps 1), pyramid refilled.
2. ``fold_fraction``: a Dask pass over the block cores of the segmentation level
   that meet a fold counts each fibre's pixels inside the fold (integer counts,
   so independent of the block size); divided by ``area_px``.
3. :func:`~nclsm_scale.curate.rules.curate_fibres` with ``cfg.curate``, then the
   user's overrides: those remembered beside the table
   (:func:`~nclsm_scale.curate.overrides.stored_overrides_path`), updated by the
   overrides CSV if given, which are remembered in turn.

The fibre table is rewritten in place with the curation columns and
``overridden``; its metadata gains the tissue, fold and analysable areas that
``aggregate`` uses. Rerunning re-derives everything from the measured columns,
so new thresholds or a new overrides file never need ``segment`` or ``measure``
again, and earlier overrides stay applied until cleared (``clear_overrides``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nclsm_scale.cluster import track
from nclsm_scale.config import RunConfig
from nclsm_scale.errors import SlideReadError
from nclsm_scale.segment.grid import Block, BlockGrid

__all__ = ["FOLD", "CurateResult", "curate_run_slide", "curate_slide", "fold_counts_task", "write_folds"]

logger = logging.getLogger(__name__)

#: Region label of folded tissue in ``labels/regions`` (1 = tissue, 0 = background).
FOLD = 2
#: Display colour (RGBA) of folds in ``labels/regions``.
FOLD_RGBA = (255, 140, 0, 128)


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


def write_folds(slide: Any, level: int, cfg: RunConfig, client: Any) -> np.ndarray:
    """Detect folds on ``level`` and write them into ``labels/regions``; return the region map there."""
    import zarr

    from nclsm_scale.curate.folds import detect_folds
    from nclsm_scale.io.labels import fill_label_pyramid
    from nclsm_scale.measure.driver import pixel_size

    lv = slide.levels[level]
    _, ny, nx = lv.shape
    arr = slide.label_array("regions", level, mode="r+")
    tissue = np.asarray(arr[0]) > 0
    c = cfg.curate
    folds = detect_folds(
        slide.read(level, 0, 0, ny, nx), tissue, pixel_size_um=pixel_size(slide, level),
        min_ratio=c.fold_min_ratio, low_ratio=c.fold_low_ratio, smooth_um=c.fold_smooth_um,
        reference_um=c.fold_reference_um, min_area_um2=c.fold_min_area_um2,
    )
    regions = np.where(folds, FOLD, tissue.astype(np.uint8)).astype(arr.dtype)
    arr[0] = regions
    fill_label_pyramid(slide.path, "regions", level, client=client if level else None)
    group = zarr.open_group(f"{slide.path.rstrip('/')}/labels/regions", mode="r+")
    ome = dict(group.attrs.get("ome", {}))
    label = dict(ome.get("image-label", {}))
    colors = [col for col in label.get("colors", []) if col.get("label-value") != FOLD]
    label["colors"] = [*colors, {"label-value": FOLD, "rgba": list(FOLD_RGBA)}]
    ome["image-label"] = label
    group.attrs["ome"] = ome
    return regions


def fold_counts_task(
    slide_path: str, level: int, regions_level: int, scale: float, block: Block
) -> tuple[np.ndarray, np.ndarray]:
    """Fibre IDs of a block core and their pixel counts inside folds."""
    from nclsm_scale.measure.driver import lowres_window
    from nclsm_scale.slide import open_slide

    slide = open_slide(slide_path)
    b = block
    labels = np.asarray(slide.label_array("fibres", level)[0, b.y0 : b.y1, b.x0 : b.x1])
    fold = lowres_window(slide.label_array("regions", regions_level), scale, b.y0, b.x0, b.y1, b.x1) == FOLD
    ids, counts = np.unique(labels[fold & (labels > 0)], return_counts=True)
    return ids.astype(np.int64), counts.astype(np.int64)


def _fold_fraction(
    slide: Any, level: int, reg_level: int, scale: float, regions: np.ndarray,
    table: pd.DataFrame, block_px: int, client: Any,
) -> np.ndarray:
    shape = slide.levels[level].shape[1:]
    blocks = []
    for b in BlockGrid((int(shape[0]), int(shape[1])), block_px).blocks():
        ly0, lx0 = int((b.y0 + 0.5) / scale), int((b.x0 + 0.5) / scale)
        ly1, lx1 = int((b.y1 - 0.5) / scale) + 1, int((b.x1 - 0.5) / scale) + 1
        if (regions[ly0:ly1, lx0:lx1] == FOLD).any():
            blocks.append(b)
    counts = np.zeros(len(table), np.int64)
    if blocks:
        futures = client.map(fold_counts_task, [slide.path] * len(blocks), [level] * len(blocks),
                             [reg_level] * len(blocks), [scale] * len(blocks), blocks, pure=False)
        for future in track(futures, "curate: folds"):
            if future.status == "error":
                future.result()
        index = pd.Index(table["fibre_id"].astype(np.int64))
        for ids, n in client.gather(futures):
            rows = index.get_indexer(ids)
            if (rows < 0).any():
                raise SlideReadError(
                    f"{slide.path}: labels hold fibres {ids[rows < 0][:5].tolist()} missing from the "
                    "fibre table; run `nclsm-scale measure` again."
                )
            np.add.at(counts, rows, n)
    return counts / table["area_px"].to_numpy(np.float64)


def curate_slide(
    slide_path: str | Path,
    cfg: RunConfig,
    client: Any,
    *,
    table_path: str | Path | None = None,
    overrides: str | Path | None = None,
    clear_overrides: bool = False,
) -> CurateResult:
    """Curate a measured slide: folds, ``fold_fraction``, classes with reasons, overrides.

    Parameters
    ----------
    slide_path : path of the segmented ``.ome.zarr`` slide.
    cfg : RunConfig
        ``cfg.curate`` (rules and fold detection), ``cfg.segment`` (levels, block size).
    client : distributed.Client
    table_path : path, optional
        The measured table; default ``RunLayout.for_slide(slide_path)`` ``tables/fibres/<slide>.parquet``.
    overrides : path, optional
        CSV ``fibre_id,class[,reasons]`` of user corrections; they are added to (and
        replace, fibre by fibre) the overrides remembered from earlier runs.
    clear_overrides : bool
        Forget the remembered overrides first.
    """
    from nclsm_scale.curate import overrides as ov
    from nclsm_scale.curate.rules import curate_fibres
    from nclsm_scale.layout import RunLayout, read_fibre_table, slide_name, write_fibre_table
    from nclsm_scale.measure import COLUMNS
    from nclsm_scale.measure.driver import pixel_size, region_level, segmentation_level
    from nclsm_scale.slide import open_slide

    t0 = time.perf_counter()
    slide = open_slide(slide_path)
    if "regions" not in slide.labels or "fibres" not in slide.labels:
        raise SlideReadError(f"{slide.path}: no labels/fibres or labels/regions; run `nclsm-scale segment` first.")
    path = Path(table_path) if table_path else RunLayout.for_slide(slide.path).fibre_table(slide_name(slide.path))
    measured, meta = read_fibre_table(path)
    level = segmentation_level(slide, cfg)
    reg_level = region_level(slide, cfg)
    reg_px = pixel_size(slide, reg_level)
    scale = reg_px / pixel_size(slide, level)
    regions = write_folds(slide, reg_level, cfg, client)
    missing = [c for c in COLUMNS if c not in measured.columns]
    if missing:
        raise SlideReadError(f"{path}: the fibre table lacks {missing}; run `nclsm-scale measure` again.")
    table = measured[list(COLUMNS)].copy()
    table["fold_fraction"] = _fold_fraction(
        slide, level, reg_level, scale, regions, table, cfg.segment.block_px, client
    )
    curated = curate_fibres(table, cfg.curate)
    store = ov.stored_overrides_path(path)
    remembered = ov.load_stored_overrides(store, table)
    if clear_overrides:
        remembered = remembered.iloc[:0]
    given = remembered.iloc[:0]
    if overrides is not None:
        given = ov.read_overrides(overrides)
        ov.check_fibres(given, table, overrides)
    merged = ov.merge_overrides(remembered, given)
    curated = ov.apply_overrides(curated, merged)
    ov.save_stored_overrides(store, merged, table)
    tissue_um2 = float(np.count_nonzero(regions)) * reg_px**2
    fold_um2 = float(np.count_nonzero(regions == FOLD)) * reg_px**2
    counts = {str(k): int(v) for k, v in curated["curation_class"].value_counts().sort_index().items()}
    meta.update({
        "curate": cfg.curate.model_dump(mode="json"),
        "overrides": {"stored": str(store) if len(merged) else None, "n": len(merged),
                      "added_from": str(overrides) if overrides is not None else None},
        "regions_level": reg_level, "regions_pixel_size_um": reg_px,
        "tissue_area_um2": tissue_um2, "fold_area_um2": fold_um2,
        "analysable_area_um2": tissue_um2 - fold_um2, "class_counts": counts,
    })
    write_fibre_table(curated, path, meta)
    result = CurateResult(path, len(curated), counts, tissue_um2, fold_um2,
                          int(curated["overridden"].sum()), time.perf_counter() - t0)
    logger.info("%s: curated %d fibres %s, %.1f s", slide.path, result.n_fibres, counts, result.seconds)
    return result


def curate_run_slide(
    slide_path: str | Path,
    cfg: RunConfig,
    client: Any,
    *,
    table_path: str | Path | None = None,
    overrides: str | Path | None = None,
    clear_overrides: bool = False,
) -> tuple[CurateResult, Path]:
    """:func:`curate_slide`, then re-aggregate the run its table lies in; return the result and slides table."""
    from nclsm_scale.aggregate import aggregate_run
    from nclsm_scale.layout import RunLayout

    result = curate_slide(slide_path, cfg, client, table_path=table_path, overrides=overrides,
                          clear_overrides=clear_overrides)
    layout = RunLayout(result.table.resolve().parents[2])
    aggregate_run(layout.root, cfg.aggregate)
    return result, layout.slides_table
