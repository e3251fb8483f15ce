"""Dask driver of ``measure``: each fibre measured once, whole, by the block that owns it.

Blocks are the cores of a :class:`~nclsm_scale.segment.grid.BlockGrid` over the
segmentation level. A block owns the fibres whose **first pixel in raster order**
(lowest row, then lowest column) lies in its core: a global rule, so every fibre
has exactly one owner whatever the block size. Each task reads labels, image and
tissue mask for core + halo (zero outside the slide, the same for every
chunking), finds its owned fibres and calls
:func:`~nclsm_scale.measure.fibres.measure_block`. When an owned fibre (plus the
context its features read) leaves the window, the task doubles its halo and tries
again, up to ``segment.escalation_limit`` times, then fails loudly.

A fibre cut by a too-small window may look owned by the wrong block (its visible
first pixel lies in that core); that block then sees the fibre leave its window
and escalates too, so no wrong row is ever produced.

Rows are concatenated, sorted by ``fibre_id`` and written to
``RUN/tables/fibres/<slide>.parquet`` with the slide's provenance in the file
metadata (:mod:`nclsm_scale.layout`). Intensities are background-subtracted with
the slide's global low percentiles (:func:`nclsm_scale.normalise.slide_norm`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nclsm_scale.cluster import track
from nclsm_scale.config import MeasureConfig, RunConfig
from nclsm_scale.errors import ConfigError, HaloViolationError, SlideReadError, StageError
from nclsm_scale.segment.grid import Block, BlockGrid

__all__ = [
    "MeasureJob",
    "measure_slide",
    "measure_task",
    "owned_ids",
    "read_padded_labels",
    "region_level",
    "segmentation_level",
]

logger = logging.getLogger(__name__)


def segmentation_level(slide: Any, cfg: RunConfig) -> int:
    """Level ``labels/fibres`` was segmented at: the segment marker's, else the config's rule."""
    import zarr

    try:
        attrs = zarr.open_group(f"{slide.path.rstrip('/')}/labels/fibres", mode="r").attrs
        level = attrs.get("nclsm", {}).get("segment", {}).get("level")
    except (FileNotFoundError, ValueError, KeyError):
        level = None
    if level is None:
        seg = cfg.segment
        level = seg.level if seg.level is not None else slide.level_nearest(seg.target_pixel_size_um)
    if not 0 <= level < len(slide.levels):
        raise ConfigError(f"segmentation level {level}: {slide.path} has levels 0..{len(slide.levels) - 1}")
    return int(level)


def region_level(slide: Any, cfg: RunConfig) -> int:
    """Level ``labels/regions`` is computed at (the same rule as ``segment``)."""
    return slide.level_nearest(cfg.segment.region_pixel_size_um)


def pixel_size(slide: Any, level: int) -> float:
    """Isotropic pixel size (um) of ``level``; a clear error when the slide has none."""
    size = slide.levels[level].pixel_size_um
    if size is None:
        raise SlideReadError(
            f"{slide.path}: the pixel size is unknown, but measurements are in um; "
            "convert the slide again with --pixel-size UM."
        )
    return float(math.sqrt(size[0] * size[1]))


def read_padded_labels(array: Any, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    """``array[0, y0:y1, x0:x1]`` of a ``(1, y, x)`` label array, zero outside it."""
    _, ny, nx = array.shape
    out = np.zeros((y1 - y0, x1 - x0), dtype=array.dtype)
    sy0, sx0, sy1, sx1 = max(y0, 0), max(x0, 0), min(y1, ny), min(x1, nx)
    if sy0 < sy1 and sx0 < sx1:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = array[0, sy0:sy1, sx0:sx1]
    return out


def lowres_window(
    array: Any, scale: float, y0: int, x0: int, y1: int, x1: int
) -> np.ndarray:
    """Nearest-neighbour values of a low-resolution ``(1, y, x)`` array on a full-resolution window.

    Pixel ``(y, x)`` takes the low-resolution pixel holding its centre (as
    :func:`nclsm_scale.curate.mask_window`), so values never depend on the cut;
    pixels outside the slide take the nearest edge pixel. Only the rows and
    columns needed are read.
    """
    _, ny, nx = array.shape
    ly = np.clip(((np.arange(y0, y1) + 0.5) / scale).astype(np.int64), 0, ny - 1)
    lx = np.clip(((np.arange(x0, x1) + 0.5) / scale).astype(np.int64), 0, nx - 1)
    part = np.asarray(array[0, ly[0] : ly[-1] + 1, lx[0] : lx[-1] + 1])
    return part[(ly - ly[0])[:, None], (lx - lx[0])[None, :]]


def owned_ids(labels: np.ndarray, core: tuple[int, int, int, int]) -> np.ndarray:
    """Sorted IDs of the fibres whose first raster pixel in ``labels`` lies in ``core``.

    ``core`` is ``(y0, x0, y1, x1)`` in window coordinates.

    >>> lab = np.array([[0, 1, 1], [2, 2, 1], [0, 2, 0]], np.uint32)
    >>> owned_ids(lab, (1, 0, 3, 3)).tolist()
    [2]
    """
    cy0, cx0, cy1, cx1 = core
    head = labels[:cy1]
    ids, first = np.unique(head.ravel(), return_index=True)
    y, x = np.divmod(first, head.shape[1])
    keep = (ids != 0) & (y >= cy0) & (x >= cx0) & (x < cx1)
    return ids[keep].astype(np.uint32)


@dataclass(frozen=True)
class MeasureJob:
    """Everything one block task needs (paths and numbers only: pickles to a few hundred bytes)."""

    slide_path: str
    level: int
    regions_level: int | None
    regions_scale: float
    block: Block
    halo_px: int
    escalation_limit: int
    shape_yx: tuple[int, int]
    pixel_size_um: float
    roles: dict[str, int]
    background: tuple[float, ...]
    cfg: MeasureConfig


def measure_task(job: MeasureJob) -> tuple[pd.DataFrame, int]:
    """Measure the fibres a block owns; return the rows and the number of halo escalations."""
    from nclsm_scale.measure.fibres import COLUMNS, measure_block
    from nclsm_scale.slide import open_slide
    from nclsm_scale.tables import empty_table

    slide = open_slide(job.slide_path)
    labels_arr = slide.label_array("fibres", job.level)
    regions = slide.label_array("regions", job.regions_level) if job.regions_level is not None else None
    b = job.block
    halo = job.halo_px
    attempt = 0
    while True:
        y0, x0, y1, x1 = b.window(halo)
        labels = read_padded_labels(labels_arr, y0, x0, y1, x1)
        owned = owned_ids(labels, (halo, halo, halo + b.shape[0], halo + b.shape[1]))
        if owned.size == 0:
            return empty_table(COLUMNS), attempt
        tissue = None
        if regions is not None:
            tissue = lowres_window(regions, job.regions_scale, y0, x0, y1, x1) > 0
        try:
            table = measure_block(
                labels,
                slide.read(job.level, y0, x0, y1, x1),
                owned_ids=owned,
                origin_yx=(y0, x0),
                slide_shape_yx=job.shape_yx,
                pixel_size_um=job.pixel_size_um,
                channel_roles=job.roles,
                cfg=job.cfg,
                tissue_mask=tissue,
                background=list(job.background),
            )
        except HaloViolationError as exc:
            if attempt == job.escalation_limit:
                raise HaloViolationError(
                    f"{job.slide_path}: block ({b.by}, {b.bx}) after {attempt} halo doubling(s) "
                    f"(halo {halo} px): {exc} Raise segment.escalation_limit or segment.halo_um."
                ) from None
            halo *= 2
            attempt += 1
            continue
        return table, attempt


def measure_slide(
    slide_path: str | Path, cfg: RunConfig, client: Any, *, out_dir: str | Path | None = None
) -> Path:
    """Measure every fibre of a segmented slide into ``<out_dir>/<slide>.parquet``.

    Parameters
    ----------
    slide_path : path of the ``.ome.zarr`` slide with ``labels/fibres``.
    cfg : RunConfig
        ``cfg.measure`` (features), ``cfg.segment`` (block size, halo, escalation
        limit, retries, level rule).
    client : distributed.Client
    out_dir : path, optional
        Folder of the table; default ``RunLayout.for_slide(slide_path).fibres``.

    Returns
    -------
    Path of the Parquet table (rows sorted by ``fibre_id``).

    Raises
    ------
    SlideReadError
        The slide is missing, not segmented or has no pixel size.
    HaloViolationError
        A fibre does not fit the largest admissible window.
    """
    from nclsm_scale.layout import RunLayout, slide_name, write_fibre_table
    from nclsm_scale.measure.fibres import context_px
    from nclsm_scale.normalise import slide_norm
    from nclsm_scale.slide import open_slide

    t0 = time.perf_counter()
    slide = open_slide(slide_path)
    if "fibres" not in slide.labels:
        raise SlideReadError(f"{slide.path}: no labels/fibres; run `nclsm-scale segment` first.")
    level = segmentation_level(slide, cfg)
    px = pixel_size(slide, level)
    shape = (int(slide.levels[level].shape[1]), int(slide.levels[level].shape[2]))
    reg_level = region_level(slide, cfg) if "regions" in slide.labels else None
    reg_scale = pixel_size(slide, reg_level) / px if reg_level is not None else 1.0
    norm = slide_norm(slide)
    seg = cfg.segment
    halo_px = math.ceil((seg.halo_um or seg.max_fibre_diameter_um) / px) + context_px(px, cfg.measure)
    grid = BlockGrid(shape, seg.block_px)
    jobs = [
        MeasureJob(slide.path, level, reg_level, reg_scale, b, halo_px, seg.escalation_limit, shape,
                   px, dict(slide.roles), tuple(norm.lo), cfg.measure)
        for b in grid.blocks()
    ]
    futures = client.map(measure_task, jobs, pure=False, retries=seg.retries)
    for future in track(futures, "measure"):
        if future.status == "error":
            future.result()  # raise the block's error now
    parts = client.gather(futures)
    tables = [t for t, _ in parts if len(t)]
    escalations = sum(e for _, e in parts)
    table = (pd.concat(tables, ignore_index=True) if tables else parts[0][0])
    table = table.sort_values("fibre_id", kind="stable").reset_index(drop=True)
    dup = table["fibre_id"][table["fibre_id"].duplicated()]
    if len(dup):
        raise StageError(f"{slide.path}: fibre(s) {dup.tolist()[:5]} measured by two blocks (a bug)")
    name = slide_name(slide.path)
    out = Path(out_dir) if out_dir is not None else RunLayout.for_slide(slide.path).fibres
    meta = {
        "slide_path": str(Path(slide.path).resolve()), "slide_id": slide.slide_id, "slide_name": name,
        "level": level, "pixel_size_um": px, "shape_yx": list(shape),
        "level0_scale": px / pixel_size(slide, 0),
        "regions_level": reg_level, "channel_names": list(slide.channel_names),
        "roles": dict(slide.roles), "background": list(norm.lo),
        "measure": cfg.measure.model_dump(mode="json"), "escalations": escalations,
    }
    path = write_fibre_table(table, out / f"{name}.parquet", meta)
    logger.info("%s: %d fibres measured in %d blocks (%d escalation(s)), %.1f s -> %s",
                slide.path, len(table), len(jobs), escalations, time.perf_counter() - t0, path)
    return path
