"""The handle every stage uses to read a converted slide (an NGFF ``c, y, x`` image), and its facts.

A :class:`Slide` is the one home of what is known about a slide: its name, channel
roles, pyramid levels and the pixel size of each (one formula: the geometric mean
of the y and x sizes), the level it is segmented at, and reads of image windows and
label windows (zero outside the slide).

>>> slide = open_slide("run/slides/S1.ome.zarr")          # doctest: +SKIP
>>> level = slide.level_nearest(1.0)                        # doctest: +SKIP
>>> block = slide.read(level, 0, 0, 1024, 1024)            # (c, 1024, 1024), zero-padded
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from nclsm_scale.config import SegmentConfig
from nclsm_scale.errors import ConfigError, SlideReadError
from nclsm_scale.grid import lowres_indices
from nclsm_scale.io.ome_zarr import attrs_of, level_pixel_sizes, read_multiscales
from nclsm_scale.layout import slide_name

__all__ = ["Level", "Slide", "open_slide", "read_padded"]


def read_padded(array: zarr.Array, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    """``array[..., y0:y1, x0:x1]`` of a ``(c, y, x)`` array, zero outside it."""
    c, ny, nx = array.shape
    out = np.zeros((c, max(0, y1 - y0), max(0, x1 - x0)), dtype=array.dtype)
    cy0, cx0, cy1, cx1 = max(y0, 0), max(x0, 0), min(y1, ny), min(x1, nx)
    if cy1 > cy0 and cx1 > cx0:
        out[:, cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = array[:, cy0:cy1, cx0:cx1]
    return out


@dataclass(frozen=True)
class Level:
    """One pyramid level: array path in the group, shape ``(c, y, x)``, pixel size and chunks."""

    path: str
    shape: tuple[int, int, int]
    pixel_size_um: tuple[float, float] | None
    chunks: tuple[int, int, int]


@dataclass(frozen=True)
class Slide:
    """A converted slide: channels with roles, pyramid levels, labels present.

    ``roles`` maps a role (``membrane``, ``mito``) to its channel index.
    ``complete`` is False while a conversion of the store is unfinished.
    """

    path: str
    slide_id: str
    channel_names: tuple[str, ...]
    roles: dict[str, int]
    levels: tuple[Level, ...]
    pixel_size_known: bool
    complete: bool = True
    labels: tuple[str, ...] = field(default=())
    norm: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        """The slide's name in a run: its store's name without ``.ome.zarr``."""
        return slide_name(self.path)

    def _level(self, level: int) -> Level:
        if not 0 <= level < len(self.levels):
            raise IndexError(f"{self.path}: level {level} not in 0..{len(self.levels) - 1}")
        return self.levels[level]

    def array(self, level: int) -> zarr.Array:
        """The zarr array of ``level``, ``(c, y, x)``, opened read-only."""
        return zarr.open_array(self.path, path=self._level(level).path, mode="r")

    def label_group(self, name: str) -> str:
        """Path of the label image ``labels/<name>``."""
        return f"{self.path.rstrip('/')}/labels/{name}"

    def label_array(self, name: str, level: int, mode: str = "r") -> zarr.Array:
        """The label array ``labels/<name>`` at ``level``, ``(1, y, x)``."""
        return zarr.open_array(self.path, path=f"labels/{name}/{self._level(level).path}", mode=mode)

    def label_attrs(self, name: str) -> dict[str, Any]:
        """The ``nclsm`` attributes of ``labels/<name>`` (``{}`` when it or they are missing)."""
        try:
            group = zarr.open_group(self.label_group(name), mode="r")
        except (FileNotFoundError, ValueError, KeyError):
            return {}
        return dict(attrs_of(group).get("nclsm", {}))

    def read(self, level: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """Pixels ``[y0:y1, x0:x1]`` of ``level`` as ``(c, h, w)``; zero outside the slide."""
        self._level(level)
        return read_padded(self.array(level), y0, x0, y1, x1)

    def read_labels(self, name: str, level: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """``labels/<name>`` at ``level``, pixels ``[y0:y1, x0:x1]`` as ``(h, w)``; zero outside the slide."""
        return read_padded(self.label_array(name, level), y0, x0, y1, x1)[0]

    def read_labels_lowres(
        self, name: str, level: int, scale: float, y0: int, x0: int, y1: int, x1: int
    ) -> np.ndarray:
        """Nearest-neighbour values of ``labels/<name>`` at a coarser ``level`` on a finer window.

        ``scale`` is the coarse level's pixel size over the fine one's. Fine pixel
        ``(y, x)`` takes the coarse pixel holding its centre, so values never depend
        on how the fine level is cut; pixels outside the slide take the nearest edge
        pixel. Only the rows and columns needed are read.
        """
        array = self.label_array(name, level)
        _, ny, nx = array.shape
        ly, lx = lowres_indices(y0, y1, scale, ny), lowres_indices(x0, x1, scale, nx)
        part = np.asarray(array[0, ly[0] : ly[-1] + 1, lx[0] : lx[-1] + 1])
        return part[(ly - ly[0])[:, None], (lx - lx[0])[None, :]]

    def pixel_size_um(self, level: int) -> float:
        """Isotropic pixel size (um) of ``level``: the geometric mean of its y and x sizes.

        Raises
        ------
        SlideReadError
            When the slide's pixel size is unknown.
        """
        size = self._level(level).pixel_size_um
        if size is None:
            raise SlideReadError(
                f"{self.path}: the pixel size of this slide is unknown, but sizes and halos are in um; "
                "convert it again with --pixel-size UM."
            )
        return float(math.sqrt(size[0] * size[1]))

    def segmentation_level(self, seg: SegmentConfig) -> int:
        """Level ``labels/fibres`` was segmented at (its marker), else the level ``seg`` picks.

        ``seg.level`` when set, otherwise the level nearest ``seg.target_pixel_size_um``.

        Raises
        ------
        ConfigError
            When the level is not one of the slide's.
        """
        level = self.label_attrs("fibres").get("segment", {}).get("level")
        if level is None:
            level = seg.level if seg.level is not None else self.level_nearest(seg.target_pixel_size_um)
        if not 0 <= level < len(self.levels):
            raise ConfigError(f"segmentation level {level}: {self.path} has levels 0..{len(self.levels) - 1}")
        return int(level)

    def region_level(self, seg: SegmentConfig) -> int:
        """Level the region masks (tissue, folds) are computed at: the one nearest ``seg.region_pixel_size_um``."""
        return self.level_nearest(seg.region_pixel_size_um)

    def level_nearest(self, pixel_size_um: float) -> int:
        """Index of the level whose pixel size is nearest ``pixel_size_um`` (in log scale)."""
        if not self.pixel_size_known:
            raise SlideReadError(
                f"{self.path}: the pixel size of this slide is unknown, so no level can be chosen by "
                "size; convert it again with --pixel-size UM or choose the level explicitly."
            )
        sizes = [self.pixel_size_um(i) for i in range(len(self.levels))]
        return int(np.argmin([abs(math.log(s / pixel_size_um)) for s in sizes]))


def open_slide(path: str | Path) -> Slide:
    """Open a converted slide (OME-Zarr with ``c, y, x`` axes).

    Raises
    ------
    SlideReadError
        Naming the path and the problem (missing, not OME-Zarr, wrong axes).
    """
    path = str(path)
    try:
        group = zarr.open_group(path, mode="r")
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise SlideReadError(f"{path}: cannot open as an OME-Zarr group: {exc}") from None
    ms, _ = read_multiscales(group)
    axes = tuple(a["name"] for a in ms["axes"])
    if axes != ("c", "y", "x"):
        raise SlideReadError(
            f"{path}: axes {axes} are not (c, y, x); convert it with `nclsm-scale convert` first."
        )
    attrs = attrs_of(group)
    nclsm = attrs.get("nclsm", {})
    units_known = all(a.get("unit") for a in ms["axes"][-2:])
    known = bool(nclsm.get("pixel_size_known", units_known))
    levels = []
    for d, size in zip(ms["datasets"], level_pixel_sizes(ms, known), strict=True):
        try:
            arr = zarr.open_array(path, path=d["path"], mode="r")
        except (FileNotFoundError, ValueError, KeyError) as exc:
            raise SlideReadError(f"{path}: level array {d['path']!r} cannot be opened: {exc}") from None
        c, ny, nx = (int(v) for v in arr.shape)
        cc, cy, cx = (int(v) for v in arr.chunks)
        levels.append(Level(d["path"], (c, ny, nx), size, (cc, cy, cx)))
    omero = attrs.get("ome", attrs).get("omero", {})
    names = nclsm.get("channel_names") or [
        ch.get("label", f"channel{i}") for i, ch in enumerate(omero.get("channels", []))
    ] or [f"channel{i}" for i in range(levels[0].shape[0])]
    labels: list[str] = []
    if "labels" in group:
        lattrs = attrs_of(zarr.open_group(path, path="labels", mode="r"))
        labels = list(lattrs.get("ome", lattrs).get("labels", []))
    return Slide(
        path=path,
        slide_id=str(nclsm.get("slide_id", slide_name(path))),
        channel_names=tuple(names),
        roles={k: int(v) for k, v in nclsm.get("roles", {}).items()},
        levels=tuple(levels),
        pixel_size_known=known,
        complete=bool(nclsm.get("complete", True)),
        labels=tuple(labels),
        norm=nclsm.get("norm"),
    )
