"""NGFF 0.5 (zarr v3) images and labels: create arrays and metadata, read them back.

A thin in-house writer (the JSON is small and exact): ``c, y, x`` axes in
micrometres, one ``scale`` (+ half-pixel ``translation``) per level, ``omero``
channel metadata, zstd chunks with optional sharding, and the tool's own
attributes under ``nclsm`` in the root group. Level paths are ``"0", "1", ...``
when written here; readers always take them from ``multiscales[0].datasets``.

Sharding: level 0 uses shards of ``shard_px``; each coarser level halves the
shard edge (never below the chunk edge, where sharding stops). A region of a
level's shards therefore maps onto whole shards of the next level, which lets one
task write a region and the pyramid below it without sharing a shard with any
other task (zarr-python#3514).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import zarr
import zarr.codecs

from nclsm_scale.errors import SlideReadError, SlideWriteError
from nclsm_scale.io.pyramid import downsample_labels, downsample_mean, level_shapes

__all__ = [
    "NGFF_VERSION",
    "array_at",
    "annotate_labels",
    "attrs_of",
    "create_image",
    "create_labels",
    "default_colors",
    "downsample_labels",
    "downsample_mean",
    "level_pixel_sizes",
    "level_transforms",
    "read_multiscales",
    "regions",
    "resolve_shard_px",
    "write_unit_px",
]

logger = logging.getLogger(__name__)

NGFF_VERSION = "0.5"
#: Display colours (hex RGB) by role; other channels cycle through ``_OTHER_COLORS``.
ROLE_COLORS = {"membrane": "FF0000", "mito": "00FF00"}
_OTHER_COLORS = ("0000FF", "FF00FF", "00FFFF", "FFFF00", "FFFFFF")


def resolve_shard_px(shape_yx: Sequence[int], chunk_px: int, shard_px: int | None) -> int:
    """Level-0 shard edge: ``shard_px`` as given (0 = none), or 4 chunks for slides >= 8 chunks wide."""
    if shard_px is None:
        return 4 * chunk_px if max(shape_yx) >= 8 * chunk_px else 0
    if shard_px and shard_px % chunk_px:
        raise SlideWriteError(f"shard edge {shard_px} px is not a multiple of the chunk edge {chunk_px} px")
    return int(shard_px)


def level_transforms(level: int, pixel_size_um: tuple[float, float] | None) -> list[dict[str, Any]]:
    """``scale`` and half-pixel ``translation`` of a level made by ``level`` 2 x 2 mean steps."""
    py, px = pixel_size_um if pixel_size_um is not None else (1.0, 1.0)
    f = 2**level
    return [
        {"type": "scale", "scale": [1.0, py * f, px * f]},
        {"type": "translation", "translation": [0.0, py * (f - 1) / 2, px * (f - 1) / 2]},
    ]


def _axes(pixel_size_known: bool) -> list[dict[str, str]]:
    space = {"type": "space", "unit": "micrometer"} if pixel_size_known else {"type": "space"}
    return [{"name": "c", "type": "channel"}, {"name": "y", **space}, {"name": "x", **space}]


def _multiscales(name: str, n_levels: int, pixel_size_um: tuple[float, float] | None, kind: str) -> dict:
    return {
        "name": name,
        "axes": _axes(pixel_size_um is not None),
        "datasets": [
            {"path": str(i), "coordinateTransformations": level_transforms(i, pixel_size_um)}
            for i in range(n_levels)
        ],
        "type": kind,
        "metadata": {"description": f"2x2 {kind} per level", "method": "nclsm_scale.io.pyramid"},
    }


def default_colors(channel_names: Sequence[str], roles: Mapping[str, int]) -> list[str]:
    """Hex colours per channel: membrane red, mito green, others blue, magenta, cyan, ..."""
    by_index = {i: ROLE_COLORS[r] for r, i in roles.items() if r in ROLE_COLORS}
    others = iter(_OTHER_COLORS * (len(channel_names) // len(_OTHER_COLORS) + 1))
    return [by_index.get(i) or next(others) for i in range(len(channel_names))]


def _omero(channel_names: Sequence[str], roles: Mapping[str, int], dtype: np.dtype) -> dict:
    if np.issubdtype(dtype, np.integer):
        lo, hi = float(np.iinfo(dtype).min), float(np.iinfo(dtype).max)
    else:
        lo, hi = 0.0, 1.0
    colors = default_colors(channel_names, roles)
    channels = [
        {
            "label": name, "color": color, "active": True, "coefficient": 1.0,
            "family": "linear", "inverted": False,
            "window": {"min": lo, "max": hi, "start": lo, "end": hi},
        }
        for name, color in zip(channel_names, colors, strict=True)
    ]
    return {"channels": channels, "rdefs": {"model": "color"}}


def _codecs(compression_level: int) -> list[zarr.codecs.ZstdCodec]:
    return [zarr.codecs.ZstdCodec(level=compression_level)]


def create_image(
    path: str | Path,
    shape_cyx: tuple[int, int, int],
    dtype: Any,
    *,
    pixel_size_um: float | tuple[float, float] | None,
    channel_names: Sequence[str],
    chunk_px: int = 1024,
    shard_px: int | None = None,
    min_level_px: int = 1024,
    roles: Mapping[str, int] | None = None,
    extra_attrs: Mapping[str, Any] | None = None,
    compression_level: int = 3,
    name: str | None = None,
    shard_channels: int | None = None,
) -> list[zarr.Array]:
    """Create an empty NGFF 0.5 image (every pyramid level) with its metadata; overwrite ``path``.

    Parameters
    ----------
    path : path of the ``.ome.zarr`` group to create.
    shape_cyx : level-0 shape ``(c, y, x)``.
    dtype : pixel dtype of every level.
    pixel_size_um : level-0 pixel size (one value or ``(y, x)``); ``None`` if unknown
        (scales become plain downsampling factors, axes carry no unit).
    channel_names : one name per channel.
    chunk_px, shard_px : chunk edge; level-0 shard edge (``None`` = automatic, 0 = no sharding).
    min_level_px : the pyramid stops once both sides are at most this.
    roles : ``{"membrane": 0, "mito": 1}``.
    extra_attrs : merged into the root ``nclsm`` attributes.
    compression_level : zstd level.
    name : multiscale name (default: the folder name).
    shard_channels : channels per shard (default: all); one task writes whole shards, so this
        bounds the channels a task holds.

    Returns
    -------
    list of zarr.Array
        The level arrays, finest first, each ``(c, y, x)`` and filled with zeros.
    """
    c, y, x = (int(v) for v in shape_cyx)
    if len(channel_names) != c:
        raise SlideWriteError(f"{path}: {len(channel_names)} channel names for {c} channels")
    dtype = np.dtype(dtype)
    if isinstance(pixel_size_um, (int, float)):
        pixel_size_um = (float(pixel_size_um), float(pixel_size_um))
    roles = dict(roles or {})
    shard0 = resolve_shard_px((y, x), chunk_px, shard_px)
    shapes = level_shapes((y, x), min_level_px)
    name = name or Path(path).name.removesuffix(".zarr").removesuffix(".ome")
    attrs = {
        "ome": {
            "version": NGFF_VERSION,
            "multiscales": [_multiscales(name, len(shapes), pixel_size_um, "mean")],
            "omero": _omero(channel_names, roles, dtype),
        },
        "nclsm": {
            "channel_names": list(channel_names),
            "roles": roles,
            "pixel_size_known": pixel_size_um is not None,
            "complete": False,
            **dict(extra_attrs or {}),
        },
    }
    try:
        group = zarr.create_group(store=str(path), zarr_format=3, overwrite=True, attributes=attrs)
        arrays = []
        for level, (ly, lx) in enumerate(shapes):
            shard = shard0 >> level
            arrays.append(
                group.create_array(
                    str(level), shape=(c, ly, lx), dtype=dtype, chunks=(1, chunk_px, chunk_px),
                    shards=(min(c, shard_channels or c), shard, shard) if shard > chunk_px else None,
                    compressors=_codecs(compression_level), fill_value=0,
                    dimension_names=("c", "y", "x"),
                )
            )
    except OSError as exc:
        raise SlideWriteError(f"{path}: cannot create the OME-Zarr image: {exc}") from None
    return arrays


def attrs_of(node: zarr.Group | zarr.Array) -> dict[str, Any]:
    """A zarr node's attributes as plain Python values (zarr types them as JSON unions)."""
    return cast("dict[str, Any]", node.attrs.asdict())


