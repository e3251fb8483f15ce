"""Dask driver of ``segment``: block tasks over a slide, resumable, labels written in place.

:func:`plan_segmentation` fixes everything the labels depend on (level, block and
halo sizes, parameters, map source; :class:`SegmentPlan`); then passes, each one
:func:`~nclsm_scale.cluster.fan_out` over block descriptors (tiny arguments; every
task reads its block + halo straight from zarr):

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

A slide whose segmentation level is coarser than ``segment.target_pixel_size_um`` by
more than ``segment.resample_above`` is segmented on a **virtual plane**: the level
resampled to the target (:mod:`~nclsm_scale.segment.resample`). The passes above run
on that plane (blocks, halos and parameters in its pixels; the network's lattice
anchored at its origin), and assign writes into ``<work>/virtual`` (chunks = block
cores) instead of ``labels/fibres``. Two more passes, over the write units (shards,
else chunks) of ``labels/fibres`` at the level, bring the labels back: each level
pixel takes the virtual label at its centre (nearest), so a fibre can vanish there;

3. present: the IDs each unit samples, into ``<work>/sampled/<n>.npy``; the client
   merges them into the sorted table of fibres present at the level (``<work>/kept.npy``);
4. write-back: each unit's sampled labels renumbered densely 1..N by that table and
   written (one task per write unit: no write races), a marker per unit.

Stored maps (``segment.maps``, or a ``source`` given) are maps of the level as
before (then the level is segmented directly, whatever its pixel size), or, for a
coarse level, maps of its virtual plane (then the virtual path runs on them);
other shapes are refused.

Then the other label levels are filled, ``labels/regions`` is written and the
completion marker (``nclsm.segment`` in the ``labels/fibres`` attributes) is set
last. ``<work>`` is the folder ``<store>.segment`` next to the slide
(:func:`nclsm_scale.layout.work_dir`); its
``state.json`` holds a fingerprint of everything the labels depend on (with a
virtual plane also its factor, kernel and shapes), so a rerun with the same settings
resumes block by block and a finished slide is skipped. The completion marker
records a virtual plane under ``virtual`` (factor, kernel, shapes, pixel size and the
fibres found on the plane, of which ``n_fibres`` are present at the level).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nclsm_scale.cluster import fan_out, gpu_task_resources
from nclsm_scale.config import RunConfig, SegmentConfig
from nclsm_scale.errors import ConfigError, SlideRefusedError
from nclsm_scale.grid import Block, BlockGrid
from nclsm_scale.io.labels import fill_label_pyramid
from nclsm_scale.io.ome_zarr import attrs_of, create_labels, regions, write_unit_px
from nclsm_scale.io.shards import write_block
from nclsm_scale.layout import work_dir
from nclsm_scale.segment.assign import assign_block
from nclsm_scale.segment.ids import load_table, save_table, seed_table
from nclsm_scale.segment.levels import StoredLevels
from nclsm_scale.segment.maps import MapSource, StoredMaps
from nclsm_scale.segment.regions import tissue_mask
from nclsm_scale.segment.resample import VirtualPlane
from nclsm_scale.segment.seeds import SegmentParams, seed_pass
from nclsm_scale.slide import Slide, open_slide
from nclsm_scale.tables import REGION_COLORS

if TYPE_CHECKING:
    from distributed import Client

    from nclsm_scale.segment.engine import EngineMaps

__all__ = ["SegmentPlan", "SegmentResult", "check_memory", "network_tasks", "plan_segmentation", "segment_slide"]

logger = logging.getLogger(__name__)

#: ``work_dir`` stage name of segmentation's intermediate state.
WORK = "segment"
#: Peak bytes per window pixel of a block task: maps (float16 read, float32 copy), smoothing, levels, cores and
#: labels (measured 20-30 with numpy's allocations traced; rounded up for the compiled loops' own).
BLOCK_BYTES_PER_PX = 48
#: Peak bytes per pixel of the whole regions level for the tissue and fold masks, plus 8 per channel
#: (measured: tissue mask 12 + 8 per channel, fold detection 58).
REGION_BYTES_PER_PX = 64


@dataclass
class SegmentResult:
    """What ``segment`` did to one slide.

    ``level`` is the level the labels are written at; ``pixel_size_um``, ``block_px``,
    ``halo_px`` and ``flagged_yx`` refer to the plane segmented: the level, or its
    virtual plane when ``virtual_factor`` (level pixel size over the plane's) is set.
    ``n_fibres`` counts the fibres present at the level.
    """

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
    virtual_factor: float | None = None


def _atomic_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


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


def sample_labels(virtual_path: str, plane: VirtualPlane, region: tuple[int, int, int, int]) -> np.ndarray:
    """Virtual-plane labels at the centres of the level pixels of ``region`` ``(y0, x0, y1, x1)``, ``(h, w)``.

    Only the sampled rows and columns are kept (an orthogonal selection, chunk by
    chunk), so memory follows the level's write unit, not its virtual footprint.
    """
    import zarr

    y0, x0, y1, x1 = region
    arr = zarr.open_array(virtual_path, mode="r")
    return np.asarray(arr.get_orthogonal_selection((0, plane.centres(y0, y1), plane.centres(x0, x1))))


def present_task(virtual_path: str, plane: VirtualPlane, region: tuple[int, int, int, int], out: str) -> None:
    """Pass 3 of one write unit of the level: the sorted virtual IDs its pixels sample, into ``out``."""
    ids = np.unique(sample_labels(virtual_path, plane, region)).astype(np.int64)
    tmp = Path(out).with_suffix(".tmp.npy")
    np.save(tmp, ids[ids > 0])
    tmp.replace(out)


def write_back_task(
    virtual_path: str, plane: VirtualPlane, region: tuple[int, int, int, int], kept_path: str,
    label_path: str, done_path: str,
) -> None:
    """Pass 4 of one write unit: its sampled labels, renumbered by the kept IDs (1..N), written to the level."""
    import zarr

    sampled = sample_labels(virtual_path, plane, region)
    kept = load_table(kept_path)
    labels = np.where(sampled > 0, np.searchsorted(kept, sampled) + 1, 0).astype(np.uint32)
    write_block(zarr.open_array(label_path, mode="r+"), labels[None], (0, region[0], region[1]))
    Path(done_path).write_text("{}")


def _fingerprint(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _block_px(requested: int, unit_yx: tuple[int, int]) -> int:
    """``requested`` rounded up to a multiple of the label write unit, so no two blocks share a chunk."""
    unit = math.lcm(*unit_yx)
    return max(unit, -(-requested // unit) * unit)


def _name(b: Block) -> str:
    return f"{b.by}_{b.bx}"


@dataclass(frozen=True)
class SegmentPlan:
    """Everything the labels of one slide depend on, and where the passes keep their state.

    ``source`` gives the maps; ``stored`` is the source the seed and assign passes
    read (None until the network's maps are stored). ``plane`` is the virtual plane
    segmented instead of the level (None: the level itself); ``pixel_size_um``,
    ``shape_yx``, ``block_px`` and ``halo_px`` are those of the plane segmented.
    ``state`` enters the resume fingerprint: the same fingerprint means the same labels.
    """

    slide: Slide
    level: int
    pixel_size_um: float
    shape_yx: tuple[int, int]
    block_px: int
    halo_px: int
    escalation_limit: int
    retries: int
    params: SegmentParams
    source: MapSource
    source_id: str
    stored: MapSource | None
    work: Path
    plane: VirtualPlane | None = None

    @property
    def state(self) -> dict[str, Any]:
        """What the labels depend on (recorded in ``<work>/state.json``)."""
        state = {
            "level": self.level, "shape": self.shape_yx, "block_px": self.block_px, "halo_px": self.halo_px,
            "escalation_limit": self.escalation_limit, "params": asdict(self.params), "source": self.source_id,
        }
        if self.plane is not None:  # only then: a level segmented directly keeps its fingerprint
            state["virtual"] = self.plane.record
        return state

    @property
    def assign_path(self) -> str:
        """The ``(1, y, x)`` label array assign writes: ``labels/fibres`` at the level, or ``<work>/virtual``."""
        if self.plane is not None:
            return str(self.work / "virtual")
        return f"{self.slide.label_group('fibres')}/{self.slide.levels[self.level].path}"

    @property
    def fingerprint(self) -> str:
        """Hash of :attr:`state`."""
        return _fingerprint(self.state)

    @property
    def blocks(self) -> list[Block]:
        """Block cores in raster order."""
        return BlockGrid(self.shape_yx, self.block_px).blocks()

    def seeds_file(self, b: Block) -> Path:
        """Owned seeds of block ``b`` (pass 1's marker)."""
        return self.work / "seeds" / f"{_name(b)}.npy"

    def done_file(self, b: Block) -> Path:
        """Done marker of block ``b`` (pass 2), with its escalations."""
        return self.work / "done" / f"{_name(b)}.json"

    @property
    def units(self) -> list[tuple[int, int, int, int]]:
        """Write units ``(y0, x0, y1, x1)`` of ``labels/fibres`` at the level (virtual passes' tasks)."""
        arr = self.slide.label_array("fibres", self.level)
        return regions(arr.shape[-2:], write_unit_px(arr))


def virtual_plane(seg: SegmentConfig, pixel_size_um: float, shape_yx: tuple[int, int]) -> VirtualPlane | None:
    """The virtual plane of a level of ``pixel_size_um`` and ``shape_yx``; None when it is segmented directly.

    A level coarser than ``seg.target_pixel_size_um`` by more than ``seg.resample_above``
    is resampled by ``pixel_size_um / target``. Nearer levels keep their own pixels (with
    pyramids of 2 x steps the nearest level is at most sqrt(2) coarser, so only slides
    whose finest level is coarse take the virtual path).
    """
    if pixel_size_um <= seg.target_pixel_size_um * seg.resample_above:
        return None
    return VirtualPlane(shape_yx, pixel_size_um / seg.target_pixel_size_um)


def _given_maps_plane(
    source: MapSource, plane: VirtualPlane | None, level: int, path: str, shape: tuple[int, int]
) -> VirtualPlane | None:
    """The plane given maps cover: the level's (None) or its virtual plane; anything else is refused."""
    if source.shape_yx == shape:
        if plane is not None:
            logger.info("%s: the maps given are of level %d itself; segmenting it directly (no virtual plane)",
                        path, level)
        return None
    if plane is not None and source.shape_yx == plane.shape:
        return plane
    virtual = f" or its virtual plane at the target pixel size, {plane.shape} px" if plane is not None else ""
    raise ConfigError(
        f"the maps are {source.shape_yx} px but level {level} of {path} is {shape} px{virtual}; "
        "give maps of the segmentation level (or choose it with --level)"
    )


def plan_segmentation(
    slide_path: str | Path, cfg: RunConfig, client: Client, source: MapSource | None = None
) -> SegmentPlan:
    """Level, plane, block and halo sizes, parameters and map source of a slide's segmentation.

    Raises
    ------
    ConfigError
        When the level does not exist or the maps do not match it (nor its virtual plane).
    SlideReadError
        When the slide has no pixel size, or (network maps) no membrane or mito channel.
    """
    seg = cfg.segment
    slide = open_slide(slide_path)
    level = seg.level if seg.level is not None else slide.level_nearest(seg.target_pixel_size_um)
    if level >= len(slide.levels):
        raise ConfigError(f"segment.level={level}: {slide.path} has levels 0..{len(slide.levels) - 1}")
    level_shape = (int(slide.levels[level].shape[1]), int(slide.levels[level].shape[2]))
    plane = virtual_plane(seg, slide.pixel_size_um(level), level_shape)
    stored: MapSource | None
    if source is not None:
        source_id, stored = f"source:{getattr(source, 'ident', type(source).__name__)}", source
    elif seg.maps is not None:
        source = stored = StoredMaps(seg.maps)
        source_id = f"stored:{Path(seg.maps).resolve()}"
    else:
        from nclsm_scale.segment.engine import engine_source

        source, source_id = engine_source(slide, level, cfg.model, client, plane)
        stored = None
    if stored is not None:
        plane = _given_maps_plane(stored, plane, level, slide.path, level_shape)
    if plane is None:
        px, shape = slide.pixel_size_um(level), level_shape
        block_px = _block_px(cfg.grid.block_px, write_unit_px(slide.array(level)))
    else:  # assign writes a work array whose chunks are the cores: any block size will do
        px, shape, block_px = seg.target_pixel_size_um, plane.shape, cfg.grid.block_px
    return SegmentPlan(
        slide=slide, level=level, pixel_size_um=px, shape_yx=shape, block_px=block_px,
        halo_px=cfg.grid.halo_px(px), escalation_limit=cfg.grid.escalation_limit, retries=cfg.grid.retries,
        params=SegmentParams.from_config(seg, px, source.channels), source=source, source_id=source_id,
        stored=stored, work=work_dir(slide.path, WORK), plane=plane,
    )


def check_memory(plan: SegmentPlan, seg: SegmentConfig) -> None:
    """Refuse a slide whose block windows or whole regions level would need more than ``seg.max_memory_gib``.

    A block task reads its core plus the halo (doubled up to the escalation limit) and
    the smoothing support; the tissue (``segment``) and fold (``curate``) masks hold the
    regions level whole. Both scale with the pixel size, so a wrong pixel size or level
    choice shows here before any work.

    Raises
    ------
    SlideRefusedError
        Naming the slide, the step, its size and the estimate.
    """
    slide, budget = plan.slide, seg.max_memory_gib * 2**30
    halo = plan.halo_px * 2**plan.escalation_limit + plan.params.margin_px
    window = plan.block_px + 2 * halo
    level = slide.region_level(seg)
    c, ny, nx = slide.levels[level].shape
    steps = {
        f"a block task's window ({window} px square: halo {halo} px after {plan.escalation_limit} escalation(s) "
        f"at {plan.pixel_size_um:.4g} um/px)": window**2 * BLOCK_BYTES_PER_PX,
        f"the regions level ({ny} x {nx} px, held whole for the tissue and fold masks)":
            ny * nx * (REGION_BYTES_PER_PX + 8 * c),
    }
    for what, need in steps.items():
        if need > budget:
            raise SlideRefusedError(
                f"{slide.path}: {what} needs about {need / 2**30:.3g} GiB, over segment.max_memory_gib = "
                f"{seg.max_memory_gib:g}; check the slide's pixel size, or raise the budget")


def _resume(plan: SegmentPlan, overwrite: bool) -> bool:
    """Prepare the work folder: keep it when it holds a run of the same plan, else start afresh.

    Returns True when the segmentation starts afresh (new, changed or ``overwrite``).
    """
    import zarr

    work, state_file = plan.work, plan.work / "state.json"
    fresh = overwrite or not state_file.is_file() or json.loads(state_file.read_text()).get(
        "fingerprint") != plan.fingerprint
    if fresh:
        shutil.rmtree(work, ignore_errors=True)
        for sub in ("seeds", "done", "maps_done", "sampled", "written"):
            (work / sub).mkdir(parents=True)
        create_labels(plan.slide.path, "fibres", dtype=np.uint32)
        _atomic_json(state_file, {"fingerprint": plan.fingerprint, **plan.state})
    if not (work / "levels").exists():  # fresh, or dropped by an earlier run whose mark is gone
        StoredLevels.create(str(work / "levels"), plan.shape_yx, plan.block_px)
        for done_seeds in (work / "seeds").glob("*.npy"):
            done_seeds.unlink()
    if plan.plane is not None and not (work / "virtual").exists():  # likewise: assign all blocks again
        zarr.create_array(plan.assign_path, shape=(1, *plan.shape_yx), chunks=(1, plan.block_px, plan.block_px),
                          dtype="uint32", fill_value=0, overwrite=True)
        for done_block in (work / "done").glob("*.json"):
            done_block.unlink()
    return fresh


def _seed_pass(plan: SegmentPlan, maps: MapSource, client: Client) -> Path:
    """Pass 1 over the blocks without seeds; the seed table (IDs 1..N) written, its path returned."""
    levels = StoredLevels(str(plan.work / "levels"))
    todo = [b for b in plan.blocks if not plan.seeds_file(b).is_file()]
    fan_out(client, seeds_task,
            [(maps, b, plan.params, plan.shape_yx, levels, str(plan.seeds_file(b)), plan.halo_px,
              plan.escalation_limit) for b in todo],
            desc="segment: seeds", retries=plan.retries)
    table_path = plan.work / "seeds.npy"
    save_table(table_path, seed_table([np.load(plan.seeds_file(b)) for b in plan.blocks]))
    return table_path


def _assign_pass(plan: SegmentPlan, table_path: Path, client: Client) -> tuple[int, list[tuple[int, int]]]:
    """Pass 2 over the blocks not done: labels written; all blocks' escalations and flagged places returned."""
    levels = StoredLevels(str(plan.work / "levels"))
    todo = [b for b in plan.blocks if not plan.done_file(b).is_file()]
    fan_out(client, assign_task,
            [(levels, b, plan.params, plan.shape_yx, plan.halo_px, plan.escalation_limit, str(table_path),
              plan.assign_path, str(plan.done_file(b))) for b in todo],
            desc="segment: assign", retries=plan.retries)
    escalations, flagged = 0, list[tuple[int, int]]()
    for b in plan.blocks:
        info = json.loads(plan.done_file(b).read_text())
        escalations += info["escalations"]
        flagged.extend(tuple(v) for v in info["flagged_yx"])
    return escalations, flagged


def _write_back(plan: SegmentPlan, plane: VirtualPlane, client: Client) -> int:
    """Passes 3 and 4: the virtual labels sampled into ``labels/fibres`` at the level; the fibres there counted."""
    units = plan.units
    sampled = [plan.work / "sampled" / f"{n}.npy" for n in range(len(units))]
    fan_out(client, present_task,
            [(plan.assign_path, plane, u, str(f)) for u, f in zip(units, sampled, strict=True) if not f.is_file()],
            desc="segment: present", retries=plan.retries)
    kept_path = plan.work / "kept.npy"
    save_table(kept_path, np.unique(np.concatenate([np.load(f) for f in sampled])))
    written = [plan.work / "written" / str(n) for n in range(len(units))]
    label_path = f"{plan.slide.label_group('fibres')}/{plan.slide.levels[plan.level].path}"
    fan_out(client, write_back_task,
            [(plan.assign_path, plane, u, str(kept_path), label_path, str(w))
             for u, w in zip(units, written, strict=True) if not w.is_file()],
            desc="segment: write back", retries=plan.retries)
    return int(load_table(kept_path).size)


def segment_slide(
    slide_path: str | Path, cfg: RunConfig, client: Client, source: MapSource | None = None
) -> SegmentResult:
    """Segment one converted slide into ``labels/fibres`` (and ``labels/regions``).

    Parameters
    ----------
    slide_path : path of the ``.ome.zarr`` image.
    cfg : RunConfig
        ``cfg.segment`` (level, seeds, stored maps, overwrite), ``cfg.grid`` (block
        size, halo, escalations, retries) and, when no stored maps are given,
        ``cfg.model`` for the network.
    client : distributed.Client
        Where the block tasks run.
    source : MapSource, optional
        Maps of the segmentation level (or of its virtual plane) to use as they are
        (picklable, region independent); its ``ident`` attribute, if any, enters the
        resume fingerprint.

    Raises
    ------
    HaloViolationError
        A fibre is larger than the largest admissible window.
    SlideRefusedError
        A step would need more memory than ``segment.max_memory_gib`` (:func:`check_memory`).
    """
    t0 = time.perf_counter()
    plan = plan_segmentation(slide_path, cfg, client, source)
    plane = plan.plane
    result = SegmentResult(plan.slide.path, plan.level, plan.pixel_size_um, plan.block_px, plan.halo_px,
                           len(plan.blocks), 0, 0, virtual_factor=plane.factor if plane is not None else None)
    done = plan.slide.label_attrs("fibres").get("segment", {})
    if done.get("fingerprint") == plan.fingerprint and not cfg.segment.overwrite:
        logger.info("%s: already segmented with these settings; nothing to do", plan.slide.path)
        result.n_fibres, result.escalations = done["n_fibres"], done["escalations"]
        result.skipped = True
        return result
    check_memory(plan, cfg.segment)
    fresh = _resume(plan, cfg.segment.overwrite)
    if plane is not None:
        logger.info("%s: level %d (%.3g um/px, %s px) is coarser than the target: segmenting its virtual plane "
                    "resampled x%.4g", plan.slide.path, plan.level, plan.slide.pixel_size_um(plan.level),
                    plane.source_shape, plane.factor)
    logger.info("%s: %s (%.3g um/px, %s px), %d blocks of %d px, halo %d px", plan.slide.path,
                "virtual plane" if plane is not None else f"level {plan.level}", plan.pixel_size_um,
                plan.shape_yx, len(plan.blocks), plan.block_px, plan.halo_px)
    maps = plan.stored
    if maps is None:
        maps = _store_engine_maps(plan, cfg.model.batch_size, client, fresh, gpu_task_resources(cfg.cluster, client))
    table_path = _seed_pass(plan, maps, client)
    result.escalations, result.flagged_yx = _assign_pass(plan, table_path, client)
    n_plane = int(load_table(table_path).size)
    result.n_fibres = _write_back(plan, plane, client) if plane is not None else n_plane
    fill_label_pyramid(plan.slide.path, "fibres", plan.level, run=partial(fan_out, client, desc="segment: labels"))
    _write_regions(plan.slide, cfg, client)
    for big in ("maps", "levels", "virtual"):  # network maps, levels, virtual labels: large, no longer needed
        shutil.rmtree(plan.work / big, ignore_errors=True)
    info = {"fingerprint": plan.fingerprint, "n_fibres": result.n_fibres, "escalations": result.escalations,
            "level": plan.level}
    if plane is not None:
        info["virtual"] = {**plane.record, "pixel_size_um": plan.pixel_size_um, "n_fibres": n_plane}
        logger.info("%s: %d of the %d fibres of the virtual plane are present at level %d",
                    plan.slide.path, result.n_fibres, n_plane, plan.level)
    _set_completion(plan.slide, info)
    result.seconds = time.perf_counter() - t0
    logger.info("%s: %d fibres, %d escalation(s), %.1f s",
                plan.slide.path, result.n_fibres, result.escalations, result.seconds)
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
    plan: SegmentPlan, batch_size: int, client: Client, fresh: bool, resources: dict[str, int] | None
) -> StoredMaps:
    """Pass 0: the network's maps of the whole level into ``<work>/maps``, task by task (resumable)."""
    import zarr

    source: EngineMaps = plan.source  # type: ignore[assignment]
    chunk_px = network_chunk_px(source.stride_px)
    tasks = network_tasks(plan.shape_yx, source.stride_px, chunk_px, batch_size, plan.block_px)
    path, marks = plan.work / "maps", plan.work / "maps_done"
    if fresh or not path.exists():
        arr = zarr.create_array(
            str(path), shape=(len(source.channels), *plan.shape_yx), dtype="float16",
            chunks=(len(source.channels), chunk_px, chunk_px), overwrite=True,
        )
        arr.attrs["channels"] = list(source.channels)
    todo = [(n, t) for n, t in enumerate(tasks) if not (marks / str(n)).is_file()]
    fan_out(client, maps_task, [(source, t, str(path), str(marks / str(n))) for n, t in todo],
            desc="segment: network", retries=plan.retries, resources=resources)
    return StoredMaps(str(path))


def _write_regions(slide: Slide, cfg: RunConfig, client: Client) -> None:
    """The tissue mask into ``labels/regions`` at the regions level, then its pyramid."""
    level = slide.region_level(cfg.segment)
    _, ny, nx = slide.levels[level].shape
    mask = tissue_mask(slide.read(level, 0, 0, ny, nx), slide.pixel_size_um(level), cfg.segment.region_smooth_um)
    create_labels(slide.path, "regions", dtype=np.uint8, colors=REGION_COLORS)
    slide.label_array("regions", level, mode="r+")[0] = mask
    fill_label_pyramid(slide.path, "regions", level, run=partial(fan_out, client, desc="segment: regions"))


def _set_completion(slide: Slide, info: dict[str, Any]) -> None:
    """Mark ``labels/fibres`` complete (last), with the fingerprint, counts and level in ``nclsm.segment``."""
    import zarr

    group = zarr.open_group(slide.label_group("fibres"), mode="r+")
    nclsm = dict(attrs_of(group).get("nclsm", {}))
    nclsm["segment"] = {**info, "complete": True}
    group.attrs["nclsm"] = nclsm
