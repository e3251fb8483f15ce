"""Dask driver of ``segment``: block tasks over a slide, resumable, labels written in place.

Passes, each one ``client.map`` over block descriptors (tiny arguments; every task
reads its block + halo straight from zarr):

0. maps (network only): the engine's maps into ``<work>/maps``, whose chunks are
   whole network windows; each task takes a run of chunks in raster order holding
   about a block's windows in full batches (no window is computed twice, and only
   the last task pads its last batch);
1. seeds: each block's core levels into ``<work>/levels`` (int32, one chunk per
   core) and its owned seeds into ``<work>/seeds/<by>_<bx>.npy``; the client merges
   the seeds into the seed table ``<work>/seeds.npy`` (IDs 1..N);
2. assign: from the stored levels (no second smoothing of the maps), certified
   labels of each core written into ``labels/fibres`` at the
   segmentation level (cores align with the label shards/chunks: no write races),
   a done marker per block.

Then the other label levels are filled, ``labels/regions`` is written and the
completion marker (``nclsm.segment`` in the ``labels/fibres`` attributes) is set
last. ``<work>`` is the folder ``<slide>.segment`` next to the slide; its
``state.json`` holds a fingerprint of everything the labels depend on, so a rerun
with the same settings resumes block by block and a finished slide is skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nclsm_scale.cluster import gpu_task_resources, track
from nclsm_scale.config import RunConfig
from nclsm_scale.errors import ConfigError, SlideReadError
from nclsm_scale.segment.assign import assign_block
from nclsm_scale.segment.grid import Block, BlockGrid
from nclsm_scale.segment.ids import load_table, save_table, seed_table
from nclsm_scale.segment.levels import StoredLevels
from nclsm_scale.segment.maps import MapSource, StoredMaps
from nclsm_scale.segment.regions import REGION_COLORS, tissue_mask
from nclsm_scale.segment.seeds import SegmentParams, seed_pass

if TYPE_CHECKING:
    from nclsm_scale.segment.engine import EngineMaps

__all__ = ["SegmentResult", "network_tasks", "segment_slide", "work_dir"]

logger = logging.getLogger(__name__)


@dataclass
class SegmentResult:
    """What ``segment`` did to one slide."""

    slide: str
    level: int
    pixel_size_um: float
    block_px: int
    halo_px: int
    n_blocks: int
    n_fibres: int
    escalations: int
    flagged_yx: list[tuple[int, int]] = field(default_factory=list)
    skipped: bool = False
    seconds: float = 0.0


def work_dir(slide_path: str | Path) -> Path:
    """Folder of intermediate state of a slide's segmentation (``<slide>.segment``)."""
    p = Path(str(slide_path).rstrip("/"))
    return p.with_name(p.name + ".segment")


def _atomic_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def _label_path(slide_path: str, name: str, level_path: str) -> str:
    return f"{slide_path.rstrip('/')}/labels/{name}/{level_path}"


def seeds_task(
    source: MapSource, block: Block, params: SegmentParams, shape_yx: tuple[int, int],
    levels: StoredLevels, out: str, halo_px: int, escalation_limit: int,
) -> int:
    """Pass 1 of one block: store its core levels and owned seeds (``out``); return their count."""
    core, seeds = seed_pass(source, block, params, shape_yx, halo_px=halo_px,
                            escalation_limit=escalation_limit)
    levels.write(block.y0, block.x0, core)
    tmp = Path(out).with_suffix(".tmp.npy")
    np.save(tmp, seeds)
    tmp.replace(out)
    return int(seeds.size)


def assign_task(
    levels: StoredLevels,
    block: Block,
    params: SegmentParams,
    shape_yx: tuple[int, int],
    halo_px: int,
    escalation_limit: int,
    table_path: str,
    label_path: str,
    done_path: str,
) -> dict[str, Any]:
    """Pass 2 of one block: write its certified core labels and its done marker."""
    import zarr

    res = assign_block(
        levels, block, params, load_table(table_path), shape_yx, halo_px, escalation_limit
    )
    arr = zarr.open_array(label_path, mode="r+")
    arr[0, block.y0 : block.y1, block.x0 : block.x1] = res.labels
    info = {"escalations": res.escalations, "flagged_yx": res.flagged_yx, "halo_px": res.halo_px}
    _atomic_json(Path(done_path), info)
    return info


