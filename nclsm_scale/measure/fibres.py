"""Per-fibre measurements of one label window, in physical units.

:func:`measure_fibres` measures every fibre (or the given IDs) of a window, at
the window's level, and reports positions in level-0 slide pixels (the frames of
:mod:`nclsm_scale.tables`);
:func:`measure_block` is the owner-block entry point of the future Dask driver:
it checks that each owned fibre and the neighbourhood its features read
(:func:`context_px`) lie inside the window, then measures. A fibre's row does
not depend on where the window is cut: geometry is computed relative to the
fibre's bounding box with exact integer sums, intensity features from a fixed
neighbourhood.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from nclsm_scale.config import MeasureConfig
from nclsm_scale.errors import HaloViolationError, ValidationError
from nclsm_scale.measure.intensity import (
    SMOOTH_TRUNCATE,
    band_masks,
    band_stats,
    holes,
    interior_median_noise,
    interior_ridge_fraction,
    ridge_strength,
)
from nclsm_scale.measure.shape import Geometry, geometry, label_runs, perimeters
from nclsm_scale.normalise import cytoplasm_signal
from nclsm_scale.tables import channel_keys, empty_table, measure_columns, table_from_columns

__all__ = ["context_px", "measure_block", "measure_fibres"]

log = logging.getLogger(__name__)


def _ring_px(cfg: MeasureConfig, pixel_size_um: float) -> int:
    return max(1, int(round(cfg.ring_width_um / pixel_size_um)))


def _smooth_px(cfg: MeasureConfig, pixel_size_um: float) -> list[float]:
    return [s / pixel_size_um for s in cfg.hole_smooth_um]


def _filter_context_px(sigma_px: float) -> int:
    return int(SMOOTH_TRUNCATE * sigma_px + 0.5)


def _tissue_px(cfg: MeasureConfig, pixel_size_um: float) -> int:
    return int(round(cfg.tissue_margin_um / pixel_size_um))


def context_px(pixel_size_um: float, cfg: MeasureConfig | None = None) -> int:
    """Pixels of context a window must hold around a fibre's bounding box for exact results."""
    cfg = cfg or MeasureConfig()
    smooth = _filter_context_px(max(_smooth_px(cfg, pixel_size_um)))
    ridge = _filter_context_px(cfg.ridge_sigma_um / pixel_size_um) + 1  # + the central differences
    return max(1, smooth, ridge, _tissue_px(cfg, pixel_size_um))


