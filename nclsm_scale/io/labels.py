"""Fill a label pyramid region by region from one written level.

The stitching stage writes ``labels/<name>`` at its segmentation level;
:func:`fill_label_pyramid` derives every other level so that the label levels
match the image's (same count, shapes, chunks): finer levels by nearest-neighbour
upsampling of the source level, coarser levels by a 2 x 2 majority vote of the
level above. Each task owns whole shards (or chunks) of the level it writes. The
tasks run through the ``run`` callable the caller gives (a stage passes
:func:`nclsm_scale.cluster.fan_out` bound to its client), or in this process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from nclsm_scale.io.ome_zarr import read_multiscales, regions, write_unit_px
from nclsm_scale.io.pyramid import downsample_labels, upsample_labels
from nclsm_scale.io.shards import write_block

__all__ = ["MapFn", "fill_label_pyramid", "fill_label_region"]

logger = logging.getLogger(__name__)

#: Runs ``fn(*args)`` for every argument tuple (as parallel tasks) and returns the results in order.
MapFn = Callable[[Callable[..., Any], list[tuple[Any, ...]]], list[Any]]


def fill_label_region(
    group_path: str, src_path: str, dst_path: str, shift: int, region: tuple[int, int, int, int]
) -> tuple[int, int, int, int]:
    """Write ``region`` of label level ``dst_path`` from level ``src_path``.

    ``shift`` = destination level - source level: negative upsamples by
    ``2**-shift`` (nearest), positive downsamples by ``2**shift`` (majority vote).
    Returns the region written.
    """
    src = zarr.open_array(group_path, path=src_path, mode="r")
    dst = zarr.open_array(group_path, path=dst_path, mode="r+")
    y0, x0, y1, x1 = region
    if shift < 0:
        f = 2**-shift
        block = np.asarray(src[:, y0 // f : -(-y1 // f), x0 // f : -(-x1 // f)])
        out = upsample_labels(block, f, (y1 - y0 + (y0 % f), x1 - x0 + (x0 % f)))
        out = out[:, y0 % f :, x0 % f :]
    else:
        f = 2**shift
        out = downsample_labels(np.asarray(src[:, y0 * f : y1 * f, x0 * f : x1 * f]), f)
    write_block(dst, out[:, : y1 - y0, : x1 - x0], (0, y0, x0))
    return region


def _in_process(fn: Callable[..., Any], calls: list[tuple[Any, ...]]) -> list[Any]:
    return [fn(*args) for args in calls]


def fill_label_pyramid(image_path: str | Path, name: str, source_level: int, run: MapFn | None = None) -> None:
    """Fill every level of ``labels/<name>`` except ``source_level`` from that level.

    Parameters
    ----------
    image_path : the ``.ome.zarr`` image holding ``labels/<name>`` (made by ``create_labels``).
    name : label name.
    source_level : index of the fully written level.
    run : callable, optional
        Runs the region tasks of one level (``run(fill_label_region, calls)``); ``None`` runs them here.
    """
    run = run or _in_process
    group_path = f"{str(image_path).rstrip('/')}/labels/{name}"
    ms, _ = read_multiscales(zarr.open_group(group_path, mode="r"))
    paths = [d["path"] for d in ms["datasets"]]
    src = paths[source_level]

    def plan(level: int, shift: int, from_path: str) -> list[tuple[Any, ...]]:
        arr = zarr.open_array(group_path, path=paths[level], mode="r")
        return [
            (group_path, from_path, paths[level], shift, r)
            for r in regions(arr.shape[-2:], write_unit_px(arr))
        ]

    finer = [c for lv in range(source_level) for c in plan(lv, lv - source_level, src)]
    run(fill_label_region, finer)
    for lv in range(source_level + 1, len(paths)):  # each coarser level needs the one above
        run(fill_label_region, plan(lv, 1, paths[lv - 1]))
    logger.info("%s: label pyramid filled from level %d (%d levels)", group_path, source_level, len(paths))