def array_at(group: zarr.Group, path: str) -> zarr.Array:
    """The array at ``path`` in ``group``; a clear error when it is missing or a group."""
    try:
        node = group[path]
    except KeyError:
        raise SlideReadError(f"{group.store_path}: no array {path!r}") from None
    if not isinstance(node, zarr.Array):
        raise SlideReadError(f"{group.store_path}: {path!r} is a group, not an array")
    return node


def read_multiscales(group: zarr.Group) -> tuple[dict[str, Any], str]:
    """The first ``multiscales`` entry of an image group (0.4 or 0.5) and its NGFF version."""
    attrs = attrs_of(group)
    ome = attrs.get("ome")
    if isinstance(ome, dict) and "multiscales" in ome:
        return ome["multiscales"][0], str(ome.get("version", NGFF_VERSION))
    if "multiscales" in attrs:
        ms = attrs["multiscales"][0]
        return ms, str(ms.get("version", "0.4"))
    raise SlideReadError(f"{group.store_path}: no OME-Zarr 'multiscales' metadata in the group")


#: Micrometres per unit of the NGFF space units a pixel size may be given in.
UNIT_TO_UM = {"micrometer": 1.0, "nanometer": 1e-3, "millimeter": 1e3, "meter": 1e6, "angstrom": 1e-4}


