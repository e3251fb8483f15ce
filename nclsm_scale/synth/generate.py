"""Chunk-invariant rendering of synthetic sections and their ground-truth table.

:func:`render_window` renders any window of a slide from the seed alone; the
result is bitwise identical however the slide is cut into windows.
:func:`generate_section` renders a whole (small) slide in memory.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

from nclsm_scale.config import SynthConfig
from nclsm_scale.synth.appearance import Appearance, finish, is_fam, render_layer
from nclsm_scale.synth.geometry import TILE_PX, SlidePlan, is_oblique
from nclsm_scale.synth.stains import channel_names, fibre_types, type_names
from nclsm_scale.synth.structures import nuclei, render_sites, sites_in_window
from nclsm_scale.synth.texture import textures

log = logging.getLogger(__name__)

STAT_COLUMNS = ("area_px", "sum_y", "sum_x", "y0", "x0", "y1", "x1", "fold_px")
GT_CLASSES = ("AM", "NTM", "FAM", "FR", "DEBRIS")
TABLE_COLUMNS = [
    "fibre_id",
    "gt_class",
    "area_px",
    "area_um2",
    "centroid_y_px",
    "centroid_x_px",
    "bbox_y0_px",
    "bbox_x0_px",
    "bbox_y1_px",
    "bbox_x1_px",
    "touches_image_border",
    "fold_fraction",
]


@dataclass
class SyntheticSection:
    """A rendered section with exact ground truth.

    Attributes
    ----------
    image : ndarray, (C, Y, X) uint16
        One channel per stain of ``SynthConfig.stains`` (default: membrane, mito).
    fibres : ndarray, (Y, X) uint32
        Fibre instance labels, dense IDs 1..N (0 = no fibre).
    regions : ndarray, (Y, X) uint8
        0 background, 1 tissue, 2 fold.
    table : pandas.DataFrame
        One row per fibre (see :func:`build_table`).
    pixel_size_um : float
        Physical pixel size.
    channel_names : tuple of str
        OME names of the channels (see :data:`~nclsm_scale.synth.stains.CHANNEL_NAMES`).
    """

    image: np.ndarray
    fibres: np.ndarray
    regions: np.ndarray
    table: pd.DataFrame
    pixel_size_um: float
    channel_names: tuple[str, ...] = channel_names(("membrane", "mito"))


@dataclass
class Window:
    """One rendered window: image, fibre seed keys, region labels and fold mask.

    ``in_fold`` marks pixels under folded-over tissue: a fold whose flap is
    background there lays nothing over the fibre, so it does not count.
    """

    image: np.ndarray
    keys: np.ndarray
    regions: np.ndarray
    in_fold: np.ndarray


def _fold_layer(
    plan: SlidePlan, in_fold: np.ndarray, sy: np.ndarray, sx: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Geometry of the mirrored layer at fold pixels, evaluated tile by tile."""
    h, w = in_fold.shape
    key = np.zeros((h, w), np.uint64)
    edge = np.zeros((h, w), np.float64)
    tissue = np.zeros((h, w), bool)
    for ty in range(0, h, TILE_PX):
        for tx in range(0, w, TILE_PX):
            sl = np.s_[ty : ty + TILE_PX, tx : tx + TILE_PX]
            m = in_fold[sl]
            if not m.any():
                continue
            wy, wx = plan.warp_points(sy[sl][m], sx[sl][m])
            k, e, t = plan.evaluate_points(wy, wx)
            key[sl][m], edge[sl][m], tissue[sl][m] = k, e, t
    return key, edge, tissue