def chunk_windows(chunk: Block, stride_px: int) -> list[tuple[int, int]]:
    """Lattice windows ``(i, j)`` whose valid centres make up a chunk (edges on the lattice)."""
    s = stride_px
    return [(i, j) for i in range(chunk.y0 // s, -(-chunk.y1 // s)) for j in range(chunk.x0 // s, -(-chunk.x1 // s))]


def maps_task(source: EngineMaps, chunks: list[Block], maps_path: str, done_path: str) -> None:
    """Pass 0 of one network task: store the maps of its chunks, all windows batched together."""
    import zarr

    arr = zarr.open_array(maps_path, mode="r+")
    s = source.stride_px
    windows = [(c, i, j) for c in chunks for i, j in chunk_windows(c, s)]
    centres = source.window_maps([(i, j) for _, i, j in windows])
    outs = {c: np.empty((len(source.channels), c.y1 - c.y0, c.x1 - c.x0), dtype=np.float32) for c in chunks}
    for (c, i, j), maps in zip(windows, centres, strict=True):
        out = outs[c]
        y0, x0 = i * s - c.y0, j * s - c.x0
        h, w = min(s, out.shape[1] - y0), min(s, out.shape[2] - x0)
        out[:, y0 : y0 + h, x0 : x0 + w] = maps[:, :h, :w]
    for c, out in outs.items():
        arr[:, c.y0 : c.y1, c.x0 : c.x1] = out
    Path(done_path).write_text("{}")


def _run(client: Any, fn: Any, args: list[tuple], desc: str, retries: int, **kw: Any) -> list[Any]:
    if not args:
        return []
    futures = client.map(fn, *zip(*args, strict=True), retries=retries, pure=False, **kw)
    for future in track(futures, desc):
        if future.status == "error":
            future.result()  # re-raise the block's error (e.g. HaloViolationError) now
    return client.gather(futures)


def _fingerprint(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _block_px(requested: int, unit_yx: tuple[int, int]) -> int:
    unit = math.lcm(*unit_yx)
    return max(unit, -(-requested // unit) * unit)


def segment_slide(
    slide_path: str | Path, cfg: RunConfig, client: Any, source: MapSource | None = None
) -> SegmentResult:
    """Segment one converted slide into ``labels/fibres`` (and ``labels/regions``).

    Parameters
    ----------
    slide_path : path of the ``.ome.zarr`` image.
    cfg : RunConfig
        ``cfg.segment`` (level, block size, halo, seeds, stored maps, overwrite) and,
        when no stored maps are given, ``cfg.model`` for the network.
    client : distributed.Client
        Where the block tasks run.
    source : MapSource, optional
        Maps of the segmentation level to use as they are (picklable, region
        independent); its ``ident`` attribute, if any, enters the resume fingerprint.

    Raises
    ------
    HaloViolationError
        A fibre is larger than the largest admissible window.
    """
    from nclsm_scale.io.labels import fill_label_pyramid
    from nclsm_scale.io.ome_zarr import create_labels
    from nclsm_scale.slide import open_slide

    t0 = time.perf_counter()
    seg = cfg.segment
    slide_path = str(slide_path)
    slide = open_slide(slide_path)
    level = seg.level if seg.level is not None else slide.level_nearest(seg.target_pixel_size_um)
    if level >= len(slide.levels):
        raise ConfigError(f"segment.level={level}: {slide_path} has levels 0..{len(slide.levels) - 1}")
    lv = slide.levels[level]
    if lv.pixel_size_um is None:
        raise SlideReadError(
            f"{slide_path}: the pixel size is unknown, but halo and seed sizes are in um; "
            "convert the slide again with --pixel-size UM."
        )
    px = float(math.sqrt(lv.pixel_size_um[0] * lv.pixel_size_um[1]))
    shape = (int(lv.shape[1]), int(lv.shape[2]))
    img = slide.array(level)
    block_px = _block_px(seg.block_px, tuple((img.shards or img.chunks)[-2:]))
    halo_px = math.ceil((seg.halo_um or seg.max_fibre_diameter_um) / px)
    work = work_dir(slide_path)
    stored: MapSource | None
    if source is not None:
        source_id, stored = f"source:{getattr(source, 'ident', type(source).__name__)}", source
    elif seg.maps is not None:
        source = stored = StoredMaps(seg.maps)
        source_id = f"stored:{Path(seg.maps).resolve()}"
    else:
        from nclsm_scale.segment.engine import engine_source

        source, source_id = engine_source(slide_path, level, cfg.model, client)
        stored = None
    if source.shape_yx != shape:
        raise ConfigError(
            f"the maps are {source.shape_yx} px but level {level} of {slide_path} is {shape} px; "
            "give maps of the segmentation level (or choose it with --level)"
        )
    params = SegmentParams.from_config(seg, px, source.channels)
    state = {
        "level": level, "shape": shape, "block_px": block_px, "halo_px": halo_px,
        "escalation_limit": seg.escalation_limit, "params": asdict(params), "source": source_id,
    }
    fp = _fingerprint(state)
    result = SegmentResult(slide_path, level, px, block_px, halo_px, 0, 0, 0)
    done = _completion(slide_path)
    if done.get("fingerprint") == fp and not seg.overwrite:
        logger.info("%s: already segmented with these settings; nothing to do", slide_path)
        result.n_fibres, result.escalations = done["n_fibres"], done["escalations"]
        result.skipped = True
        return result
    state_file = work / "state.json"
    fresh = seg.overwrite or not state_file.is_file() or json.loads(state_file.read_text()).get("fingerprint") != fp
    if fresh:
        shutil.rmtree(work, ignore_errors=True)
        for sub in ("seeds", "done", "maps_done"):
            (work / sub).mkdir(parents=True)
        create_labels(slide_path, "fibres", dtype=np.uint32)
        _atomic_json(state_file, {"fingerprint": fp, **state})
    if not (work / "levels").exists():  # fresh, or dropped by an earlier run whose mark is gone
        StoredLevels.create(str(work / "levels"), shape, block_px)
        for done_seeds in (work / "seeds").glob("*.npy"):
            done_seeds.unlink()
    grid = BlockGrid(shape, block_px)
    blocks = grid.blocks()
    result.n_blocks = len(blocks)
    logger.info("%s: level %d (%.3g um/px, %s px), %d blocks of %d px, halo %d px",
                slide_path, level, px, shape, len(blocks), block_px, halo_px)
    retries = seg.retries
    if stored is None:
        stored = _store_engine_maps(source, block_px, cfg.model.batch_size, shape, work, client, retries,
                                    fresh, gpu_task_resources(cfg.cluster, client))

    def name(b: Block) -> str:
        return f"{b.by}_{b.bx}"

    todo = [b for b in blocks if not (work / "seeds" / f"{name(b)}.npy").is_file()]
    levels = StoredLevels(str(work / "levels"))
    _run(client, seeds_task,
         [(stored, b, params, shape, levels, str(work / "seeds" / f"{name(b)}.npy"), halo_px,
           seg.escalation_limit) for b in todo],
         "segment: seeds", retries)
    table = seed_table([np.load(work / "seeds" / f"{name(b)}.npy") for b in blocks])
    table_path = work / "seeds.npy"
    save_table(table_path, table)
    label_path = _label_path(slide_path, "fibres", lv.path)
    todo = [b for b in blocks if not (work / "done" / f"{name(b)}.json").is_file()]
    _run(client, assign_task,
         [(levels, b, params, shape, halo_px, seg.escalation_limit, str(table_path), label_path,
           str(work / "done" / f"{name(b)}.json")) for b in todo],
         "segment: assign", retries)
    for b in blocks:
        info = json.loads((work / "done" / f"{name(b)}.json").read_text())
        result.escalations += info["escalations"]
        result.flagged_yx.extend(tuple(v) for v in info["flagged_yx"])
    fill_label_pyramid(slide_path, "fibres", level, client=client)
    _write_regions(slide, seg, create_labels, fill_label_pyramid, client)
    result.n_fibres = int(table.size)
    for big in ("maps", "levels"):  # network maps (if any) and levels: large, no longer needed
        shutil.rmtree(work / big, ignore_errors=True)
    _set_completion(slide_path, {"fingerprint": fp, "n_fibres": result.n_fibres,
                                 "escalations": result.escalations, "level": level})
    result.seconds = time.perf_counter() - t0
    logger.info("%s: %d fibres, %d escalation(s), %.1f s",
                slide_path, result.n_fibres, result.escalations, result.seconds)
    return result


def network_chunk_px(stride_px: int, min_chunk_px: int = 256) -> int:
    """Chunk edge of the stored maps: the smallest multiple of the window stride >= ``min_chunk_px``.

    Small chunks would make the later passes' unaligned reads expensive.
    """
    return stride_px * max(1, -(-min_chunk_px // stride_px))


def network_tasks(
    shape_yx: tuple[int, int], stride_px: int, chunk_px: int, batch_size: int, block_px: int
) -> list[list[Block]]:
    """Network tasks: runs of whole map chunks in raster order, each about a block's windows.

    A task takes chunks until it holds at least ``batch_size * max(1, round(block windows /
    batch_size))`` windows, so every task but the last fills its batches (with one window
    per chunk, exactly); a chunk is written by one task only, so writes never race.
    """
    per_task = batch_size * max(1, round((block_px / stride_px) ** 2 / batch_size))
    tasks: list[list[Block]] = [[]]
    count = 0
    for chunk in BlockGrid(shape_yx, chunk_px).blocks():
        if count >= per_task:
            tasks.append([])
            count = 0
        tasks[-1].append(chunk)
        count += len(chunk_windows(chunk, stride_px))
    return tasks


def _store_engine_maps(
    source: EngineMaps, block_px: int, batch_size: int, shape: tuple[int, int], work: Path, client: Any,
    retries: int, fresh: bool, resources: dict[str, int] | None,
) -> StoredMaps:
    import zarr

    chunk_px = network_chunk_px(source.stride_px)
    tasks = network_tasks(shape, source.stride_px, chunk_px, batch_size, block_px)
    path = work / "maps"
    if fresh or not path.exists():
        arr = zarr.create_array(
            str(path), shape=(len(source.channels), *shape), dtype="float16",
            chunks=(len(source.channels), chunk_px, chunk_px), overwrite=True,
        )
        arr.attrs["channels"] = list(source.channels)
    todo = [(n, t) for n, t in enumerate(tasks) if not (work / "maps_done" / str(n)).is_file()]
    _run(client, maps_task, [(source, t, str(path), str(work / "maps_done" / str(n))) for n, t in todo],
         "segment: network", retries, resources=resources)
    return StoredMaps(str(path))


def _write_regions(slide: Any, seg: Any, create_labels: Any, fill_label_pyramid: Any, client: Any) -> None:
    import zarr

    level = slide.level_nearest(seg.region_pixel_size_um)
    lv = slide.levels[level]
    _, ny, nx = lv.shape
    mask = tissue_mask(slide.read(level, 0, 0, ny, nx), float(np.mean(lv.pixel_size_um)), seg.region_smooth_um)
    create_labels(slide.path, "regions", dtype=np.uint8, colors=REGION_COLORS)
    zarr.open_array(_label_path(slide.path, "regions", lv.path), mode="r+")[0] = mask
    fill_label_pyramid(slide.path, "regions", level, client=client)


def _completion(slide_path: str) -> dict[str, Any]:
    import zarr

    try:
        group = zarr.open_group(f"{slide_path.rstrip('/')}/labels/fibres", mode="r")
    except (FileNotFoundError, ValueError, KeyError):
        return {}
    return dict(group.attrs.get("nclsm", {}).get("segment", {}))


def _set_completion(slide_path: str, info: dict[str, Any]) -> None:
    import zarr

    group = zarr.open_group(f"{slide_path.rstrip('/')}/labels/fibres", mode="r+")
    nclsm = dict(group.attrs.get("nclsm", {}))
    nclsm["segment"] = {**info, "complete": True}
    group.attrs["nclsm"] = nclsm
