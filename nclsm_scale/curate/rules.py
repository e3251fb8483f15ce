"""Rule-based curation of a slide's fibre table (NCL-SM scheme plus EDGE and DEBRIS).

Each rule compares a physically meaningful, per-slide normalised feature with a
threshold of :class:`~nclsm_scale.config.CurateConfig`:

- DEBRIS: CSA below ``debris_max_um2``;
- EDGE: the fibre touches the image border or non-tissue (it is cut);
- FR: a folded second layer covers it. Its sarcolemma crosses the fibre:
  ``interior_membrane_fraction`` (share of the interior on membrane ridges as
  strong as the fibre's own outline, from ``measure``) at least
  ``fr_min_interior_membrane``; or a weaker share
  (``fr_min_interior_membrane_in_fold``) inside a detected low-resolution fold
  (``fold_fraction`` at least ``fr_min_fold_fraction``). Without a membrane
  channel the fold alone decides;
- FAM: ice-crystal holes throughout the fibre: at least ``fam_min_dark_blobs``
  internal dark blobs, and at least ``fam_min_dark_blobs_per_mm2`` of them per
  mm2 (one or two nuclei are not a freeze artefact);
- NTM: oblique profile: the fibre is elongated along the direction its
  neighbours share (ellipse aspect ratio projected on the neighbourhood's
  orientation) **and** the neighbourhood is coherently elongated (oblique
  sectioning is a property of the fascicle; an isolated long profile among
  round ones is not). The neighbourhood radius is a multiple of the slide's
  median fibre diameter, so the rule carries over between species.

A fibre may have several reasons (``reasons``, in :data:`PRIORITY` order); the
primary class is the first. Confidence grows with the log-distance of the
deciding feature(s) from their thresholds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from nclsm_scale.config import CurateConfig
from nclsm_scale.tables import PRIORITY, FibreClass

__all__ = ["curate_fibres", "field_elongation", "typical_diameter_um"]

#: Largest aspect ratio entering the neighbourhood elongation (lines and slivers are capped).
_MAX_AR = 10.0


def typical_diameter_um(table: pd.DataFrame, min_area_um2: float = 0.0) -> float:
    """Return the slide's median equivalent diameter over fibres of at least ``min_area_um2`` (all if none)."""
    d = table["equivalent_diameter_um"].to_numpy(np.float64)
    big = table["area_um2"].to_numpy(np.float64) >= min_area_um2
    d = d[big] if big.any() else d
    d = d[np.isfinite(d)]
    return float(np.median(d)) if d.size else float("nan")


