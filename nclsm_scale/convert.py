"""Convert whole-slide images to NGFF 0.5 OME-Zarr, region by region on Dask workers.

Plan: level 0 and the pyramid are written in *passes*. A pass starts at level
``L`` (read from the source file for ``L = 0``, otherwise mean-downsampled from the
stored level ``L - 1``) and cascades in memory down to the coarser levels whose
shards still line up with the region, so every task owns whole shards of every
level it writes (zarr-python#3514). Each region leaves a done marker in
``<out>/.<slide>.convert/`` after its data is written; a rerun skips marked
regions. The store is flagged complete (with the source fingerprint) last, and
the marker folder is removed after that.

Memory per task is bounded by the region and ``task_channels``, not the slide: a
task converts one group of channels (a shard holds one group), a pass that starts
below level 0 reads its source level in row slabs, and shards are encoded and
streamed chunk by chunk (:mod:`nclsm_scale.io.shards`). Tiled TIFF input is read
tile by tile, decoding only the pages of the task's channels
(:func:`~nclsm_scale.io.readers.read_region`).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from nclsm_scale.cluster import fan_out
from nclsm_scale.config import ConvertConfig
from nclsm_scale.errors import NclsmError, SlideRefusedError, SlideWriteError
from nclsm_scale.io.ome_zarr import array_at, attrs_of, create_image, read_multiscales, regions, write_unit_px
from nclsm_scale.io.pyramid import downsample_mean
from nclsm_scale.io.readers import (
    SourceInfo,
    assign_roles,
    open_source,
    read_region,
    source_fingerprint,
)
from nclsm_scale.io.shards import write_block
from nclsm_scale.layout import slide_id_of
from nclsm_scale.normalise import compute_slide_norm
from nclsm_scale.slide import open_slide

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["RegionJob", "SlideResult", "check_plausible", "convert", "convert_region", "convert_slide", "plan_passes"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegionJob:
    """One task: write ``region`` of ``channels`` of ``levels[0]`` and the cascade below it, then touch ``marker``."""

    source: SourceInfo
    store: str
    levels: tuple[str, ...]  # level paths written, finest first
    from_level: str | None  # stored level to downsample from; None = read the source
    region: tuple[int, int, int, int]  # (y0, x0, y1, x1) at levels[0]
    channels: tuple[int, int]  # [c0, c1): the channels written
    marker: str


@dataclass(frozen=True)
class SlideResult:
    """Outcome for one input: ``status`` is converted, skipped or failed."""

    source: str
    store: str
    status: str
    message: str = ""
    seconds: float = 0.0


def plan_passes(units_px: Sequence[int], task_px: int) -> list[tuple[int, int, int]]:
    """Split the levels into passes ``(first level, number of levels, region edge at first level)``.

    A region is ``units_px[L] * 2**k`` (the largest not above ``task_px``); the pass
    goes on to the next level while the halved region is still a whole number of
    that level's write units.

    >>> plan_passes([4096, 2048, 1024, 1024, 1024], 4096)
    [(0, 3, 4096), (3, 2, 4096)]
    """
    passes, level = [], 0
    while level < len(units_px):
        edge = units_px[level]
        while edge * 2 <= task_px:
            edge *= 2
        depth = 1
        while level + depth < len(units_px):
            sub, unit = edge >> depth, units_px[level + depth]
            if sub < unit or sub % unit:
                break
            depth += 1
        passes.append((level, depth, edge))
        level += depth
    return passes


def _downsampled(
    store: str, from_level: str, region: tuple[int, int, int, int], channels: slice
) -> np.ndarray:
    """``region`` of ``channels`` of the level below ``from_level``, mean-downsampled from it in row slabs.

    A slab is one row of source chunks (an even number of rows), so only the output
    and one slab are in memory, whatever the region size.
    """
    src = zarr.open_array(store, path=from_level, mode="r")
    y0, x0, y1, x1 = region
    sy1, sx1 = min(2 * y1, src.shape[1]), min(2 * x1, src.shape[2])
    slab = int(src.chunks[1])
    n = len(range(src.shape[0])[channels])
    out = np.empty((n, y1 - y0, x1 - x0), dtype=src.dtype)
    for sy in range(2 * y0, sy1, slab):
        part = downsample_mean(np.asarray(src[channels, sy : min(sy + slab, sy1), 2 * x0 : sx1]), 2)
        oy = (sy - 2 * y0) // 2
        out[:, oy : oy + part.shape[1]] = part[:, :, : x1 - x0]
    return out


def convert_region(job: RegionJob) -> tuple[int, int, int, int]:
    """Run one :class:`RegionJob` (pure function of its argument; safe to repeat).

    Each level's part is written with :func:`~nclsm_scale.io.shards.write_block`,
    which replaces the whole shards the region owns.
    """
    y0, x0, y1, x1 = job.region
    c0, c1 = job.channels
    if job.from_level is None:
        block = read_region(job.source, y0, x0, y1, x1, channels=(c0, c1))
    else:
        block = _downsampled(job.store, job.from_level, job.region, slice(c0, c1))
    try:
        for i, level in enumerate(job.levels):
            if i:
                block = downsample_mean(block, 2)
                y0, x0 = y0 // 2, x0 // 2
            arr = zarr.open_array(job.store, path=level, mode="r+")
            h, w = min(block.shape[1], arr.shape[1] - y0), min(block.shape[2], arr.shape[2] - x0)
            write_block(arr, block[:, :h, :w], (c0, y0, x0))
        Path(job.marker).touch()
    except SlideWriteError:
        raise
    except OSError as exc:
        raise SlideWriteError(f"{job.store}: cannot write region {job.region}: {exc}") from None
    return job.region


def _plan_jobs(info: SourceInfo, store: str, state: Path, task_px: int, task_channels: int) -> list[list[RegionJob]]:
    group = zarr.open_group(store, mode="r")
    ms, _ = read_multiscales(group)
    paths = [d["path"] for d in ms["datasets"]]
    arrays = [array_at(group, p) for p in paths]
    units = [write_unit_px(a)[0] for a in arrays]
    n = int(arrays[0].shape[0])
    groups = [(c, min(c + task_channels, n)) for c in range(0, n, task_channels)]  # whole shards: see _start
    out = []
    for first, depth, edge in plan_passes(units, task_px):
        levels = tuple(paths[first : first + depth])
        from_level = paths[first - 1] if first else None
        out.append([
            RegionJob(info, store, levels, from_level, r, (c0, c1), str(state / f"L{first}_c{c0}_{r[0]}_{r[1]}"))
            for c0, c1 in groups
            for r in regions(arrays[first].shape[-2:], (edge, edge))
        ])
    return out


def _windows(store: str) -> None:
    """Set ``omero`` display windows to the 0.1-99.9 percentiles of the coarsest level."""
    group = zarr.open_group(store, mode="r+")
    ms, _ = read_multiscales(group)
    data = np.asarray(array_at(group, ms["datasets"][-1]["path"])[:])
    ome = dict(attrs_of(group)["ome"])
    for ch, plane in zip(ome["omero"]["channels"], data, strict=True):
        lo, hi = np.percentile(plane, [0.1, 99.9]) if plane.size else (0.0, 1.0)
        ch["window"].update(start=float(lo), end=float(max(hi, lo + 1e-6)))
    group.attrs.update({"ome": ome})


def _settings(cfg: ConvertConfig) -> dict[str, Any]:
    return cfg.model_dump(exclude={"overwrite", "min_pixel_size_um", "max_pixel_size_um", "min_slide_um"})


def check_plausible(info: SourceInfo, cfg: ConvertConfig) -> None:
    """Refuse a slide whose pixel size or extent cannot be a muscle section (nothing is written before).

    The pixel size is the file's, else ``cfg.pixel_size_um``; a slide without one
    passes (its scales stay in pixels and ``segment`` refuses it).

    Raises
    ------
    SlideRefusedError
        A pixel size outside ``cfg.min_pixel_size_um``-``cfg.max_pixel_size_um``, or a
        shorter edge below ``cfg.min_slide_um``, naming the file.
    """
    size = info.pixel_size_um or ((cfg.pixel_size_um,) * 2 if cfg.pixel_size_um else None)
    if size is None:
        return
    origin = "the file says" if info.pixel_size_um else "convert.pixel_size_um gives"
    for px in size:
        if not cfg.min_pixel_size_um <= px <= cfg.max_pixel_size_um:
            raise SlideRefusedError(
                f"{info.path}: {origin} {px:.4g} um/px, outside the plausible {cfg.min_pixel_size_um:g}-"
                f"{cfg.max_pixel_size_um:g} um/px (convert.min_pixel_size_um, convert.max_pixel_size_um); check "
                "the file's pixel size and unit")
    _, ny, nx = info.shape_cyx
    h_um, w_um = ny * size[0], nx * size[1]
    if min(h_um, w_um) < cfg.min_slide_um:
        raise SlideRefusedError(
            f"{info.path}: {ny} x {nx} px at {size[1]:.4g} um/px is {h_um:.4g} x {w_um:.4g} um, under "
            f"convert.min_slide_um = {cfg.min_slide_um:g} um on a side: too small to hold a few fibres")


def _start(info: SourceInfo, store: Path, state: Path, cfg: ConvertConfig, fp: dict, sid: str) -> None:
    """Create the marker folder, then the empty image; ``created`` marks the store usable."""
    shutil.rmtree(store, ignore_errors=True)
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    (state / "plan.json").write_text(json.dumps({"source": fp, "settings": _settings(cfg)}, sort_keys=True))
    size = info.pixel_size_um or ((cfg.pixel_size_um,) * 2 if cfg.pixel_size_um else None)
    if info.pixel_size_um is None and size is None:
        logger.warning("%s: pixel size unknown (no OME-XML or resolution tags, no --pixel-size); "
                       "marked pixel_size_known=false, scales are in pixels", info.path)
    elif info.pixel_size_um is not None and cfg.pixel_size_um and abs(info.pixel_size_um[1] - cfg.pixel_size_um) > 1e-9:
        logger.warning("%s: file says %.4g um/px, --pixel-size %.4g ignored", info.path,
                       info.pixel_size_um[1], cfg.pixel_size_um)
    create_image(
        store, info.shape_cyx, info.dtype, pixel_size_um=size, channel_names=info.channel_names,
        chunk_px=cfg.chunk_px, shard_px=cfg.shard_px, min_level_px=cfg.min_level_px,
        roles=assign_roles(info.channel_names), compression_level=cfg.compression_level, name=sid,
        shard_channels=cfg.task_channels,
        extra_attrs={"slide_id": sid, "source_format": info.kind, "source_path": str(Path(info.path).resolve()),
                     "pixel_size_from": "file" if info.pixel_size_um else ("option" if size else "unknown")},
    )
    (state / "created").touch()


def _finish(store: Path, state: Path, fp: dict) -> None:
    """Display windows and normalisation constants, then the completion marker (last)."""
    _windows(str(store))
    norm = compute_slide_norm(open_slide(store)).model_dump(mode="json")
    group = zarr.open_group(str(store), mode="r+")
    group.attrs.update({"nclsm": {**attrs_of(group)["nclsm"], "norm": norm, "complete": True, "source": fp}})
    shutil.rmtree(state, ignore_errors=True)


def _completed_from(store: Path) -> dict[str, Any] | None:
    try:
        nclsm = attrs_of(zarr.open_group(str(store), mode="r")).get("nclsm", {})
    except (FileNotFoundError, ValueError, OSError):
        return None
    return dict(nclsm["source"]) if nclsm.get("complete") else None


def convert_slide(path: str | Path, out_dir: str | Path, cfg: ConvertConfig, client: Client) -> SlideResult:
    """Convert one slide into ``<out_dir>/<slide id>.ome.zarr`` (resuming or skipping as needed).

    Raises
    ------
    SlideReadError, SlideWriteError
        Bad input or unwritable output, naming the file.
    SlideRefusedError
        An implausible pixel size or a slide too small (:func:`check_plausible`).
    """
    t0 = time.perf_counter()
    sid = slide_id_of(path)
    store, state = Path(out_dir) / f"{sid}.ome.zarr", Path(out_dir) / f".{sid}.convert"
    info = open_source(path, cfg.channels)
    check_plausible(info, cfg)
    fp = source_fingerprint(path)
    done_from = _completed_from(store)
    if done_from is not None and not cfg.overwrite:
        if any(done_from.get(k) != fp[k] for k in ("path", "size", "sha256_head_tail")):
            raise SlideWriteError(f"{store}: already holds a conversion of {done_from['path']} (or of an older "
                                  f"version of {path}); use --overwrite to replace it")
        shutil.rmtree(state, ignore_errors=True)
        return SlideResult(str(path), str(store), "skipped", "already converted")
    plan = {"source": fp, "settings": _settings(cfg)}
    try:
        resumable = (not cfg.overwrite and (state / "created").exists()
                     and json.loads((state / "plan.json").read_text()) == json.loads(json.dumps(plan, sort_keys=True)))
        if not resumable:
            if store.exists() and not state.exists() and not cfg.overwrite:
                raise SlideWriteError(f"{store}: exists but is not a conversion in progress; use --overwrite")
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            _start(info, store, state, cfg, fp, sid)
        passes = _plan_jobs(info, str(store), state, cfg.task_px, cfg.task_channels)
    except OSError as exc:
        raise SlideWriteError(f"{store}: cannot write the output: {exc}") from None
    skipped = 0
    for jobs in passes:
        t_pass = time.perf_counter()
        todo = [j for j in jobs if not Path(j.marker).exists()]
        skipped += len(jobs) - len(todo)
        levels = f"L{jobs[0].levels[0]}-{jobs[0].levels[-1]}"
        fan_out(client, convert_region, [(j,) for j in todo], desc=f"{sid} {levels}")
        seconds = time.perf_counter() - t_pass
        logger.info("%s: %s, %d regions in %.2f s", sid, levels, len(todo), seconds)
    _finish(store, state, fp)
    logger.info("%s: converted in %.2f s", sid, time.perf_counter() - t0)
    msg = f"resumed, {skipped} regions already done" if skipped else ""
    return SlideResult(str(path), str(store), "converted", msg, time.perf_counter() - t0)


def convert(
    inputs: Sequence[str | Path], out_dir: str | Path, cfg: ConvertConfig, client: Client
) -> list[SlideResult]:
    """Convert every input; one slide's failure is recorded and does not stop the others."""
    results = []
    for path in inputs:
        try:
            result = convert_slide(path, out_dir, cfg, client)
        except NclsmError as exc:
            logger.error("%s", exc)
            result = SlideResult(str(path), "", "failed", str(exc))
        except Exception as exc:  # a bug or an unexpected library error must not stop the other slides
            logger.exception("%s: conversion failed", path)
            result = SlideResult(str(path), "", "failed", f"{path}: {type(exc).__name__}: {exc}")
        logger.info("%s: %s %s", path, result.status, result.message)
        results.append(result)
    return results

