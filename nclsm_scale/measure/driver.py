"""Dask driver of ``measure``: each fibre measured once, whole, by the block that owns it.

Blocks are the cores of a :class:`~nclsm_scale.grid.BlockGrid` over the
segmentation level (``cfg.grid``). A block owns the fibres whose **first pixel in
raster order** (lowest row, then lowest column) lies in its core: a global rule,
so every fibre has exactly one owner whatever the block size. Each task reads
labels, image and tissue mask for core + halo (zero outside the slide, the same
for every chunking), finds its owned fibres and calls
:func:`~nclsm_scale.measure.fibres.measure_block`. When an owned fibre (plus the
context its features read) leaves the window, the task doubles its halo and tries
again, up to ``grid.escalation_limit`` times, then fails loudly.

A fibre cut by a too-small window may look owned by the wrong block (its visible
first pixel lies in that core); that block then sees the fibre leave its window
and escalates too, so no wrong row is ever produced.

Rows are concatenated, sorted by ``fibre_id`` and written to
``RUN/tables/measure/<slide>.parquet`` with the slide's provenance in the file
metadata (:mod:`nclsm_scale.layout`): the segmentation level, its pixel size and
downsample (``level0_scale``), and level 0's pixel size, the frame of the ``_px``
coordinates. Intensities are background-subtracted with the slide's global low
percentiles (:func:`nclsm_scale.normalise.slide_norm`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numba
import numpy as np
import pandas as pd

from nclsm_scale.cluster import fan_out
from nclsm_scale.config import MeasureConfig, RunConfig
from nclsm_scale.errors import HaloViolationError, SlideReadError, StageError
from nclsm_scale.grid import Block, BlockGrid
from nclsm_scale.layout import RunLayout, write_table
from nclsm_scale.measure.fibres import context_px, measure_block
from nclsm_scale.normalise import slide_norm
from nclsm_scale.slide import open_slide
from nclsm_scale.tables import channel_keys, empty_table, measure_columns

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["MeasureJob", "measure_slide", "measure_task", "owned_ids"]

logger = logging.getLogger(__name__)


def owned_ids(labels: np.ndarray, core: tuple[int, int, int, int]) -> np.ndarray:
    """Sorted IDs of the fibres whose first raster pixel in ``labels`` lies in ``core``.

    ``core`` is ``(y0, x0, y1, x1)`` in window coordinates. The first pixels come
    from one compiled scan (:func:`_first_pixels`) when the window's IDs span at
    most its pixel count, as slide-global IDs in raster order do, else from
    :func:`numpy.unique`, which sorts the window and took a twelfth of ``measure``.

    >>> lab = np.array([[0, 1, 1], [2, 2, 1], [0, 2, 0]], np.uint32)
    >>> owned_ids(lab, (1, 0, 3, 3)).tolist()
    [2]
    """
    cy0, cx0, cy1, cx1 = core
    head = np.ascontiguousarray(labels[:cy1])
    ids, first = _first_pixels(head.ravel())
    if ids.size and ids[0] < 0:  # IDs too sparse for a dense table
        ids, first = np.unique(head.ravel(), return_index=True)
        ids, first = ids[ids != 0], first[ids != 0]
    y, x = np.divmod(first, head.shape[1])
    keep = (y >= cy0) & (x >= cx0) & (x < cx1)
    return ids[keep].astype(np.uint32)


@numba.njit(cache=True, nogil=True)
def _first_pixels(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Ascending nonzero IDs of ``flat`` and the index of each one's first pixel; ``[-1]`` if they span too far."""
    lo, hi = np.int64(2**62), np.int64(-1)
    for v in flat:
        if v != 0:
            lo, hi = min(lo, np.int64(v)), max(hi, np.int64(v))
    if hi < 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    if hi - lo + 1 > flat.size:
        return np.full(1, -1, np.int64), np.full(1, -1, np.int64)
    first = np.full(hi - lo + 1, -1, np.int64)
    for i in range(flat.size):
        v = flat[i]
        if v != 0 and first[v - lo] < 0:
            first[v - lo] = i
    present = np.flatnonzero(first >= 0)
    return present + lo, first[present]


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
    downsample: int
    level0_shape_yx: tuple[int, int]
    slide: str
    roles: dict[str, int]
    channel_names: tuple[str, ...]
    background: tuple[float, ...]
    scale: tuple[float, ...]
    cfg: MeasureConfig