def render_window(plan: SlidePlan, app: Appearance, y0: int, x0: int, h: int, w: int) -> Window:
    """Render the window ``[y0, y0+h) x [x0, x0+w)`` of a slide (any position and size)."""
    p = app.pad_px
    ey0, ex0, eh, ew = y0 - p, x0 - p, h + 2 * p, w + 2 * p
    key, edge, tissue = plan.evaluate_grid(ey0, ex0, eh, ew)
    yy = np.broadcast_to(np.arange(ey0, ey0 + eh, dtype=np.float64)[:, None], (eh, ew))
    xx = np.broadcast_to(np.arange(ex0, ex0 + ew, dtype=np.float64)[None, :], (eh, ew))
    tex = textures(app, ey0, ex0, eh, ew)
    oblique = functools.partial(is_oblique, cfg=plan.cfg)
    sites = sites_in_window(app, ey0, ex0, eh, ew, plan.free_at, plan.sites)
    extra = render_sites(app, sites, ey0, ex0, eh, ew)
    if "dapi" in app.stains:
        extra["nuclei"] = nuclei(app, ey0, ex0, eh, ew, plan.sample)
    signal = render_layer(app, key, edge, tissue, tex, yy, xx, oblique, extra)
    in_fold, sy, sx, fold_weight = plan.fold_coords(yy[:, :1], xx[:1, :])
    fold_tissue = np.zeros_like(tissue)
    if in_fold.any():
        fkey, fedge, fold_tissue = _fold_layer(plan, in_fold, sy, sx)
        idx = np.nonzero(in_fold)
        sub = {k: v[idx] for k, v in tex.items()}
        layer = render_layer(
            app, fkey[idx], fedge[idx], fold_tissue[idx], sub, yy[idx], xx[idx], oblique
        )
        signal[:, idx[0], idx[1]] += np.float32(app.fold_gain) * fold_weight[idx] * layer
    image = finish(app, signal, y0, x0, plan.cfg.size_px, tex["focus"])
    core = np.s_[p : p + h, p : p + w]
    regions = tissue[core].astype(np.uint8)
    fold_region = in_fold[core] & (tissue[core] | fold_tissue[core])
    regions[fold_region] = 2
    return Window(image=image, keys=key[core].copy(), regions=regions, in_fold=in_fold[core] & fold_tissue[core])


def window_stats(keys: np.ndarray, in_fold: np.ndarray, y0: int, x0: int) -> pd.DataFrame:
    """Per-fibre sums and bounds of one window (exact integers), indexed by seed key."""
    inv, uniq = pd.factorize(keys.ravel(), sort=True)
    uniq = np.asarray(uniq, np.uint64)
    lab = (inv.reshape(keys.shape) + 1).astype(np.int64)
    objects = ndimage.find_objects(lab)
    h, w = keys.shape
    ys = np.broadcast_to(np.arange(y0, y0 + h, dtype=np.float64)[:, None], (h, w)).ravel()
    xs = np.broadcast_to(np.arange(x0, x0 + w, dtype=np.float64)[None, :], (h, w)).ravel()
    n = len(uniq)
    data = {
        "area_px": np.bincount(inv, minlength=n).astype(np.int64),
        "sum_y": np.bincount(inv, weights=ys, minlength=n).astype(np.int64),
        "sum_x": np.bincount(inv, weights=xs, minlength=n).astype(np.int64),
        "y0": np.array([s[0].start + y0 for s in objects], np.int64),
        "x0": np.array([s[1].start + x0 for s in objects], np.int64),
        "y1": np.array([s[0].stop + y0 for s in objects], np.int64),
        "x1": np.array([s[1].stop + x0 for s in objects], np.int64),
        "fold_px": np.bincount(inv, weights=in_fold.ravel(), minlength=n).astype(np.int64),
    }
    df = pd.DataFrame(data, index=pd.Index(uniq, name="seed_key"))
    return df[df.index != 0]


