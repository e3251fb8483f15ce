"""What the viewer knows of a run: its slides, tiles, fibre tables, class edits and re-aggregation.

:class:`RunView` answers every request of the server (:mod:`nclsm_scale.view.server`)
without HTTP: tiles of the image, fibre-outline and fold layers of a slide
(:mod:`nclsm_scale.view.tiles`), the fibre under a level-0 point, the slide's row of
``tables/slides.parquet``, a class change, and re-aggregation.

A class change is written to the overrides ``curate`` remembers beside its table
(``RunLayout.overrides``: ``fibre_id,class,reasons,area_seg_px``, see
:mod:`nclsm_scale.curate.overrides`); the outlines and the fibre panel show it at
once. :meth:`RunView.reaggregate` runs ``curate`` again for the edited slides (which
applies the remembered overrides) and then ``aggregate``, so the slide table and
the fibre tables include the change.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import zarr

from nclsm_scale.aggregate import aggregate_run
from nclsm_scale.cluster import open_client
from nclsm_scale.config import RunConfig
from nclsm_scale.curate import curate_slide
from nclsm_scale.curate import overrides as ov
from nclsm_scale.errors import NclsmError, SlideReadError, ValidationError
from nclsm_scale.io.ome_zarr import default_colors
from nclsm_scale.layout import RunLayout, read_fibre_table
from nclsm_scale.normalise import NormStats, slide_norm
from nclsm_scale.slide import Slide, open_slide, read_padded
from nclsm_scale.tables import FOLD, FOLD_COLORS, FibreClass
from nclsm_scale.view.tiles import composite_tile, encode_jpeg, encode_png, fold_tile, outline_tile, tile_window

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["LAYERS", "NotFoundError", "RunView", "hidden_codes"]

logger = logging.getLogger(__name__)

#: Tile layers: the image, the fibre outlines, the fold mask.
LAYERS = ("image", "fibres", "folds")
#: Roles shown by default in the image composite (others can be switched on in the page).
DEFAULT_ROLES = ("membrane", "mito")


class NotFoundError(NclsmError):
    """A slide, level or tile the run does not have (HTTP 404)."""


def hidden_codes(text: str | None) -> frozenset[str]:
    """Class or reason codes of a ``hide`` query value (``"FR,EDGE"``); unknown codes raise ValidationError.

    >>> sorted(hidden_codes("fr, EDGE"))
    ['EDGE', 'FR']
    """
    codes = frozenset(c.strip().upper() for c in (text or "").split(",") if c.strip())
    unknown = sorted(codes - {c.value for c in FibreClass})
    if unknown:
        raise ValidationError(f"unknown class or reason code(s) {unknown}; known: {[c.value for c in FibreClass]}")
    return codes


@dataclass(frozen=True)
class _SlideData:
    """A slide's handle, normalisation, channel colours and default channels."""

    slide: Slide
    norm: NormStats
    colors: tuple[tuple[int, int, int], ...]
    default_channels: tuple[int, ...]


def _rgb(hex_color: str) -> tuple[int, int, int]:
    return int(hex_color[0:2], 16), int(hex_color[2:4], 16), int(hex_color[4:6], 16)


def _plain(value: Any) -> Any:
    """A table cell as a JSON value: numpy scalars as Python ones, NaN, infinities and NA as None."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return value


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts (every float exact)."""
    return [{str(k): _plain(v) for k, v in rec.items()} for rec in frame.to_dict("records")]