def _compact(labels: np.ndarray, ids: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Label image with IDs ``1..n`` (0 elsewhere) for the kept fibres, and their original IDs."""
    top = int(labels.max(initial=0))
    if ids is None:
        if top + 1 <= 4 * labels.size + 1024:
            present = np.bincount(labels.ravel(), minlength=top + 1) > 0
            present[0] = False
            ids = np.flatnonzero(present).astype(np.uint32)
        else:
            ids = np.unique(labels)
            ids = ids[ids != 0].astype(np.uint32)
    if ids.size and int(ids[-1]) > top:
        raise ValidationError(
            f"fibre IDs {ids[ids > top][:5].tolist()} are not in the label window"
        )
    if ids.size == top and labels.dtype.kind == "u" and labels.itemsize <= 4:
        return labels, ids  # already 1..n, every ID kept
    if top + 1 <= 4 * labels.size + 1024:
        lut = np.zeros(top + 1, np.uint32)
        lut[ids] = np.arange(1, ids.size + 1, dtype=np.uint32)
        comp = lut[labels]
    else:
        pos = np.searchsorted(ids, labels)
        hit = (pos < ids.size) & (ids[np.minimum(pos, ids.size - 1)] == labels) & (labels != 0)
        comp = np.where(hit, pos + 1, 0).astype(np.uint32)
    return comp, ids


def measure_fibres(
    labels: np.ndarray,
    image: np.ndarray | None,
    *,
    pixel_size_um: float,
    channel_roles: Mapping[str, int] | None = None,
    channel_names: Sequence[str] | None = None,
    tissue_mask: np.ndarray | None = None,
    origin_yx: tuple[int, int] = (0, 0),
    slide_shape_yx: tuple[int, int] | None = None,
    downsample: int = 1,
    level0_shape_yx: tuple[int, int] | None = None,
    slide: str = "",
    ids: Iterable[int] | None = None,
    background: Sequence[float] | None = None,
    scale: Sequence[float] | None = None,
    cfg: MeasureConfig | None = None,
) -> pd.DataFrame:
    """Measure fibres of a label window; one row per fibre (:func:`nclsm_scale.tables.measure_columns`).

    Parameters
    ----------
    labels : ndarray, (Y, X) integer
        Fibre instance labels (0 = none) of a window whose top-left pixel is
        ``origin_yx`` in slide coordinates.
    image : ndarray, (C, Y, X) or None
        Channels on the same grid; ``None`` leaves intensity columns NaN.
    pixel_size_um : float
        Isotropic pixel size of the window's level.
    channel_roles : mapping role -> channel index
        ``membrane`` adds interior ridges; ``mito``, else the myosin heavy-chain roles
        (``myh1``, ``myh2a``, ``myh2x``), give the cytoplasm signal (interior level and
        holes). Without them those columns are NaN.
    channel_names : sequence of str, optional
        Names of the image's channels; every channel gets the statistics of
        :data:`~nclsm_scale.tables.CHANNEL_STATS`, under its role or its name
        (:func:`~nclsm_scale.tables.channel_keys`). Default ``channel0``, ``channel1``, ...
    tissue_mask : ndarray, (Y, X) bool, optional
        Tissue mask on the same grid (for ``touches_tissue_border``).
    origin_yx : (int, int)
        Slide position of the window's first pixel.
    slide_shape_yx : (int, int), optional
        Slide size at the window's level, for ``touches_image_border``; None treats the window as the slide.
    downsample : int
        Level-0 pixels per pixel of the window's level (2**level in an nclsm-scale pyramid): the ``_px``
        coordinates are level-0 pixels, the ``_seg_px`` counts the window's.
    level0_shape_yx : (int, int), optional
        Slide size at level 0, which bounding boxes are clipped to; default ``slide_shape_yx * downsample``.
    slide : str
        Slide name written in the ``slide`` column.
    ids : iterable of int, optional
        Fibres to measure (the block's owned IDs); all fibres in the window if None.
    background : sequence of float, optional
        Per-channel background (camera offset) subtracted from intensities, e.g. the
        global low percentile of the normalisation; 0 if None.
    scale : sequence of float, optional
        Per-channel range (the normalisation's ``hi - lo``) the cytoplasm signal is
        divided by; 1 if None.
    cfg : MeasureConfig, optional
        Band width, tissue margin and dark-blob parameters.
    """
    cfg = cfg or MeasureConfig()
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "ui":
        raise ValidationError(
            f"labels must be a 2-D integer array, got {labels.dtype} {labels.shape}"
        )
    if image is not None and (image.ndim != 3 or image.shape[1:] != labels.shape):
        raise ValidationError(
            f"image must be (C, {labels.shape[0]}, {labels.shape[1]}), got {image.shape}"
        )
    roles = dict(channel_roles or {})
    n_channels = 0 if image is None else image.shape[0]
    if any(not 0 <= c < n_channels for c in roles.values()) and image is not None:
        raise ValidationError(f"channel_roles {roles} out of range for {n_channels} channels")
    names = list(channel_names) if channel_names is not None else [f"channel{i}" for i in range(n_channels)]
    if len(names) != n_channels:
        raise ValidationError(f"{len(names)} channel names for an image of {n_channels} channels")
    keys = channel_keys(names, roles)
    columns = measure_columns(keys)
    keep = None if ids is None else np.unique(np.fromiter(ids, np.int64)).astype(np.uint32)
    comp, fibre_ids = _compact(labels, keep)
    n = fibre_ids.size
    if n == 0:
        return empty_table(columns)
    runs = label_runs(comp)
    if runs.ids.size != n:
        raise ValidationError("some requested fibre IDs have no pixels in the label window")
    geo = geometry(runs)
    perim, border_px, border = perimeters(comp, n)
    px = float(pixel_size_um)
    oy, ox = origin_yx
    h, w = labels.shape
    sh, sw = slide_shape_yx if slide_shape_yx is not None else (oy + h, ox + w)
    bbox = geo.bbox + np.array([oy, ox, oy, ox])
    level0 = level0_shape_yx if level0_shape_yx is not None else (sh * downsample, sw * downsample)
    cols = {"slide": np.full(n, slide, dtype=object), "fibre_id": fibre_ids,
            **_shape_columns(geo, perim, border_px, bbox, px, downsample, level0)}
    cols["touches_image_border"] = (
        (bbox[:, 0] <= 0) | (bbox[:, 1] <= 0) | (bbox[:, 2] >= sh) | (bbox[:, 3] >= sw)
    )
    cols["touches_tissue_border"] = _near_nontissue(
        comp, labels != 0, tissue_mask, geo.bbox, _tissue_px(cfg, px), cfg.tissue_border_min_fraction,
        (max(-oy, 0), max(-ox, 0), min(sh - oy, h), min(sw - ox, w)),
    )
    cols.update(_intensities(comp, border, image, roles, keys, background, scale, cfg, px, n))
    return table_from_columns(cols, columns)


def _shape_columns(
    geo: Geometry, perim: np.ndarray, border_px: np.ndarray, bbox: np.ndarray, px: float,
    downsample: int, level0_shape_yx: tuple[int, int],
) -> dict[str, np.ndarray]:
    """Size, outline, hull, Feret, ellipse and position columns of each fibre (``bbox`` in the level's pixels).

    Positions go to level 0: pixel ``c`` of the level covers level-0 pixels
    ``[c * f, (c + 1) * f)``, so its centre is ``c * f + (f - 1) / 2``.
    """
    f = downsample
    centroid = (bbox[:, :2] + geo.centroid) * f + (f - 1) / 2
    end = np.minimum(bbox[:, 2:] * f, np.asarray(level0_shape_yx))
    area = geo.area.astype(np.float64)
    px2 = px**2
    cyy, cxx, cxy = geo.cov.T
    half = (cyy + cxx) / 2.0
    root = np.sqrt(((cyy - cxx) / 2.0) ** 2 + cxy**2)
    l1, l2 = half + root, np.maximum(half - root, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        orientation = -np.degrees(0.5 * np.arctan2(2.0 * cxy, cxx - cyy))
        cols = {
            "area_seg_px": geo.area,
            "area_um2": area * px2,
            "perimeter_um": perim * px,
            "perimeter_border_seg_px": border_px,
            "convex_area_um2": geo.hull_area * px2,
            "convex_perimeter_um": (geo.hull_perimeter - 4.0) * px,
            "solidity": area / geo.hull_area,
            "hull_area_ratio": geo.hull_area / area,
            "convexity": (geo.hull_perimeter - 4.0) / perim,
            "circularity": 4.0 * np.pi * area / perim**2,
            "equivalent_diameter_um": np.sqrt(4.0 * area / np.pi) * px,
            "feret_min_um": geo.feret_min * px,
            "feret_max_um": geo.feret_max * px,
            "feret_aspect_ratio": geo.feret_max / geo.feret_min,
            "ellipse_major_um": 4.0 * np.sqrt(l1) * px,
            "ellipse_minor_um": 4.0 * np.sqrt(l2) * px,
            "ellipse_aspect_ratio": np.sqrt(l1 / l2),
            "eccentricity": np.sqrt(1.0 - l2 / l1),
            "orientation_deg": np.where(orientation <= -90.0, orientation + 180.0, orientation),
            "centroid_y_px": centroid[:, 0],
            "centroid_x_px": centroid[:, 1],
            "centroid_y_um": centroid[:, 0] * (px / f),
            "centroid_x_um": centroid[:, 1] * (px / f),
            "bbox_y0_px": bbox[:, 0] * f,
            "bbox_x0_px": bbox[:, 1] * f,
            "bbox_y1_px": end[:, 0],
            "bbox_x1_px": end[:, 1],
        }
    return cols


def _near_nontissue(
    comp: np.ndarray,
    occupied: np.ndarray,
    tissue: np.ndarray | None,
    bbox: np.ndarray,
    margin_px: int,
    min_fraction: float,
    inside: tuple[int, int, int, int],
) -> np.ndarray:
    """Whether each fibre's outer ring lies outside tissue for at least ``min_fraction`` of its pixels.

    The outer ring of a fibre is the pixels of no fibre (``occupied`` False: any
    fibre of the window, measured here or not, so the ring never depends on which
    fibres a block owns) within ``margin_px`` (Euclidean) of it; a fibre inside the
    tissue, even next to the endomysium gap, has its ring in tissue. A fibre without
    ring pixels (wholly surrounded by other fibres) is inside. Only ring pixels
    within ``inside`` (the slide's part of the window, ``y0, x0, y1, x1``) count, so
    the result does not depend on how the window is padded.
    """
    n = len(bbox)
    if tissue is None:
        return np.zeros(n, bool)
    outside = ~np.asarray(tissue, bool)
    valid = np.zeros(comp.shape, bool)
    valid[inside[0] : inside[2], inside[1] : inside[3]] = True
    r = max(1, margin_px)
    disk = np.hypot(*np.mgrid[-r : r + 1, -r : r + 1]) <= r
    h, w = comp.shape
    out = np.zeros(n, bool)
    for i, (y0, x0, y1, x1) in enumerate(bbox):
        sl = np.s_[max(y0 - r, 0) : min(y1 + r, h), max(x0 - r, 0) : min(x1 + r, w)]
        if not outside[sl].any():  # no ring pixel can lie outside tissue (most fibres): skip the dilation
            continue
        ring = ndimage.binary_dilation(comp[sl] == i + 1, disk) & ~occupied[sl] & valid[sl]
        total = np.count_nonzero(ring)
        out[i] = total > 0 and np.count_nonzero(ring & outside[sl]) >= min_fraction * total
    return out


def _intensities(
    comp: np.ndarray,
    border: np.ndarray,
    image: np.ndarray | None,
    roles: dict[str, int],
    keys: list[str],
    background: Sequence[float] | None,
    scale: Sequence[float] | None,
    cfg: MeasureConfig,
    px: float,
    n: int,
) -> dict[str, np.ndarray]:
    """Per-channel band and interior statistics, the membrane ridges, the cytoplasm level and holes."""
    out: dict[str, np.ndarray] = {
        k: np.full(n, np.nan)
        for k in ("cytoplasm_interior_median", "hole_fraction", "interior_membrane_fraction", "membrane_interior_p75")
    }
    out["hole_count"] = np.zeros(n, np.int64)
    if image is None:
        return out
    ring, interior = band_masks(comp, border, _ring_px(cfg, px))
    bg = list(background) if background is not None else [0.0] * image.shape[0]
    for c, key in enumerate(keys):
        membrane = c == roles.get("membrane")
        out[f"{key}_interior_mean"], out[f"{key}_interior_median"], upper = band_stats(
            comp, interior, image[c], n, bg[c], quantile=0.75 if membrane else None)
        if membrane:
            out["membrane_interior_p75"] = upper
        out[f"{key}_ring_mean"], out[f"{key}_ring_median"], _ = band_stats(comp, ring, image[c], n, bg[c])
    if "membrane" in roles:
        c = roles["membrane"]
        _, deep = band_masks(comp, border, max(1, int(round(cfg.ridge_exclusion_um / px))))
        out["interior_membrane_fraction"] = interior_ridge_fraction(
            comp, ring, deep, ridge_strength(image[c], cfg.ridge_sigma_um / px), n,
            ratio=cfg.ridge_ratio, noise_z=cfg.ridge_noise_z,
        )
    cyto = cytoplasm_signal(image, roles, bg, list(scale) if scale is not None else [1.0] * image.shape[0])
    if cyto is not None:
        med, noise = interior_median_noise(comp, interior, cyto, n, 0.0)
        out["cytoplasm_interior_median"] = med
        out["hole_fraction"], out["hole_count"] = holes(
            comp, interior, cyto, med, noise,
            smooth_px=_smooth_px(cfg, px),
            ratio=cfg.hole_ratio,
            noise_z=cfg.hole_noise_z,
            texture_z=cfg.hole_texture_z,
            min_px=max(3, int(round(cfg.hole_min_um2 / px**2))),
        )
    return out


def measure_block(
    labels: np.ndarray,
    image: np.ndarray | None,
    *,
    owned_ids: Iterable[int],
    origin_yx: tuple[int, int],
    slide_shape_yx: tuple[int, int],
    pixel_size_um: float,
    channel_roles: Mapping[str, int] | None = None,
    channel_names: Sequence[str] | None = None,
    cfg: MeasureConfig | None = None,
    tissue_mask: np.ndarray | None = None,
    background: Sequence[float] | None = None,
    scale: Sequence[float] | None = None,
    downsample: int = 1,
    level0_shape_yx: tuple[int, int] | None = None,
    slide: str = "",
) -> pd.DataFrame:
    """Measure the fibres a block owns from its block + halo window.

    Raises :class:`~nclsm_scale.errors.HaloViolationError` when an owned fibre,
    grown by :func:`context_px`, leaves the window anywhere but at the slide
    edge: its row could then depend on the cut. The other arguments are as in
    :func:`measure_fibres`.
    """
    cfg = cfg or MeasureConfig()
    ids = np.unique(np.fromiter(owned_ids, np.int64))
    if ids.size == 0:
        n_channels = 0 if image is None else image.shape[0]
        names = list(channel_names) if channel_names is not None else [f"channel{i}" for i in range(n_channels)]
        return empty_table(measure_columns(channel_keys(names, dict(channel_roles or {}))))
    labels = np.asarray(labels)
    oy, ox = origin_yx
    h, w = labels.shape
    sh, sw = slide_shape_yx
    margin = context_px(pixel_size_um, cfg)
    objs = ndimage.find_objects(labels, max_label=int(ids[-1]))
    bad = []
    for i in ids.tolist():
        sl = objs[i - 1] if i - 1 < len(objs) else None
        if sl is None:
            bad.append((i, "absent"))
            continue
        y0, y1, x0, x1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
        cut = (
            (y0 < margin and oy > 0)
            or (x0 < margin and ox > 0)
            or (h - y1 < margin and oy + h < sh)
            or (w - x1 < margin and ox + w < sw)
        )
        if cut:
            bad.append((i, f"bbox y[{oy + y0},{oy + y1}) x[{ox + x0},{ox + x1})"))
    if bad:
        raise HaloViolationError(
            f"{len(bad)} owned fibre(s) do not lie {margin} px inside the window at "
            f"y[{oy},{oy + h}) x[{ox},{ox + w}) (first: {bad[:3]}); enlarge the halo."
        )
    return measure_fibres(
        labels,
        image,
        pixel_size_um=pixel_size_um,
        channel_roles=channel_roles,
        channel_names=channel_names,
        origin_yx=origin_yx,
        slide_shape_yx=slide_shape_yx,
        ids=ids,
        cfg=cfg,
        tissue_mask=tissue_mask,
        background=background,
        scale=scale,
        downsample=downsample,
        level0_shape_yx=level0_shape_yx,
        slide=slide,
    )
