"""Write a synthetic section of any size as pyramidal OME-TIFFs plus a fibre table.

Memory stays O(chunk): level 0 is rendered chunk by chunk into a temporary zarr
store next to the output, pyramid levels are built window by window, and the
TIFFs are written from tile generators. The same config gives byte-identical
files (the OME UUID is derived from the config, no time stamps are written).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr
from tqdm import tqdm

from nclsm_scale.config import SynthConfig
from nclsm_scale.errors import SlideWriteError
from nclsm_scale.progress import bar_disabled
from nclsm_scale.synth.appearance import Appearance
from nclsm_scale.synth.generate import (
    build_table,
    iter_windows,
    keys_to_ids,
    merge_stats,
    render_window,
    window_stats,
)
from nclsm_scale.synth.geometry import SlidePlan
from nclsm_scale.synth.stains import channel_names

log = logging.getLogger(__name__)


def output_paths(path: str | Path) -> dict[str, Path]:
    """Paths written for ``path`` (``image``, ``fibres``, ``regions``, ``csv``, ``parquet``)."""
    path = Path(path)
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    stem = path.with_name(name)
    return {
        "image": path,
        "fibres": stem.with_name(f"{name}.fibres.ome.tiff"),
        "regions": stem.with_name(f"{name}.regions.ome.tiff"),
        "csv": stem.with_name(f"{name}.fibres.csv"),
        "parquet": stem.with_name(f"{name}.fibres.parquet"),
    }


def level_shapes(size_px: tuple[int, int], min_level_px: int) -> list[tuple[int, int]]:
    """Pyramid level sizes: halve (rounding up) until the longer edge is <= ``min_level_px``."""
    h, w = size_px
    shapes = [(h, w)]
    while max(shapes[-1]) > min_level_px:
        h, w = shapes[-1]
        shapes.append(((h + 1) // 2, (w + 1) // 2))
    return shapes


def _downsample(block: np.ndarray, kind: str) -> np.ndarray:
    """2x2 reduction of ``(..., h, w)``: rounded mean for images, top-left pick for labels."""
    if kind == "labels":
        return block[..., ::2, ::2]
    h, w = block.shape[-2:]
    pad = [(0, 0)] * (block.ndim - 2) + [(0, h % 2), (0, w % 2)]
    b = np.pad(block, pad, mode="edge").astype(np.uint32)
    s = b[..., ::2, ::2] + b[..., 1::2, ::2] + b[..., ::2, 1::2] + b[..., 1::2, 1::2]
    return ((s + 2) // 4).astype(block.dtype)


def _array(root: zarr.Group, path: str) -> zarr.Array:
    """The array at ``path`` in ``root``; a group there is an error."""
    node = root[path]
    if not isinstance(node, zarr.Array):
        raise TypeError(f"expected an array at {path!r} in the zarr store, found a group.")
    return node


def build_levels(
    root: zarr.Group, name: str, shapes: list[tuple[int, int]], chunk: int, kind: str
) -> None:
    """Add pyramid levels ``name/1..`` to ``root`` from ``name/0``, window by window."""
    for k in range(1, len(shapes)):
        src = _array(root, f"{name}/{k - 1}")
        lead = src.shape[:-2]
        dst = root.create_array(
            f"{name}/{k}",
            shape=(*lead, *shapes[k]),
            chunks=src.chunks,
            dtype=src.dtype,
            fill_value=0,
            compressors=src.compressors or None,
        )
        for y0, x0, h, w in iter_windows(shapes[k], chunk):
            block = np.asarray(src[..., 2 * y0 : 2 * (y0 + h), 2 * x0 : 2 * (x0 + w)])
            dst[..., y0 : y0 + h, x0 : x0 + w] = _downsample(block, kind)[..., :h, :w]


def _tiles(arr: zarr.Array, tile: int) -> Iterator[np.ndarray]:
    """Tiles of a ``(c, y, x)`` or ``(y, x)`` array in TIFF order, edge tiles zero-padded."""
    planes = arr.shape[0] if arr.ndim == 3 else 1
    h, w = arr.shape[-2:]
    for c in range(planes):
        for y0 in range(0, h, tile):
            strip = np.asarray(arr[c, y0 : y0 + tile] if arr.ndim == 3 else arr[y0 : y0 + tile])
            for x0 in range(0, w, tile):
                t = np.zeros((tile, tile), arr.dtype)
                part = strip[:, x0 : x0 + tile]
                t[: part.shape[0], : part.shape[1]] = part
                yield t


def _ome_uuid(cfg: SynthConfig, what: str) -> str:
    """Return a UUID derived from the config (no randomness, so files are reproducible)."""
    digest = hashlib.sha256(f"{cfg.model_dump_json()}|{what}".encode()).digest()
    return f"urn:uuid:{uuid.UUID(bytes=digest[:16], version=4)}"


def write_tiff(
    path: Path,
    root: zarr.Group,
    name: str,
    cfg: SynthConfig,
    n_levels: int,
    channels: list[str],
    uuid_tag: str = "",
) -> None:
    """Write the pyramid ``root[name/0..]`` as a tiled OME-TIFF with SubIFD levels."""
    level0 = _array(root, f"{name}/0")
    axes = "CYX" if level0.ndim == 3 else "YX"
    px = cfg.pixel_size_um
    metadata = {
        "axes": axes,
        "UUID": _ome_uuid(cfg, f"{name}|{uuid_tag}"),
        "Creator": "nclsm-scale synth",
        "Name": path.name,
        "PhysicalSizeX": px,
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": px,
        "PhysicalSizeYUnit": "µm",
        "Channel": {"Name": channels},
    }
    compression = None if cfg.compression == "none" else cfg.compression
    tile = cfg.tile_px
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        for k in range(n_levels):
            arr = _array(root, f"{name}/{k}")
            scale = 2**k
            options: dict[str, Any] = dict(
                shape=arr.shape,
                dtype=arr.dtype,
                tile=(tile, tile),
                compression=compression,
                photometric="minisblack",
                resolution=(1e4 / (px * scale), 1e4 / (px * scale)),
                resolutionunit="CENTIMETER",
            )
            if k == 0:
                tif.write(_tiles(arr, tile), subifds=n_levels - 1, metadata=metadata, **options)
            else:
                tif.write(_tiles(arr, tile), subfiletype=1, metadata=None, **options)


def write_section(path: str | Path, cfg: SynthConfig, *, progress: bool | None = False) -> dict[str, Path]:
    """Render ``cfg`` chunk by chunk and write image, ground truth and table.

    Parameters
    ----------
    path : str or Path
        Image path, e.g. ``out.ome.tiff``; ground truth goes beside it as
        ``out.fibres.ome.tiff`` (uint32 labels), ``out.regions.ome.tiff``
        (uint8: 0 background, 1 tissue, 2 fold), ``out.fibres.csv`` and ``.parquet``.
    cfg : SynthConfig
        The slide (size, seed, geometry and appearance ranges, chunk and tile size).
    progress : bool, optional
        Show a tqdm bar over chunks; ``None``: only on a terminal, never when quiet.

    Returns
    -------
    dict of str to Path
        The written files, keyed ``image, fibres, regions, csv, parquet``.
    """
    paths = output_paths(path)
    out_dir = paths["image"].parent
    if not out_dir.is_dir():
        raise SlideWriteError(f"cannot write {paths['image']}: folder {out_dir} does not exist.")
    plan = SlidePlan(cfg)
    app = Appearance.draw(cfg)
    shapes = level_shapes(cfg.size_px, cfg.min_level_px)
    windows = list(iter_windows(cfg.size_px, cfg.chunk_px))
    tmp = Path(tempfile.mkdtemp(prefix=".synth-", dir=out_dir))
    try:
        root = zarr.open_group(zarr.storage.LocalStore(tmp / "levels.zarr"), mode="w")
        t = cfg.tile_px
        h, w = cfg.size_px
        img = root.create_array(  # noisy pixels barely compress: store them raw (faster)
            "image/0",
            shape=(len(cfg.stains), h, w),
            chunks=(1, t, t),
            dtype=np.uint16,
            fill_value=0,
            compressors=None,
        )
        keys = root.create_array("keys", shape=(h, w), chunks=(t, t), dtype=np.uint64, fill_value=0)
        reg = root.create_array(
            "regions/0", shape=(h, w), chunks=(t, t), dtype=np.uint8, fill_value=0
        )
        parts = []
        bar = tqdm(total=len(windows), desc="synth", unit="chunk", disable=bar_disabled(progress))
        for y0, x0, ch, cw in windows:
            win = render_window(plan, app, y0, x0, ch, cw)
            img[:, y0 : y0 + ch, x0 : x0 + cw] = win.image
            keys[y0 : y0 + ch, x0 : x0 + cw] = win.keys
            reg[y0 : y0 + ch, x0 : x0 + cw] = win.regions
            parts.append(window_stats(win.keys, win.in_fold, y0, x0))
            if len(parts) >= 256:  # keep the bookkeeping O(fibres), not O(windows)
                parts = [merge_stats(parts)]
            bar.update()
        bar.close()
        stats = merge_stats(parts)
        sorted_keys = stats.index.to_numpy(np.uint64)
        labels = root.create_array(
            "fibres/0", shape=(h, w), chunks=(t, t), dtype=np.uint32, fill_value=0
        )
        for y0, x0, ch, cw in windows:
            labels[y0 : y0 + ch, x0 : x0 + cw] = keys_to_ids(
                np.asarray(keys[y0 : y0 + ch, x0 : x0 + cw]), sorted_keys
            )
        for name, kind in (("image", "image"), ("fibres", "labels"), ("regions", "labels")):
            build_levels(root, name, shapes, cfg.chunk_px, kind)
        log.info("writing %d pyramid levels to %s", len(shapes), paths["image"])
        write_tiff(paths["image"], root, "image", cfg, len(shapes), list(channel_names(cfg.stains)))
        write_tiff(paths["fibres"], root, "fibres", cfg, len(shapes), ["fibres"])
        write_tiff(paths["regions"], root, "regions", cfg, len(shapes), ["regions"])
        table = build_table(stats, cfg, app)
        table.to_csv(paths["csv"], index=False)
        table.to_parquet(paths["parquet"], index=False)
    except OSError as exc:
        raise SlideWriteError(f"cannot write {paths['image']}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote %s (%d x %d px, %d fibres)", paths["image"], h, w, len(stats))
    return paths
