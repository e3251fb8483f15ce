"""The handle every stage uses to read a converted slide (an NGFF ``c, y, x`` image).

>>> slide = open_slide("run/slides/S1.ome.zarr")          # doctest: +SKIP
>>> level = slide.level_nearest(1.0)                        # doctest: +SKIP
>>> block = slide.read(level, 0, 0, 1024, 1024)            # (c, 1024, 1024), zero-padded
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr

from nclsm_scale.errors import SlideReadError
from nclsm_scale.io.ome_zarr import read_multiscales

__all__ = ["Level", "Slide", "open_slide"]

_UNIT_TO_UM = {"micrometer": 1.0, "nanometer": 1e-3, "millimeter": 1e3, "meter": 1e6, "angstrom": 1e-4}


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

    def _level(self, level: int) -> Level:
        if not 0 <= level < len(self.levels):
            raise IndexError(f"{self.path}: level {level} not in 0..{len(self.levels) - 1}")
        return self.levels[level]

    def array(self, level: int) -> zarr.Array:
        """The zarr array of ``level``, ``(c, y, x)``, opened read-only."""
        return zarr.open_array(self.path, path=self._level(level).path, mode="r")

    def label_array(self, name: str, level: int, mode: str = "r") -> zarr.Array:
        """The label array ``labels/<name>`` at ``level``, ``(1, y, x)``."""
        return zarr.open_array(self.path, path=f"labels/{name}/{self._level(level).path}", mode=mode)

    def read(self, level: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """Pixels ``[y0:y1, x0:x1]`` of ``level`` as ``(c, h, w)``; zero outside the slide."""
        lv = self._level(level)
        c, ny, nx = lv.shape
        out = np.zeros((c, max(0, y1 - y0), max(0, x1 - x0)), dtype=self.array(level).dtype)
        cy0, cx0, cy1, cx1 = max(y0, 0), max(x0, 0), min(y1, ny), min(x1, nx)
        if cy1 > cy0 and cx1 > cx0:
            out[:, cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = self.array(level)[:, cy0:cy1, cx0:cx1]
        return out

    def level_nearest(self, pixel_size_um: float) -> int:
        """Index of the level whose pixel size is nearest ``pixel_size_um`` (in log scale)."""
        if not self.pixel_size_known:
            raise SlideReadError(
                f"{self.path}: the pixel size of this slide is unknown, so no level can be chosen by "
                "size; convert it again with --pixel-size UM or choose the level explicitly."
            )
        sizes = [math.sqrt(lv.pixel_size_um[0] * lv.pixel_size_um[1]) for lv in self.levels]
        return int(np.argmin([abs(math.log(s / pixel_size_um)) for s in sizes]))


def _pixel_sizes(ms: dict, known: bool) -> list[tuple[float, float] | None]:
    units = [a.get("unit") for a in ms["axes"][-2:]]
    factors = [_UNIT_TO_UM.get(u) if u else None for u in units]
    out: list[tuple[float, float] | None] = []
    for d in ms["datasets"]:
        scale = next(t["scale"] for t in d["coordinateTransformations"] if t["type"] == "scale")
        if not known or None in factors:
            out.append(None)
        else:
            out.append((scale[-2] * factors[0], scale[-1] * factors[1]))
    return out


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
    attrs = dict(group.attrs)
    nclsm = attrs.get("nclsm", {})
    units_known = all(a.get("unit") for a in ms["axes"][-2:])
    known = bool(nclsm.get("pixel_size_known", units_known))
    levels = []
    for d, size in zip(ms["datasets"], _pixel_sizes(ms, known), strict=True):
        try:
            arr = zarr.open_array(path, path=d["path"], mode="r")
        except (FileNotFoundError, ValueError, KeyError) as exc:
            raise SlideReadError(f"{path}: level array {d['path']!r} cannot be opened: {exc}") from None
        levels.append(Level(d["path"], tuple(arr.shape), size, tuple(arr.chunks)))
    omero = attrs.get("ome", attrs).get("omero", {})
    names = nclsm.get("channel_names") or [
        ch.get("label", f"channel{i}") for i, ch in enumerate(omero.get("channels", []))
    ] or [f"channel{i}" for i in range(levels[0].shape[0])]
    labels: list[str] = []
    if "labels" in group:
        lattrs = dict(group["labels"].attrs)
        labels = list(lattrs.get("ome", lattrs).get("labels", []))
    default_id = Path(path.rstrip("/")).name.removesuffix(".zarr").removesuffix(".ome")
    return Slide(
        path=path,
        slide_id=str(nclsm.get("slide_id", default_id)),
        channel_names=tuple(names),
        roles={k: int(v) for k, v in nclsm.get("roles", {}).items()},
        levels=tuple(levels),
        pixel_size_known=known,
        complete=bool(nclsm.get("complete", True)),
        labels=tuple(labels),
    )