def level_pixel_sizes(ms: dict[str, Any], known: bool) -> list[tuple[float, float] | None]:
    """Pixel size ``(y, x)`` in um of every level of a ``multiscales`` entry; None where unknown.

    ``known`` False (the store says its scale is in pixels) or a missing or unknown
    space unit gives None for every level.
    """
    units = [a.get("unit") for a in ms["axes"][-2:]]
    factors = [UNIT_TO_UM.get(u) if u else None for u in units]
    out: list[tuple[float, float] | None] = []
    for d in ms["datasets"]:
        scale = next(t["scale"] for t in d["coordinateTransformations"] if t["type"] == "scale")
        if not known or factors[0] is None or factors[1] is None:
            out.append(None)
        else:
            out.append((scale[-2] * factors[0], scale[-1] * factors[1]))
    return out


def write_unit_px(arr: zarr.Array) -> tuple[int, int]:
    """Edge (y, x) of the blocks one task must own when writing ``arr``: its shard, else its chunk."""
    block = arr.shards or arr.chunks
    return int(block[-2]), int(block[-1])


def regions(shape_yx: Sequence[int], step_yx: Sequence[int]) -> list[tuple[int, int, int, int]]:
    """Row-major ``(y0, x0, y1, x1)`` regions of ``step_yx`` tiling ``shape_yx`` (clipped at the edge)."""
    (ny, nx), (sy, sx) = shape_yx, step_yx
    return [
        (y0, x0, min(y0 + sy, ny), min(x0 + sx, nx))
        for y0 in range(0, ny, sy)
        for x0 in range(0, nx, sx)
    ]


def _image_label(
    where: str, colors: Mapping[int, Sequence[int]] | None, properties: Sequence[Mapping[str, Any]] | None
) -> dict[str, Any]:
    """The ``image-label`` metadata of ``colors`` (default: background transparent) and optional ``properties``."""
    color_map = dict(colors) if colors is not None else {0: (0, 0, 0, 0)}
    label_attrs: dict[str, Any] = {
        "version": NGFF_VERSION,
        "colors": [{"label-value": int(v), "rgba": [int(c) for c in rgba]} for v, rgba in color_map.items()],
        "source": {"image": "../../"},
    }
    if properties:
        values = sorted(int(p["label-value"]) for p in properties)
        if values != sorted(int(v) for v in color_map):
            raise SlideWriteError(
                f"{where}: properties list {len(values)} label values but colors {len(color_map)} others; NGFF "
                "validators require the same values in both"
            )
        label_attrs["properties"] = [dict(p) for p in properties]
    return label_attrs