def merge_stats(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Combine per-window statistics (sums add, bounds take min/max), sorted by key."""
    if not parts:
        return pd.DataFrame(
            columns=list(STAT_COLUMNS), index=pd.Index([], name="seed_key", dtype=np.uint64)
        )
    df = pd.concat(parts)
    agg = {c: "sum" for c in ("area_px", "sum_y", "sum_x", "fold_px")}
    agg.update({"y0": "min", "x0": "min", "y1": "max", "x1": "max"})
    return df.groupby(level=0, sort=True).agg(agg)[list(STAT_COLUMNS)]


def geometry_columns(stats: pd.DataFrame, size_px: tuple[int, int], pixel_size_um: float) -> dict:
    """Table columns computed from merged window statistics (area, centroid, bbox, border, fold)."""
    area = stats["area_px"].to_numpy()
    h, w = size_px
    y0, x0 = stats["y0"].to_numpy(), stats["x0"].to_numpy()
    y1, x1 = stats["y1"].to_numpy(), stats["x1"].to_numpy()
    return {
        "fibre_id": np.arange(1, len(stats) + 1, dtype=np.uint32),
        "area_px": area,
        "area_um2": area * pixel_size_um**2,
        "centroid_y_px": stats["sum_y"].to_numpy() / np.maximum(area, 1),
        "centroid_x_px": stats["sum_x"].to_numpy() / np.maximum(area, 1),
        "bbox_y0_px": y0,
        "bbox_x0_px": x0,
        "bbox_y1_px": y1,
        "bbox_x1_px": x1,
        "touches_image_border": (y0 == 0) | (x0 == 0) | (y1 == h) | (x1 == w),
        "fold_fraction": stats["fold_px"].to_numpy() / np.maximum(area, 1),
    }


def build_table(stats: pd.DataFrame, cfg: SynthConfig, app: Appearance) -> pd.DataFrame:
    """One row per fibre: dense ``fibre_id`` (in seed-key order), ``gt_class`` and geometry.

    ``gt_class`` is the first that applies of DEBRIS (area below
    ``debris_max_um2``), FR (fold share >= ``fr_min_fold_fraction``), FAM, NTM, AM.
    Other columns: ``area_px, area_um2, centroid_y_px, centroid_x_px,
    bbox_{y0,x0,y1,x1}_px`` (end exclusive), ``touches_image_border,
    fold_fraction, oblique, freeze_artefact, gt_type`` (I, IIa, IIx, I/IIa or
    IIa/IIx: the type rendered in the mito and MyHC channels), ``seed_key``.
    """
    keys = stats.index.to_numpy(np.uint64)
    cols = geometry_columns(stats, cfg.size_px, cfg.pixel_size_um)
    oblique = is_oblique(keys, cfg)
    fam = is_fam(keys, cfg.seed, cfg.fam_fraction)
    debris = cols["area_um2"] < cfg.debris_max_um2
    fr = cols["fold_fraction"] >= cfg.fr_min_fold_fraction
    gt = np.select([debris, fr, fam, oblique], ["DEBRIS", "FR", "FAM", "NTM"], "AM")
    cols["gt_class"] = pd.Categorical(gt, categories=GT_CLASSES)
    cols.update(
        oblique=oblique,
        freeze_artefact=fam,
        gt_type=type_names(fibre_types(keys, cfg.seed, app.type_shares)),
        seed_key=keys,
    )
    return pd.DataFrame(cols)[TABLE_COLUMNS + ["oblique", "freeze_artefact", "gt_type", "seed_key"]]


def keys_to_ids(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """Dense uint32 IDs (1-based rank in ``sorted_keys``) of seed keys; 0 stays 0."""
    ids = np.searchsorted(sorted_keys, keys).astype(np.uint32) + np.uint32(1)
    return np.where(keys == 0, np.uint32(0), ids)


def iter_windows(size_px: tuple[int, int], chunk_px: int) -> Iterator[tuple[int, int, int, int]]:
    """Row-major windows ``(y0, x0, h, w)`` covering a slide."""
    h, w = size_px
    for y0 in range(0, h, chunk_px):
        for x0 in range(0, w, chunk_px):
            yield y0, x0, min(chunk_px, h - y0), min(chunk_px, w - x0)


def generate_section(cfg: SynthConfig) -> SyntheticSection:
    """Render a whole section in memory (for tests and training; keep it small).

    Rendering proceeds in windows of ``cfg.chunk_px``; the result does not depend
    on the chunk size. Use :func:`~nclsm_scale.synth.write_section` for large slides.
    """
    plan = SlidePlan(cfg)
    app = Appearance.draw(cfg)
    h, w = cfg.size_px
    image = np.empty((len(cfg.stains), h, w), np.uint16)
    keys = np.empty((h, w), np.uint64)
    regions = np.empty((h, w), np.uint8)
    parts = []
    for y0, x0, ch, cw in iter_windows(cfg.size_px, cfg.chunk_px):
        win = render_window(plan, app, y0, x0, ch, cw)
        sl = np.s_[y0 : y0 + ch, x0 : x0 + cw]
        image[(slice(None), *sl)] = win.image
        keys[sl] = win.keys
        regions[sl] = win.regions
        parts.append(window_stats(win.keys, win.in_fold, y0, x0))
    stats = merge_stats(parts)
    table = build_table(stats, cfg, app)
    fibres = keys_to_ids(keys, stats.index.to_numpy(np.uint64))
    return SyntheticSection(image, fibres, regions, table, cfg.pixel_size_um, channel_names(cfg.stains))
