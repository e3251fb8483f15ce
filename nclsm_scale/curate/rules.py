"""Rule-based curation of a slide's fibre table (NCL-SM scheme plus EDGE and DEBRIS).

Each rule compares a physically meaningful feature with a threshold of
:class:`~nclsm_scale.config.CurateConfig`:

- DEBRIS: CSA below ``debris_max_um2``;
- EDGE: the fibre touches the image border or non-tissue (it is cut);
- FR: a folded second layer covers it: ``fold_fraction`` (share inside the
  detected fold mask) at least ``fr_min_fold_fraction``, or its interior
  membrane signal is ``fr_min_membrane_ratio`` times the slide's median fibre
  (the other layer's sarcolemma crosses it);
- FAM: at least ``fam_min_dark_blobs`` internal dark holes (ice-crystal vacuoles);
- NTM: oblique profile: the fibre is elongated (ellipse aspect ratio) **and** so
  are its neighbours, in the same direction (oblique sectioning is a property of
  the fascicle; an isolated long profile among round ones is not).

The primary class is the first reason in :data:`PRIORITY`; confidence grows
with the log-distance of the deciding feature from its threshold.
"""

from __future__ import annotations

from enum import Enum

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from nclsm_scale.config import CurateConfig

__all__ = ["PRIORITY", "Reason", "curate_fibres", "field_aspect_ratio", "field_median"]


class Reason(str, Enum):
    """Curation classes: AM (analysable) or a rejection reason code."""

    AM = "AM"
    DEBRIS = "DEBRIS"
    EDGE = "EDGE"
    FR = "FR"
    FAM = "FAM"
    NTM = "NTM"


#: Rejection reasons in priority order (the first that applies is the primary class).
PRIORITY = (Reason.DEBRIS, Reason.EDGE, Reason.FR, Reason.FAM, Reason.NTM)


def _neighbour_pairs(table: pd.DataFrame, radius_um: float) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j) of fibres whose centroids lie within ``radius_um`` (each fibre with itself too)."""
    xy = table[["centroid_y_um", "centroid_x_um"]].to_numpy(np.float64)
    pairs = cKDTree(xy).query_pairs(radius_um, output_type="ndarray")
    own = np.arange(len(xy))
    return np.concatenate([own, pairs[:, 0], pairs[:, 1]]), np.concatenate(
        [own, pairs[:, 1], pairs[:, 0]]
    )


def field_median(table: pd.DataFrame, values: np.ndarray, radius_um: float) -> np.ndarray:
    """Median of ``values`` over each fibre's neighbourhood (itself included; NaNs ignored)."""
    if len(table) == 0:
        return np.zeros(0)
    i, j = _neighbour_pairs(table, radius_um)
    order = np.lexsort((values[j], i))
    i, v = i[order], values[j][order]
    out = np.full(len(table), np.nan)
    bounds = np.searchsorted(i, np.arange(len(table) + 1))
    for k in range(len(table)):
        seg = v[bounds[k] : bounds[k + 1]]
        seg = seg[np.isfinite(seg)]
        if seg.size:
            out[k] = np.median(seg)
    return out


def field_aspect_ratio(table: pd.DataFrame, radius_um: float) -> np.ndarray:
    """Coherent elongation of each fibre's neighbourhood (itself included).

    Each fibre contributes the nematic vector ``log(AR) * (cos 2t, sin 2t)`` of its
    ellipse aspect ratio AR and orientation t; the result is ``exp`` of the length
    of the mean vector over fibres whose centroids lie within ``radius_um``: the
    aspect ratio shared, in one direction, by the neighbourhood (1 = no coherent
    elongation).
    """
    if len(table) == 0:
        return np.zeros(0)
    ar = np.clip(
        np.nan_to_num(table["ellipse_aspect_ratio"].to_numpy(np.float64), nan=1.0, posinf=10.0),
        1.0,
        10.0,
    )
    t = np.radians(table["orientation_deg"].to_numpy(np.float64))
    el = np.log(ar)
    vec = np.stack([el * np.cos(2 * t), el * np.sin(2 * t)], axis=1)
    i, j = _neighbour_pairs(table, radius_um)
    m = len(table)
    n = np.bincount(i, minlength=m)
    mean = (
        np.stack([np.bincount(i, weights=vec[j, k], minlength=m) for k in range(2)], axis=1)
        / n[:, None]
    )
    return np.exp(np.hypot(mean[:, 0], mean[:, 1]))


def _margin(value: np.ndarray, threshold: float, band: float) -> np.ndarray:
    """Confidence in [0.5, 1] of a ratio-scale decision from the log-distance to its threshold."""
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.abs(np.log(np.maximum(value, 1e-12) / threshold)) / np.log1p(band)
    return np.clip(0.5 + 0.5 * np.nan_to_num(d, nan=0.0, posinf=1.0), 0.5, 1.0)