def create_labels(
    image_path: str | Path,
    name: str,
    *,
    dtype: Any = np.uint32,
    colors: Mapping[int, Sequence[int]] | None = None,
    properties: Sequence[Mapping[str, Any]] | None = None,
) -> list[zarr.Array]:
    """Create empty label arrays ``labels/<name>`` for every image level, with NGFF metadata.

    Each label level has shape ``(1, y, x)`` of the matching image level, chunks and
    shards aligned to the image's, the same scale transforms, and fill value 0
    (empty chunks are not stored). The ``labels`` group gets ``ome.version`` (gotcha
    §2.5.1) and lists ``name``; ``image-label`` carries ``colors`` (``{value: rgba}``;
    default: background transparent), optional ``properties`` (same label values as
    ``colors``) and ``source``.
    Existing labels of the same name are replaced.
    """
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.integer):
        raise SlideWriteError(f"{image_path}: label dtype must be an integer type, got {dtype}")
    try:
        root = zarr.open_group(str(image_path), mode="r+")
    except (FileNotFoundError, ValueError) as exc:
        raise SlideWriteError(f"{image_path}: not an OME-Zarr image to add labels to: {exc}") from None
    ms, _ = read_multiscales(root)
    image_arrays = [array_at(root, d["path"]) for d in ms["datasets"]]
    labels = root.require_group("labels")
    listed = list(attrs_of(labels).get("ome", {}).get("labels", []))
    labels.attrs.update({"ome": {"version": NGFF_VERSION, "labels": sorted({*listed, name})}})
    label_attrs = _image_label(f"{image_path}: labels {name!r}", colors, properties)
    label_ms = {
        "name": name,
        "axes": ms["axes"],
        "datasets": [{"path": d["path"], "coordinateTransformations": d["coordinateTransformations"]}
                     for d in ms["datasets"]],
        "type": "mode",
        "metadata": {"description": "2x2 majority vote per level", "method": "nclsm_scale.io.pyramid"},
    }
    group = labels.create_group(
        name, overwrite=True,
        attributes={"ome": {"version": NGFF_VERSION, "multiscales": [label_ms], "image-label": label_attrs}},
    )
    out = []
    for d, img in zip(ms["datasets"], image_arrays, strict=True):
        chunk = (1, *img.chunks[-2:])
        shards = (1, *img.shards[-2:]) if img.shards else None
        out.append(
            group.create_array(
                d["path"], shape=(1, *img.shape[-2:]), dtype=dtype, chunks=chunk, shards=shards,
                compressors=_codecs(3), fill_value=0, dimension_names=tuple(a["name"] for a in ms["axes"]),
            )
        )
    return out


def annotate_labels(
    image_path: str | Path,
    name: str,
    colors: Mapping[int, Sequence[int]] | None,
    properties: Sequence[Mapping[str, Any]] | None,
) -> None:
    """Replace the ``image-label`` ``colors`` and ``properties`` of the existing ``labels/<name>``.

    Only the label group's ``zarr.json`` changes: its multiscales, other attributes
    and arrays stay as they are. ``None`` for both restores the default (background
    transparent, no properties). The file is written here, compact and atomically
    (temporary file, then rename), not through zarr: zarr indents its JSON, which
    doubles the size of a per-fibre list and takes about 5x as long to write
    (200,000 fibres: about 100 MB and 9 s).
    """
    where = f"{image_path}: labels {name!r}"
    meta_file = Path(image_path) / "labels" / name / "zarr.json"
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SlideWriteError(f"{where}: no label image to annotate: {exc}") from None
    ome = meta.get("attributes", {}).get("ome", {})
    if meta.get("node_type") != "group" or "image-label" not in ome:
        raise SlideWriteError(f"{where}: no image-label metadata to annotate")
    ome["image-label"] = _image_label(where, colors, properties)
    tmp = meta_file.with_name(f".{meta_file.name}.tmp")
    try:
        tmp.write_text(json.dumps(meta, separators=(",", ":"), ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, meta_file)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SlideWriteError(f"{meta_file}: cannot write the label metadata: {exc}") from None
