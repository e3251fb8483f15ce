"""Check an OME-Zarr store: NGFF validity, pyramid consistency, labels, completeness, integrity.

:func:`check_store` returns a list of problems (empty when the store is fine), so
callers decide how to report them; the ``validate`` command prints them. A store
that belongs to a run (``RUN/slides/<slide>.ome.zarr`` beside ``RUN/state.sqlite``)
is also checked against the manifests of what each stage wrote: every file present
with its size, and with ``deep`` its sha256; ``deep`` also decodes every chunk of
every array (a missing chunk reads as the fill value, so only a manifest shows it).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import zarr

from nclsm_scale.errors import NclsmError
from nclsm_scale.io.ome_zarr import array_at, attrs_of, read_multiscales
from nclsm_scale.layout import RunLayout
from nclsm_scale.manifest import check_manifest
from nclsm_scale.state import StateStore

__all__ = ["check_store"]

logger = logging.getLogger(__name__)


def _scales(ms: dict) -> list[list[float]]:
    return [next(t["scale"] for t in d["coordinateTransformations"] if t["type"] == "scale")
            for d in ms["datasets"]]


def _check_ngff(group: zarr.Group) -> list[str]:
    import ome_zarr_models
    from ome_zarr_models.v04.image import Image as Image04
    from ome_zarr_models.v05.image import Image as Image05

    try:
        model = ome_zarr_models.open_ome_zarr(group)
    except Exception as exc:  # the models raise pydantic, Value, Runtime and Key errors
        return [f"not valid OME-Zarr (ome-zarr-models): {' '.join(str(exc).split())[:2000]}"]
    if not isinstance(model, (Image04, Image05)):
        return [f"valid OME-Zarr but not an image: {type(model).__module__}.{type(model).__name__}"]
    return []


def _check_pyramid(group: zarr.Group, ms: dict) -> tuple[list[str], list[tuple[int, ...]]]:
    problems, shapes = [], []
    arrays = [array_at(group, d["path"]) for d in ms["datasets"]]
    shapes = [tuple(a.shape) for a in arrays]
    scales = _scales(ms)
    for i in range(1, len(arrays)):
        prev, cur = shapes[i - 1], shapes[i]
        want = (*prev[:-2], math.ceil(prev[-2] / 2), math.ceil(prev[-1] / 2))
        if cur != want:
            problems.append(f"level {i} has shape {cur}, expected {want} (half of level {i - 1})")
        if arrays[i].dtype != arrays[0].dtype:
            problems.append(f"level {i} dtype {arrays[i].dtype} differs from level 0 ({arrays[0].dtype})")
        for ax in (-2, -1):
            if not np.isclose(scales[i][ax], 2 * scales[i - 1][ax], rtol=1e-6):
                problems.append(f"level {i} scale {scales[i]} is not twice level {i - 1} ({scales[i - 1]})")
                break
    return problems, shapes


def _check_labels(group: zarr.Group, image_shapes: list[tuple[int, ...]], image_scales: list) -> list[str]:
    if "labels" not in group:
        return []
    problems = []
    labels = zarr.open_group(group.store_path, path="labels", mode="r")
    lattrs = attrs_of(labels)
    ome = lattrs.get("ome", lattrs)
    for name in ome.get("labels", []):
        where = f"labels/{name}"
        if name not in labels:
            problems.append(f"{where}: listed but missing")
            continue
        lgroup = zarr.open_group(labels.store_path, path=name, mode="r")
        try:
            ms, _ = read_multiscales(lgroup)
        except NclsmError as exc:
            problems.append(f"{where}: {exc}")
            continue
        attrs = attrs_of(lgroup)
        if "image-label" not in attrs.get("ome", attrs):
            problems.append(f"{where}: no image-label metadata")
        paths = [d["path"] for d in ms["datasets"]]
        if len(paths) != len(image_shapes):
            problems.append(f"{where}: {len(paths)} levels, the image has {len(image_shapes)}")
        for i, (path, shape) in enumerate(zip(paths, image_shapes, strict=False)):
            arr = array_at(lgroup, path)
            if not np.issubdtype(arr.dtype, np.integer):
                problems.append(f"{where} level {i}: dtype {arr.dtype} is not an integer type")
            if len(arr.shape) != len(shape) or any(a not in (s, 1) for a, s in zip(arr.shape, shape, strict=False)) \
                    or arr.shape[-2:] != shape[-2:]:
                problems.append(f"{where} level {i}: shape {arr.shape} does not match the image's {shape}")
        for i, (s, t) in enumerate(zip(_scales(ms), image_scales, strict=False)):
            if not np.allclose(s[-2:], t[-2:]):
                problems.append(f"{where} level {i}: scale {s} differs from the image's {t}")
    return problems


def _check_run_outputs(path: Path, deep: bool) -> list[str]:
    """The slide's stage outputs against the manifests of its run, if it belongs to one."""
    layout = RunLayout.for_slide(path)
    db = layout.root / "state.sqlite"
    suffix = ".ome.zarr"
    if not db.is_file() or not path.name.endswith(suffix) or path.resolve() != layout.slide(
            path.name[: -len(suffix)]).resolve():
        return []
    try:
        manifests = StateStore(db).manifests(path.name[: -len(suffix)])
    except Exception as exc:  # sqlite3 raises its own types; the store itself may still be fine
        return [f"cannot read the run's state {db}: {exc}"]
    return [f"{stage}: {d}" for stage, m in sorted(manifests.items())
            for d in check_manifest(layout.root, m, deep=deep)]