def _median_ratio(values: pd.Series) -> np.ndarray:
    v = values.to_numpy(np.float64)
    ref = np.nanmedian(v) if np.isfinite(v).any() else np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        return v / ref if ref and ref > 0 else np.full(v.shape, np.nan)


def curate_fibres(table: pd.DataFrame, cfg: CurateConfig | None = None) -> pd.DataFrame:
    """Add ``curation_class``, ``reasons``, ``confidence`` and the two slide-level features used.

    Parameters
    ----------
    table : DataFrame
        One slide's measured fibres (columns of :data:`~nclsm_scale.tables.MEASURE_COLUMNS`).
    cfg : CurateConfig, optional
        Thresholds (human defaults).

    Returns
    -------
    DataFrame
        A copy of ``table`` with ``field_aspect_ratio``, ``membrane_interior_rel``,
        ``curation_class``, ``reasons`` and ``confidence`` added.
    """
    cfg = cfg or CurateConfig()
    out = table.copy()
    band = cfg.confidence_band
    field = field_aspect_ratio(out, cfg.ntm_field_radius_um)
    mem_rel = _median_ratio(out["membrane_interior_mean"])
    mem_field = field_median(out, mem_rel, cfg.fr_field_radius_um)
    out["field_aspect_ratio"] = field
    out["membrane_interior_rel"] = mem_rel
    out["membrane_field_rel"] = mem_field
    area = out["area_um2"].to_numpy(np.float64)
    ar = out["ellipse_aspect_ratio"].to_numpy(np.float64)
    fold = np.nan_to_num(out["fold_fraction"].to_numpy(np.float64), nan=0.0)
    blobs = out["dark_blobs"].to_numpy(np.float64)
    n = len(out)
    edge = np.zeros(n, bool)
    if cfg.edge_image_border:
        edge |= out["touches_image_border"].to_numpy(bool)
    if cfg.edge_tissue_border:
        edge |= out["touches_tissue_border"].to_numpy(bool)
    fr_fold = fold >= cfg.fr_min_fold_fraction
    fr_mem = np.nan_to_num(np.minimum(mem_rel, mem_field), nan=0.0) >= cfg.fr_min_membrane_ratio
    ntm_own, ntm_field = ar >= cfg.ntm_min_aspect_ratio, field >= cfg.ntm_min_field_aspect_ratio
    fired = {
        Reason.DEBRIS: area < cfg.debris_max_um2,
        Reason.EDGE: edge,
        Reason.FR: fr_fold | fr_mem,
        Reason.FAM: blobs >= cfg.fam_min_dark_blobs,
        Reason.NTM: ntm_own & ntm_field,
    }
    m_fold = _margin(np.maximum(fold, 1e-3), cfg.fr_min_fold_fraction, band)
    m_mem = _margin(
        np.nan_to_num(np.minimum(mem_rel, mem_field), nan=1.0), cfg.fr_min_membrane_ratio, band
    )
    m_own = _margin(ar, cfg.ntm_min_aspect_ratio, band)
    m_field = _margin(field, cfg.ntm_min_field_aspect_ratio, band)
    half = np.full(n, 0.5)
    conf = {  # OR rule: fired -> the clearest firing condition; AND rule: fired -> the weakest condition
        Reason.DEBRIS: _margin(area, cfg.debris_max_um2, band),
        Reason.EDGE: np.ones(n),
        Reason.FR: np.where(
            fired[Reason.FR],
            np.maximum(np.where(fr_fold, m_fold, half), np.where(fr_mem, m_mem, half)),
            np.minimum(m_fold, m_mem),
        ),
        Reason.FAM: _margin(blobs + 0.5, cfg.fam_min_dark_blobs, band),
        Reason.NTM: np.where(
            fired[Reason.NTM],
            np.minimum(m_own, m_field),
            np.maximum(np.where(ntm_own, half, m_own), np.where(ntm_field, half, m_field)),
        ),
    }
    primary = np.full(n, Reason.AM.value, dtype=object)
    confidence = np.ones(n)
    undecided = np.ones(n, bool)
    for reason in PRIORITY:
        hit = undecided & fired[reason]
        primary[hit] = reason.value
        confidence[hit] = conf[reason][hit]
        undecided &= ~hit
    am_conf = np.min(np.stack([conf[r] for r in PRIORITY]), axis=0)
    confidence[undecided] = am_conf[undecided]
    codes = np.stack([np.where(fired[r], r.value, "") for r in PRIORITY], axis=1)
    out["curation_class"] = primary
    out["reasons"] = [";".join(c for c in row if c) for row in codes]
    out["confidence"] = confidence
    return out
