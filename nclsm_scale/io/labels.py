"""Fill a label pyramid region by region from one written level.

The stitching stage writes ``labels/<name>`` at its segmentation level;
:func:`fill_label_pyramid` derives every other level so that the label levels
match the image's (same count, shapes, chunks): finer levels by nearest-neighbour
upsampling of the source level, coarser levels by a 2 x 2 majority vote of the
level above. Each task owns whole shards (or chunks) of the level it writes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import zarr

from nclsm_scale.io.ome_zarr import read_multiscales, regions, write_unit_px
from nclsm_scale.io.pyramid import downsample_labels, upsample_labels
from nclsm_scale.io.shards import write_block

__all__ = ["fill_label_pyramid", "fill_label_region"]

logger = logging.getLogger(__name__)


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
        block = src[:, y0 // f : -(-y1 // f), x0 // f : -(-x1 // f)]
        out = upsample_labels(block, f, (y1 - y0 + (y0 % f), x1 - x0 + (x0 % f)))
        out = out[:, y0 % f :, x0 % f :]
    else:
        f = 2**shift
        out = downsample_labels(src[:, y0 * f : y1 * f, x0 * f : x1 * f], f)
    write_block(dst, out[:, : y1 - y0, : x1 - x0], (0, y0, x0))
    return region


def _run(client: Any, calls: list[tuple]) -> None:
    if not calls:
        return
    if client is None:
        for args in calls:
            fill_label_region(*args)
        return
    futures = client.map(fill_label_region, *zip(*calls, strict=True), pure=False)
    client.gather(futures)


def fill_label_pyramid(
    image_path: str | Path, name: str, source_level: int, client: Any = None
) -> None:
    """Fill every level of ``labels/<name>`` except ``source_level`` from that level.

    Parameters
    ----------
    image_path : the ``.ome.zarr`` image holding ``labels/<name>`` (made by ``create_labels``).
    name : label name.
    source_level : index of the fully written level.
    client : distributed.Client, optional
        Run the region tasks on it; ``None`` runs them in this process.
    """
    group_path = f"{str(image_path).rstrip('/')}/labels/{name}"
    ms, _ = read_multiscales(zarr.open_group(group_path, mode="r"))
    paths = [d["path"] for d in ms["datasets"]]
    src = paths[source_level]

    def plan(level: int, shift: int, from_path: str) -> list[tuple]:
        arr = zarr.open_array(group_path, path=paths[level], mode="r")
        return [
            (group_path, from_path, paths[level], shift, r)
            for r in regions(arr.shape[-2:], write_unit_px(arr))
        ]

    finer = [c for lv in range(source_level) for c in plan(lv, lv - source_level, src)]
    _run(client, finer)
    for lv in range(source_level + 1, len(paths)):  # each coarser level needs the one above
        _run(client, plan(lv, 1, paths[lv - 1]))
    logger.info("%s: label pyramid filled from level %d (%d levels)", group_path, source_level, len(paths))