def _decode_all(group: zarr.Group, ms: dict) -> list[str]:
    """Read every chunk (by shard where sharded) of the image and label levels; name those that fail."""
    arrays = [(d["path"], array_at(group, d["path"])) for d in ms["datasets"]]
    if "labels" in group:
        labels = zarr.open_group(group.store_path, path="labels", mode="r")
        for name in attrs_of(labels).get("ome", {}).get("labels", []):
            if name in labels:
                lgroup = zarr.open_group(labels.store_path, path=name, mode="r")
                lms, _ = read_multiscales(lgroup)
                arrays += [(f"labels/{name}/{d['path']}", array_at(lgroup, d["path"])) for d in lms["datasets"]]
    problems = []
    for where, arr in arrays:
        step = arr.shards or arr.chunks
        grid = [range(0, n, s) for n, s in zip(arr.shape, step, strict=True)]
        for start in np.stack(np.meshgrid(*grid, indexing="ij"), -1).reshape(-1, arr.ndim):
            region = tuple(slice(int(a), int(a) + s) for a, s in zip(start, step, strict=True))
            try:
                arr[region]
            except Exception as exc:  # codecs raise their own types
                problems.append(f"{where} at {tuple(int(a) for a in start)}: cannot decode: {type(exc).__name__}: "
                                f"{' '.join(str(exc).split())[:200]}")
    return problems


def check_store(path: str | Path, *, deep: bool = False) -> list[str]:
    """Problems found in the OME-Zarr image at ``path``; empty if it is valid and complete.

    Checks: ome-zarr-models validation (0.4 or 0.5 image), pyramid consistency (shapes
    halve, scales double, one dtype), labels (same level count and shapes, integer
    dtype, ``image-label`` metadata), the ``nclsm`` completion flag when present, and
    for a store in a run its stages' outputs against their manifests. ``deep``: every
    chunk decoded and every file's checksum compared.
    """
    try:
        group = zarr.open_group(str(path), mode="r")
        ms, _ = read_multiscales(group)
    except (FileNotFoundError, ValueError, OSError, NclsmError) as exc:
        return [f"cannot open as an OME-Zarr image: {exc}"]
    problems = _check_ngff(group)
    try:
        pyramid, shapes = _check_pyramid(group, ms)
        problems += pyramid + _check_labels(group, shapes, _scales(ms))
    except (KeyError, ValueError, FileNotFoundError) as exc:
        problems.append(f"cannot read the pyramid arrays: {type(exc).__name__}: {exc}")
    nclsm = dict(group.attrs).get("nclsm")
    if isinstance(nclsm, dict) and not nclsm.get("complete", False):
        problems.append("conversion incomplete (nclsm.complete is false); rerun `nclsm-scale convert`")
    if deep:
        problems += _decode_all(group, ms)
    return problems + _check_run_outputs(Path(path), deep)