class RunView:
    """The viewer's model of one run directory (thread-safe; one per server).

    Parameters
    ----------
    run_dir : an aggregated run directory (``slides/``, ``tables/fibres/``, ``tables/slides.parquet``).
    cfg : RunConfig
        ``cfg.view`` (tile size), and for re-aggregation ``cfg.curate``, ``cfg.segment``,
        ``cfg.grid``, ``cfg.aggregate`` and ``cfg.cluster``.
    client : distributed.Client, optional
        Runs ``curate`` when re-aggregating; default: a cluster from ``cfg.cluster``,
        started at the first re-aggregation and closed by :meth:`close`.

    Raises
    ------
    SlideReadError
        When the run has no fibre tables or no slide statistics (aggregate it first).
    """

    def __init__(self, run_dir: str | Path, cfg: RunConfig, client: Client | None = None) -> None:
        self.layout = RunLayout(Path(run_dir))
        self.cfg = cfg
        self.tile_px = cfg.view.tile_px
        if not self.layout.slides_table.is_file() or not any(self.layout.fibres.glob("*.parquet")):
            raise SlideReadError(
                f"{self.layout.tables}: no fibre tables or slide statistics; run `nclsm-scale run` (or curate and "
                "report) on this run directory first."
            )
        self._client = client
        self._stack = contextlib.ExitStack()
        self._lock = threading.RLock()
        self._reaggregating = threading.Lock()
        self._slides: dict[str, _SlideData] = {}
        self._arrays: dict[tuple[str, str, int], zarr.Array] = {}
        self._tables: dict[str, tuple[tuple[float, float], pd.DataFrame]] = {}
        self._luts: dict[tuple[str, tuple[float, float], frozenset[str], frozenset[str]], np.ndarray] = {}
        self.edited: set[str] = set()

    # -- slides ---------------------------------------------------------------------------------------------------

    def slide_names(self) -> list[str]:
        """Slides with a converted store and an aggregated fibre table, sorted."""
        return sorted(p.stem for p in self.layout.fibres.glob("*.parquet") if self.layout.slide(p.stem).is_dir())

    def _run_norm(self, name: str) -> dict[str, Any] | None:
        norm = self.layout.run_record().get("normalisation", {}).get(name)
        return norm if isinstance(norm, dict) else None

    def slide(self, name: str) -> _SlideData:
        """The slide ``name`` with its normalisation (``run.json``'s, else the store's); NotFoundError if unknown."""
        with self._lock:
            if name in self._slides:
                return self._slides[name]
        if name not in self.slide_names():
            raise NotFoundError(f"unknown slide {name!r}; {self.layout.root} has {self.slide_names()}")
        slide = open_slide(self.layout.slide(name))
        recorded = self._run_norm(name)
        norm = NormStats.model_validate(recorded) if recorded is not None else slide_norm(slide)
        colors = tuple(_rgb(c) for c in default_colors(slide.channel_names, slide.roles))
        shown = tuple(sorted(slide.roles[r] for r in DEFAULT_ROLES if r in slide.roles))
        data = _SlideData(slide, norm, colors, shown or tuple(range(min(3, len(slide.channel_names)))))
        with self._lock:
            self._slides[name] = data
        return data

    def info(self, name: str) -> dict[str, Any]:
        """What the page needs of a slide: levels, tile size, channels, classes with counts, the slide row."""
        data = self.slide(name)
        s = data.slide
        table = self.fibre_table(name)
        counts = table["curation_class"].astype(str).value_counts()
        reasons = table["reasons"].astype(str).str.split(";").explode().value_counts()
        return {
            "slide": name,
            "slides": self.slide_names(),
            "width": s.levels[0].shape[2],
            "height": s.levels[0].shape[1],
            "levels": [list(lv.shape[1:]) for lv in s.levels],
            "tile_px": self.tile_px,
            "image_ext": "jpg" if self.cfg.view.image_format == "jpeg" else "png",
            "pixel_size_um": s.pixel_size_um(0) if s.pixel_size_known else None,
            "has_folds": "folds" in s.labels,
            "channels": [{"index": i, "name": n, "rgb": list(data.colors[i]), "shown": i in data.default_channels}
                         for i, n in enumerate(s.channel_names)],
            "classes": [{"code": c.value, "rgb": list(c.rgb), "meaning": c.meaning, "n": int(counts.get(c.value, 0)),
                         "n_reason": int(reasons.get(c.value, 0))} for c in FibreClass],
            "summary": self.summary(name),
            "edited": sorted(self.edited),
        }

    # -- tables ---------------------------------------------------------------------------------------------------

    def _table_key(self, name: str) -> tuple[float, float]:
        store = self.layout.overrides(name)
        return (self.layout.fibre_table(name).stat().st_mtime,
                store.stat().st_mtime if store.is_file() else 0.0)

    def fibre_table(self, name: str) -> pd.DataFrame:
        """The slide's aggregated fibre table with its remembered overrides applied (edits not yet re-aggregated)."""
        self.slide(name)
        key = self._table_key(name)
        with self._lock:
            cached = self._tables.get(name)
            if cached is not None and cached[0] == key:
                return cached[1]
        table, _ = read_fibre_table(self.layout.fibre_table(name))
        stored = ov.load_stored_overrides(self.layout.overrides(name), table)
        stored = stored[stored["fibre_id"].isin(table["fibre_id"].astype("int64"))]
        if len(stored):
            table = ov.apply_overrides(table, stored)
        with self._lock:
            self._tables[name] = (key, table)
        return table

    def summary(self, name: str) -> dict[str, Any]:
        """The slide's row of ``tables/slides.parquet`` (as written by the last aggregation)."""
        slides = pd.read_parquet(self.layout.slides_table)
        row = slides[slides["slide"].astype(str) == name]
        if row.empty:
            raise NotFoundError(f"{self.layout.slides_table}: no row for slide {name!r}; re-aggregate the run.")
        return _records(row)[0]

    def fibre_at(self, name: str, x: int, y: int) -> dict[str, Any] | None:
        """The fibre row under level-0 pixel ``(x, y)`` (column, row) as JSON-ready dict; None on background."""
        s = self.slide(name).slide
        _, ny, nx = s.levels[0].shape
        if not (0 <= x < nx and 0 <= y < ny):
            raise ValidationError(f"point ({x}, {y}) is outside slide {name!r} ({nx} x {ny} px)")
        fibre_id = int(np.asarray(self._array(name, "fibres", 0)[0, y : y + 1, x : x + 1])[0, 0])
        if fibre_id == 0:
            return None
        table = self.fibre_table(name)
        row = table[table["fibre_id"].astype("int64") == fibre_id]
        if row.empty:
            return {"fibre_id": fibre_id, "missing": True}
        return _records(row)[0]

    # -- tiles ----------------------------------------------------------------------------------------------------

    def _array(self, name: str, layer: str, level: int) -> zarr.Array:
        key = (name, layer, level)
        with self._lock:
            if key in self._arrays:
                return self._arrays[key]
        s = self.slide(name).slide
        if not 0 <= level < len(s.levels):
            raise NotFoundError(f"slide {name!r} has levels 0..{len(s.levels) - 1}, not {level}")
        if layer != "image" and layer not in s.labels:
            raise NotFoundError(f"slide {name!r} has no labels/{layer}")
        array = s.array(level) if layer == "image" else s.label_array(layer, level)
        with self._lock:
            self._arrays[key] = array
        return array

    def _lut(self, name: str, hide: frozenset[str], hide_reasons: frozenset[str]) -> np.ndarray:
        table = self.fibre_table(name)
        key = (name, self._table_key(name), hide, hide_reasons)
        with self._lock:
            if key in self._luts:
                return self._luts[key]
        ids = table["fibre_id"].to_numpy(np.int64)
        classes = table["curation_class"].astype(str).to_numpy()
        codes = table["reasons"].fillna("").astype(str).str.split(";")
        shown = ~np.isin(classes, sorted(hide)) & ~codes.map(lambda cs: bool(hide_reasons & set(cs))).to_numpy(bool)
        lut = np.zeros((int(ids.max(initial=0)) + 1, 4), np.uint8)
        for c in FibreClass:
            pick = ids[shown & (classes == c.value)]
            lut[pick] = (*c.rgb, 255)
        with self._lock:
            self._luts[key] = lut
        return lut

    def tile(self, name: str, layer: str, level: int, tx: int, ty: int, *, channels: list[int] | None = None,
             hide: frozenset[str] = frozenset(), hide_reasons: frozenset[str] = frozenset(),
             fill_alpha: int = 0, fmt: str = "png") -> bytes:
        """PNG (or JPEG: ``fmt="jpeg"``, image layer) of tile ``(tx, ty)`` of ``layer`` at pyramid ``level``.

        ``channels`` picks the image's channels (default: membrane and mito, else the
        first three); ``hide`` and ``hide_reasons`` leave out the outlines of fibres of
        those classes or with any of those reasons; ``fill_alpha`` (0..254) tints their inside too.
        """
        if layer not in LAYERS:
            raise NotFoundError(f"unknown layer {layer!r}; layers: {list(LAYERS)}")
        data = self.slide(name)
        array = self._array(name, layer, level)
        window = tile_window(tuple(array.shape[1:]), self.tile_px, tx, ty)  # type: ignore[arg-type]
        if window is None:
            raise NotFoundError(f"tile ({tx}, {ty}) is outside level {level} of slide {name!r}")
        y0, x0, y1, x1 = window
        if layer == "image":
            shown = list(data.default_channels) if channels is None else channels
            bad = [c for c in shown if not 0 <= c < len(data.colors)]
            if bad:
                raise ValidationError(f"slide {name!r} has channels 0..{len(data.colors) - 1}, not {bad}")
            block = read_padded(array, y0, x0, y1, x1)
            rgb = composite_tile(block, data.norm, shown, [data.colors[c] for c in shown])
            return encode_jpeg(rgb, self.cfg.view.jpeg_quality) if fmt == "jpeg" else encode_png(rgb)
        k = self.cfg.view.outline_px if layer == "fibres" else 1
        labels = read_padded(array, y0 - k, x0 - k, y1 + k, x1 + k)[0]
        if layer == "folds":
            return encode_png(fold_tile(labels, FOLD, FOLD_COLORS[FOLD]))
        if not 0 <= fill_alpha < 255:
            raise ValidationError(f"fill must be 0..254, got {fill_alpha}")
        return encode_png(outline_tile(labels, self._lut(name, hide, hide_reasons), fill_alpha, k))

    # -- edits ----------------------------------------------------------------------------------------------------

    def set_class(self, name: str, fibre_id: int, code: str | None, reasons: str | None = None) -> dict[str, Any]:
        """Remember a class override of fibre ``fibre_id`` (``code`` None: forget it); return the fibre's entry.

        ``reasons`` defaults to the class itself (empty for AM), as in an overrides CSV
        (:func:`~nclsm_scale.curate.overrides.read_overrides`).
        """
        self.slide(name)
        table, _ = read_fibre_table(self.layout.fibre_table(name))
        path = self.layout.overrides(name)
        new = pd.DataFrame({"fibre_id": pd.Series([int(fibre_id)], dtype="int64"), "class": [""], "reasons": [""]})
        ov.check_fibres(new, table, f"slide {name}")
        with self._lock:
            stored = ov.load_stored_overrides(path, table)
            if code is None:
                merged = stored[stored["fibre_id"] != int(fibre_id)].reset_index(drop=True)
            else:
                codes = hidden_codes(code)
                if len(codes) != 1:
                    raise ValidationError(f"one class expected, got {code!r}")
                cls = next(iter(codes))
                given = reasons if reasons is not None else ("" if cls == FibreClass.AM.value else cls)
                reason_codes = hidden_codes(given.replace(";", ","))
                order = [c.value for c in FibreClass if c.value in reason_codes]
                merged = ov.merge_overrides(stored, new.assign(**{"class": [cls], "reasons": [";".join(order)]}))
            ov.save_stored_overrides(path, merged, table)
            self.edited.add(name)
        logger.info("%s: fibre %d class %s (overrides %s)", name, fibre_id, code, path)
        row = merged[merged["fibre_id"] == int(fibre_id)]
        return {"fibre_id": int(fibre_id), "class": code, "n_overrides": len(merged),
                "reasons": row["reasons"].iloc[0] if len(row) else None, "edited": sorted(self.edited)}

    def _get_client(self) -> Client:
        if self._client is None:
            self._client = self._stack.enter_context(open_client(self.cfg.cluster, echo=False))
        return self._client

    def reaggregate(self, names: list[str] | None = None) -> dict[str, Any]:
        """Run ``curate`` for the edited slides (or ``names``) with their overrides, then ``aggregate``.

        Returns the slides curated, the seconds taken and the new slide rows.

        Raises
        ------
        ValidationError
            When a re-aggregation is already running.
        """
        names = sorted(self.edited) if names is None else names
        if not self._reaggregating.acquire(blocking=False):
            raise ValidationError("a re-aggregation is already running; wait for it to finish.")
        try:
            t0 = time.perf_counter()
            for name in names:
                self.slide(name)
                curate_slide(self.layout.slide(name), self.cfg, self._get_client(), layout=self.layout)
            aggregate_run(self.layout.root, self.cfg.aggregate)
            with self._lock:
                self.edited.difference_update(names)
                self._arrays.clear()
                self._tables.clear()
                self._luts.clear()
            seconds = time.perf_counter() - t0
            logger.info("re-aggregated %s in %.1f s", names, seconds)
            return {"slides": names, "seconds": seconds, "summary": {n: self.summary(n) for n in names},
                    "edited": sorted(self.edited)}
        finally:
            self._reaggregating.release()

    def close(self) -> None:
        """Close the cluster this view started, if any."""
        self._stack.close()