def measure_task(job: MeasureJob) -> tuple[pd.DataFrame, int]:
    """Measure the fibres a block owns; return the rows and the number of halo escalations."""
    slide = open_slide(job.slide_path)
    b = job.block
    halo = job.halo_px
    attempt = 0
    while True:
        y0, x0, y1, x1 = b.window(halo)
        labels = slide.read_labels("fibres", job.level, y0, x0, y1, x1)
        owned = owned_ids(labels, (halo, halo, halo + b.shape[0], halo + b.shape[1]))
        if owned.size == 0:
            return empty_table(measure_columns(channel_keys(job.channel_names, job.roles))), attempt
        tissue = None
        if job.regions_level is not None:
            tissue = slide.read_labels_lowres("regions", job.regions_level, job.regions_scale, y0, x0, y1, x1) > 0
        try:
            table = measure_block(
                labels,
                slide.read(job.level, y0, x0, y1, x1),
                owned_ids=owned,
                origin_yx=(y0, x0),
                slide_shape_yx=job.shape_yx,
                pixel_size_um=job.pixel_size_um,
                channel_roles=job.roles,
                channel_names=job.channel_names,
                cfg=job.cfg,
                tissue_mask=tissue,
                background=list(job.background),
                scale=list(job.scale),
                downsample=job.downsample,
                level0_shape_yx=job.level0_shape_yx,
                slide=job.slide,
            )
        except HaloViolationError as exc:
            if attempt == job.escalation_limit:
                raise HaloViolationError(
                    f"{job.slide_path}: block ({b.by}, {b.bx}) after {attempt} halo doubling(s) "
                    f"(halo {halo} px): {exc} Raise grid.escalation_limit or grid.halo_um."
                ) from None
            halo *= 2
            attempt += 1
            continue
        return table, attempt


def measure_slide(
    slide_path: str | Path, cfg: RunConfig, client: Client, *, out_dir: str | Path | None = None
) -> Path:
    """Measure every fibre of a segmented slide into ``<out_dir>/<slide>.parquet``.

    Parameters
    ----------
    slide_path : path of the ``.ome.zarr`` slide with ``labels/fibres``.
    cfg : RunConfig
        ``cfg.measure`` (features), ``cfg.grid`` (block size, halo, escalation
        limit, retries), ``cfg.segment`` (level rule).
    client : distributed.Client
    out_dir : path, optional
        Folder of the table; default ``RunLayout.for_slide(slide_path).measure_tables``.

    Returns
    -------
    Path of the Parquet table (rows sorted by ``fibre_id``).

    Raises
    ------
    SlideReadError
        The slide is missing, not segmented, has no pixel size or its level is no whole downsample of level 0.
    HaloViolationError
        A fibre does not fit the largest admissible window.
    """
    t0 = time.perf_counter()
    slide = open_slide(slide_path)
    if "fibres" not in slide.labels:
        raise SlideReadError(f"{slide.path}: no labels/fibres; run `nclsm-scale segment` first.")
    level = slide.segmentation_level(cfg.segment)
    px = slide.pixel_size_um(level)
    downsample = round(px / slide.pixel_size_um(0))
    if abs(px / slide.pixel_size_um(0) - downsample) > 1e-6 * downsample:
        raise SlideReadError(f"{slide.path}: level {level} is no whole downsample of level 0 "
                             f"({px / slide.pixel_size_um(0)}); convert the slide with `nclsm-scale convert`.")
    shape = (int(slide.levels[level].shape[1]), int(slide.levels[level].shape[2]))
    level0 = (int(slide.levels[0].shape[1]), int(slide.levels[0].shape[2]))
    reg_level = slide.region_level(cfg.segment) if "regions" in slide.labels else None
    reg_scale = slide.pixel_size_um(reg_level) / px if reg_level is not None else 1.0
    norm = slide_norm(slide)
    g = cfg.grid
    halo_px = g.halo_px(px) + context_px(px, cfg.measure)
    jobs = [
        (MeasureJob(slide.path, level, reg_level, reg_scale, b, halo_px, g.escalation_limit, shape,
                    px, downsample, level0, slide.name, dict(slide.roles), slide.channel_names, tuple(norm.lo),
                    tuple(h - lo for lo, h in zip(norm.lo, norm.hi, strict=True)), cfg.measure),)
        for b in BlockGrid(shape, g.block_px).blocks()
    ]
    parts = fan_out(client, measure_task, jobs, desc="measure", retries=g.retries)
    tables = [t for t, _ in parts if len(t)]
    escalations = sum(e for _, e in parts)
    table = (pd.concat(tables, ignore_index=True) if tables else parts[0][0])
    table = table.sort_values("fibre_id", kind="stable").reset_index(drop=True)
    dup = table["fibre_id"][table["fibre_id"].duplicated()]
    if len(dup):
        raise StageError(f"{slide.path}: fibre(s) {dup.tolist()[:5]} measured by two blocks (a bug)")
    out = Path(out_dir) if out_dir is not None else RunLayout.for_slide(slide.path).measure_tables
    meta = {
        "slide_path": str(Path(slide.path).resolve()), "slide_id": slide.slide_id, "slide_name": slide.name,
        "level": level, "segmentation_pixel_size_um": px, "shape_yx": list(shape),
        "pixel_size_um": slide.pixel_size_um(0), "level0_scale": px / slide.pixel_size_um(0),
        "level0_shape_yx": list(level0),
        "regions_level": reg_level, "channel_names": list(slide.channel_names),
        "roles": dict(slide.roles), "background": list(norm.lo),
        "measure": cfg.measure.model_dump(mode="json"), "escalations": escalations,
    }
    keys = channel_keys(slide.channel_names, slide.roles)
    path = write_table(table, out / f"{slide.name}.parquet", measure_columns(keys), meta)
    logger.info("%s: %d fibres measured in %d blocks (%d escalation(s)), %.1f s -> %s",
                slide.path, len(table), len(jobs), escalations, time.perf_counter() - t0, path)
    return path