def field_elongation(
    table: pd.DataFrame, radius_um: float, use: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Coherent elongation of each fibre's neighbours, and the fibre's own elongation along it.

    Each fibre stands for the nematic vector ``log(AR) * (cos 2t, sin 2t)`` of its
    ellipse aspect ratio AR and orientation t. For every fibre, the mean vector
    over the **other** fibres whose centroids lie within ``radius_um`` (and that
    ``use`` marks, default all: e.g. not cut by the image border) gives

    - ``field``: ``exp`` of its length, the aspect ratio the neighbourhood shares in
      one direction (1 = no coherent elongation, or no neighbours);
    - ``aligned``: ``exp(log(AR) cos(2 (t - t_field)))``, the fibre's own aspect
      ratio along that direction (below 1 when it lies across).
    """
    n = len(table)
    if n == 0:
        return np.zeros(0), np.zeros(0)
    ar = np.clip(
        np.nan_to_num(table["ellipse_aspect_ratio"].to_numpy(np.float64), nan=1.0, posinf=_MAX_AR),
        1.0,
        _MAX_AR,
    )
    t = np.radians(table["orientation_deg"].to_numpy(np.float64))
    vec = np.log(ar)[:, None] * np.stack([np.cos(2 * t), np.sin(2 * t)], axis=1)
    xy = table[["centroid_y_um", "centroid_x_um"]].to_numpy(np.float64)
    pairs = cKDTree(xy).query_pairs(radius_um, output_type="ndarray")
    i = np.concatenate([pairs[:, 0], pairs[:, 1]])
    j = np.concatenate([pairs[:, 1], pairs[:, 0]])
    if use is not None:
        i, j = i[use[j]], j[use[j]]
    count = np.bincount(i, minlength=n).astype(np.float64)
    total = np.stack([np.bincount(i, weights=vec[j, k], minlength=n) for k in range(2)], axis=1)
    mean = total / np.maximum(count, 1.0)[:, None]
    length = np.hypot(mean[:, 0], mean[:, 1])
    unit = mean / np.where(length > 0, length, 1.0)[:, None]
    return np.exp(length), np.exp(np.sum(vec * unit, axis=1))


def _margin(value: np.ndarray, threshold: float, band: float) -> np.ndarray:
    """Confidence in [0.5, 1] of a ratio-scale decision from the log-distance to its threshold."""
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.abs(np.log(np.maximum(value, 1e-12) / threshold)) / np.log1p(band)
    return np.clip(0.5 + 0.5 * np.nan_to_num(d, nan=0.0, posinf=1.0), 0.5, 1.0)


def _all_of(conds: list[np.ndarray], margins: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """AND of conditions: (fired, confidence) -- the weakest margin if fired, else the clearest failure."""
    fired = np.logical_and.reduce(conds)
    half = np.full(fired.shape, 0.5)
    on = np.min(np.stack(margins), axis=0)
    off = np.max(np.stack([np.where(c, half, m) for c, m in zip(conds, margins, strict=True)]), axis=0)
    return fired, np.where(fired, on, off)


def _any_of(rules: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """OR of (fired, confidence) rules: the clearest firing rule if any fired, else the weakest."""
    fired = np.logical_or.reduce([f for f, _ in rules])
    half = np.full(fired.shape, 0.5)
    on = np.max(np.stack([np.where(f, c, half) for f, c in rules]), axis=0)
    off = np.min(np.stack([c for _, c in rules]), axis=0)
    return fired, np.where(fired, on, off)


Decision = tuple[np.ndarray, np.ndarray]
"""A rule's outcome per fibre: (fired, confidence in [0.5, 1])."""


def _fr_rule(table: pd.DataFrame, cfg: CurateConfig) -> Decision:
    """FR: strong interior membrane ridges, or weaker ones (or none measurable) inside a detected fold."""
    band = cfg.confidence_band
    fold = np.nan_to_num(table["fold_fraction"].to_numpy(np.float64), nan=0.0)
    ridges = table["interior_membrane_fraction"].to_numpy(np.float64)
    has_ridges = np.isfinite(ridges)
    ridges = np.nan_to_num(ridges, nan=0.0)
    in_fold = fold >= cfg.fr_min_fold_fraction
    m_fold = _margin(np.maximum(fold, 1e-3), cfg.fr_min_fold_fraction, band)
    strong = ridges >= cfg.fr_min_interior_membrane
    weak = (ridges >= cfg.fr_min_interior_membrane_in_fold) | ~has_ridges
    m_weak = np.where(
        has_ridges,
        _margin(np.maximum(ridges, 1e-4), max(cfg.fr_min_interior_membrane_in_fold, 1e-4), band),
        1.0,
    )
    return _any_of([
        (strong, _margin(np.maximum(ridges, 1e-4), cfg.fr_min_interior_membrane, band)),
        _all_of([in_fold, weak], [m_fold, m_weak]),
    ])


def _fam_rule(blobs: np.ndarray, density: np.ndarray, cfg: CurateConfig) -> Decision:
    """FAM: enough internal dark blobs, dense enough per mm2."""
    band = cfg.confidence_band
    return _all_of(
        [blobs >= cfg.fam_min_dark_blobs, density >= cfg.fam_min_dark_blobs_per_mm2],
        [_margin(blobs + 0.5, cfg.fam_min_dark_blobs, band),
         _margin(np.maximum(density, 1.0), max(cfg.fam_min_dark_blobs_per_mm2, 1.0), band)],
    )


def _ntm_rule(aligned: np.ndarray, field: np.ndarray, cut: np.ndarray, cfg: CurateConfig) -> Decision:
    """NTM: elongated along a coherently elongated neighbourhood (a cut fibre: the neighbourhood alone)."""
    band = cfg.confidence_band
    own = np.where(cut, np.inf, aligned)  # a fibre cut by the image border has no shape of its own
    return _all_of(
        [own >= cfg.ntm_min_aspect_ratio, field >= cfg.ntm_min_field_aspect_ratio],
        [np.where(cut, 1.0, _margin(aligned, cfg.ntm_min_aspect_ratio, band)),
         _margin(field, cfg.ntm_min_field_aspect_ratio, band)],
    )


def _classify(decided: dict[FibreClass, Decision], n: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Primary class (first reason in priority order, else AM), all reasons and confidence per fibre."""
    primary = np.full(n, FibreClass.AM.value, dtype=object)
    confidence = np.ones(n)
    undecided = np.ones(n, bool)
    for reason in PRIORITY:
        fired, conf = decided[reason]
        hit = undecided & fired
        primary[hit] = reason.value
        confidence[hit] = conf[hit]
        undecided &= ~hit
    am_conf = np.min(np.stack([decided[r][1] for r in PRIORITY]), axis=0)
    confidence[undecided] = am_conf[undecided]
    codes = np.stack([np.where(decided[r][0], r.value, "") for r in PRIORITY], axis=1)
    return primary, [";".join(c for c in row if c) for row in codes], confidence


def curate_fibres(table: pd.DataFrame, cfg: CurateConfig | None = None) -> pd.DataFrame:
    """Add ``curation_class``, ``reasons``, ``confidence`` and the slide-level features the rules use.

    Parameters
    ----------
    table : DataFrame
        One slide's measured fibres (:data:`~nclsm_scale.tables.MEASURE_COLUMNS`) and ``fold_fraction``.
    cfg : CurateConfig, optional
        Thresholds (human defaults).

    Returns
    -------
    DataFrame
        A copy of ``table`` with ``field_aspect_ratio``, ``aligned_aspect_ratio``,
        ``dark_blobs_per_mm2``, ``curation_class``, ``reasons`` and ``confidence`` added.
    """
    cfg = cfg or CurateConfig()
    out = table.copy()
    n = len(out)
    radius = cfg.ntm_field_radius_diameters * typical_diameter_um(out, cfg.debris_max_um2)
    cut = out["touches_image_border"].to_numpy(bool)  # its outline is not the fibre's shape
    field, aligned = field_elongation(out, radius if np.isfinite(radius) else 0.0, use=~cut)
    area = out["area_um2"].to_numpy(np.float64)
    blobs = out["dark_blobs"].to_numpy(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        density = np.where(area > 0, blobs / area * 1e6, 0.0)
    out["field_aspect_ratio"] = field
    out["aligned_aspect_ratio"] = aligned
    out["dark_blobs_per_mm2"] = density
    edge = np.zeros(n, bool)
    if cfg.edge_image_border:
        edge |= cut
    if cfg.edge_tissue_border:
        edge |= out["touches_tissue_border"].to_numpy(bool)
    decided = {
        FibreClass.DEBRIS: (area < cfg.debris_max_um2, _margin(area, cfg.debris_max_um2, cfg.confidence_band)),
        FibreClass.EDGE: (edge, np.ones(n)),
        FibreClass.FR: _fr_rule(out, cfg),
        FibreClass.FAM: _fam_rule(blobs, density, cfg),
        FibreClass.NTM: _ntm_rule(aligned, field, cut, cfg),
    }
    out["curation_class"], out["reasons"], out["confidence"] = _classify(decided, n)
    return out
