"""Curation of a slide's fibre table: AM or rejection reasons (NCL-SM scheme plus NF, EDGE and DEBRIS).

Each rule scores one physically meaningful, per-slide normalised feature
against a threshold of :class:`~nclsm_scale.config.CurateConfig`, as a log
ratio (``score >= 0``: the reason applies; AND is the smaller score, OR the
larger). A reason whose evidence the slide cannot give is **not judged**
(score NaN, listed in ``not_judged``): no cytoplasm channel (mito or myosin),
or a pixel too coarse to resolve the structure the rule looks for.

- NF (not a fibre): interstitium, perimysium, vessels, background cut into a
  segment have no fibre cytoplasm: the object's cytoplasm signal is below
  ``nf_max_cytoplasm`` of the slide's fibres (their 75th percentile). Judged
  with a cytoplasm signal.
- DEBRIS: CSA below ``debris_max_um2``.
- EDGE: the fibre touches the image border or non-tissue (it is cut).
- FR: a folded second layer covers it. By default the bundled tree ensemble
  decides (:mod:`nclsm_scale.curate.fr_model`: fold share, ridges, membrane and
  cytoplasm against the neighbours', shape; the score is its log-odds over its
  threshold's). The rules, its fallback (``fr_method = "rules"``): its
  sarcolemma crosses the fibre (``interior_membrane_fraction`` at least
  ``fr_min_interior_membrane``), or a weaker share of it
  (``fr_min_interior_membrane_in_fold``) lies inside a detected low-resolution
  fold (``fold_fraction`` at least ``fr_min_fold_fraction``). Where the ridges
  cannot be judged (no membrane interior, pixels coarser than
  ``fr_ridge_max_pixel_size_um``) the fold alone decides, with either method.
- FAM: ice-crystal holes, which are empty (near background), unlike ordinary
  mitochondrial texture: at least ``fam_min_holes`` holes covering at least
  ``fam_min_hole_fraction`` of the interior (one or two nuclei are not an
  artefact). Judged with a mito channel (myosin stains are too mottled) at pixels
  of at most ``fam_max_pixel_size_um``.
- NTM: an oblique profile is elongated compared with the slide's transverse
  fibres: its ellipse aspect ratio is at least ``ntm_relative_aspect_ratio``
  times the slide's reference (the 25th percentile over whole fibres: the
  rounder quarter is cut transversely; at most ``ntm_max_reference_aspect_ratio``,
  as on a slide cut mostly obliquely that quarter is oblique too) and at least
  ``ntm_min_aspect_ratio``;
  and either its neighbourhood is elongated too (coherent elongation at least
  ``ntm_min_field_aspect_ratio``: oblique sectioning is a property of the
  fascicle) or it is clearly elongated alone (``ntm_alone_factor`` times the
  threshold). A fibre cut by the image border has no shape of its own: an
  oblique neighbourhood (field at least ``ntm_cut_field_aspect_ratio``) decides.

A fibre may have several reasons (``reasons``, in :data:`~nclsm_scale.tables.PRIORITY`
order); the primary class is the first. ``confidence`` is the calibrated
probability that the primary class is right (:mod:`nclsm_scale.curate.calibration`):
for a rejection, its reason's probability at its score; for AM, the probability
that none of the judged reasons applies.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from nclsm_scale.config import CurateConfig
from nclsm_scale.curate.calibration import Calibration
from nclsm_scale.curate.fr_model import TreeEnsemble, fr_features, ridges_judged
from nclsm_scale.tables import PRIORITY, FibreClass

__all__ = ["curate_fibres", "field_elongation", "reason_scores", "typical_diameter_um"]

logger = logging.getLogger(__name__)

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


def _log_ratio(value: np.ndarray, threshold: float) -> np.ndarray:
    """``log(value / threshold)`` with values floored at a tiny positive number (NaN stays NaN)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(np.maximum(value, 1e-12) / max(threshold, 1e-12))


def _reference_fibres(table: pd.DataFrame, cfg: CurateConfig) -> np.ndarray:
    """Whole fibres the slide's references come from: not cut by the image border, not debris."""
    whole = ~table["touches_image_border"].to_numpy(bool)
    return whole & (table["area_um2"].to_numpy(np.float64) >= cfg.debris_max_um2)


def _quantile(values: np.ndarray, q: float) -> float:
    finite = values[np.isfinite(values)]
    return float(np.quantile(finite, q)) if finite.size else float("nan")


def reason_scores(
    table: pd.DataFrame, cfg: CurateConfig, pixel_size_um: float | None, fr_model: TreeEnsemble | None = None
) -> pd.DataFrame:
    """Per fibre and reason, the rule's score (``>= 0``: applies; NaN: not judged), and the features behind it.

    Adds to a copy of ``table`` the derived features ``field_aspect_ratio``,
    ``aligned_aspect_ratio``, ``relative_aspect_ratio`` and ``cytoplasm_rel`` and
    one ``score_<reason>`` column per reason of :data:`~nclsm_scale.tables.PRIORITY`.
    FR is scored by ``fr_model`` where given (see :func:`curate_fibres`), else by the rules.
    """
    out = table.copy()
    n = len(out)
    ref = _reference_fibres(out, cfg)
    area = out["area_um2"].to_numpy(np.float64)
    cut = out["touches_image_border"].to_numpy(bool)  # its outline is not the fibre's shape
    radius = cfg.ntm_field_radius_diameters * typical_diameter_um(out, cfg.debris_max_um2)
    field, aligned = field_elongation(out, radius if np.isfinite(radius) else 0.0, use=~cut)
    ar = np.clip(np.nan_to_num(out["ellipse_aspect_ratio"].to_numpy(np.float64), nan=1.0, posinf=_MAX_AR), 1.0,
                 _MAX_AR)
    ar_ref = min(_quantile(ar[ref], 0.25) if ref.any() else 1.0, cfg.ntm_max_reference_aspect_ratio)
    cyto = out["cytoplasm_interior_median"].to_numpy(np.float64)
    cyto_ref = _quantile(cyto[ref], 0.75)
    with np.errstate(divide="ignore", invalid="ignore"):
        cyto_rel = cyto / cyto_ref if np.isfinite(cyto_ref) and cyto_ref > 0 else np.full(n, np.nan)
    out["field_aspect_ratio"] = field
    out["aligned_aspect_ratio"] = aligned
    out["relative_aspect_ratio"] = ar / ar_ref
    out["cytoplasm_rel"] = cyto_rel
    fine = pixel_size_um is None or pixel_size_um <= cfg.fam_max_pixel_size_um
    ntm_threshold = max(cfg.ntm_min_aspect_ratio, cfg.ntm_relative_aspect_ratio * ar_ref)

    edge = np.zeros(n, bool)
    if cfg.edge_image_border:
        edge |= cut
    if cfg.edge_tissue_border:
        edge |= out["touches_tissue_border"].to_numpy(bool)
    scores = {
        FibreClass.NF: _log_ratio(np.full(n, cfg.nf_max_cytoplasm), 1.0) - _log_ratio(cyto_rel, 1.0),
        FibreClass.DEBRIS: _log_ratio(np.full(n, cfg.debris_max_um2), 1.0) - _log_ratio(area, 1.0),
        FibreClass.EDGE: np.where(edge, 1.0, -1.0),
        FibreClass.FR: _fr_score(out, cfg, pixel_size_um, fr_model),
        FibreClass.FAM: _fam_score(out, cfg) if fine else np.full(n, np.nan),
        FibreClass.NTM: _ntm_score(ar, field, cut, ntm_threshold, cfg),
    }
    for reason, score in scores.items():
        out[f"score_{reason.value}"] = score
    return out


def _fr_score(
    table: pd.DataFrame, cfg: CurateConfig, pixel_size_um: float | None, fr_model: TreeEnsemble | None
) -> np.ndarray:
    """FR: the model's score where ridges are judged; else strong ridges, or weaker ones inside a detected fold.

    Where the ridges cannot be judged, the fold alone decides.
    """
    fold = np.nan_to_num(table["fold_fraction"].to_numpy(np.float64), nan=0.0)
    in_fold = _log_ratio(np.maximum(fold, 1e-3), cfg.fr_min_fold_fraction)
    judged = ridges_judged(table, cfg, pixel_size_um)
    if fr_model is not None:
        score = in_fold.copy()
        if judged.any():
            x = fr_features(table, cfg)[list(fr_model.features)].to_numpy(np.float64)
            score[judged] = fr_model.score(x[judged])
        return score
    ridges = table["interior_membrane_fraction"].to_numpy(np.float64)
    strong = _log_ratio(np.maximum(ridges, 1e-4), cfg.fr_min_interior_membrane)
    weak = _log_ratio(np.maximum(ridges, 1e-4), max(cfg.fr_min_interior_membrane_in_fold, 1e-4))
    return np.where(judged, np.maximum(strong, np.minimum(in_fold, weak)), in_fold)


def _fam_score(table: pd.DataFrame, cfg: CurateConfig) -> np.ndarray:
    """FAM: enough holes, covering enough of the interior (NaN without a mito channel).

    Holes are read in the mito channel only: myosin stains are mottled in ordinary
    fibres (their dark patches match synthetic freeze damage in size and depth on
    the real membrane + MyHC image), so a slide without mito cannot judge FAM.
    """
    if "mito_interior_median" not in table.columns:
        return np.full(len(table), np.nan)
    frac = table["hole_fraction"].to_numpy(np.float64)
    count = table["hole_count"].to_numpy(np.float64)
    score = np.minimum(_log_ratio(count + 0.5, cfg.fam_min_holes), _log_ratio(np.maximum(frac, 1e-5),
                                                                             cfg.fam_min_hole_fraction))
    return np.where(np.isfinite(frac), score, np.nan)


def _ntm_score(ar: np.ndarray, field: np.ndarray, cut: np.ndarray, threshold: float, cfg: CurateConfig) -> np.ndarray:
    """NTM: elongated against the slide's transverse fibres, with an elongated neighbourhood or clearly alone."""
    own = _log_ratio(ar, threshold)
    support = np.maximum(_log_ratio(field, cfg.ntm_min_field_aspect_ratio),
                         _log_ratio(ar, cfg.ntm_alone_factor * threshold))
    return np.where(cut, _log_ratio(field, cfg.ntm_cut_field_aspect_ratio), np.minimum(own, support))


def curate_fibres(
    table: pd.DataFrame,
    cfg: CurateConfig | None = None,
    *,
    pixel_size_um: float | None = None,
    calibration: Calibration | None = None,
    fr_model: TreeEnsemble | None = None,
) -> pd.DataFrame:
    """Add ``curation_class``, ``reasons``, ``confidence``, ``not_judged`` and the features the rules use.

    Parameters
    ----------
    table : DataFrame
        One slide's measured fibres (:data:`~nclsm_scale.tables.MEASURE_COLUMNS`) and ``fold_fraction``.
    cfg : CurateConfig, optional
        Thresholds (human defaults).
    pixel_size_um : float, optional
        Pixel size the fibres were measured at: reasons whose structures it cannot
        resolve are not judged. None judges every reason the channels allow.
    calibration : Calibration, optional
        Score-to-probability maps; default the bundled ones (:func:`Calibration.bundled`).
    fr_model : TreeEnsemble, optional
        The FR model when ``cfg.fr_method`` is ``"model"``; default the bundled one
        (:meth:`TreeEnsemble.bundled`; without it the rules decide, with a warning).

    Returns
    -------
    DataFrame
        A copy of ``table`` with the derived features, ``score_<reason>`` per reason,
        ``curation_class``, ``reasons``, ``confidence`` and ``not_judged`` added.
    """
    cfg = cfg or CurateConfig()
    calibration = calibration or Calibration.bundled()
    if cfg.fr_method == "model" and fr_model is None:
        fr_model = TreeEnsemble.bundled()
        if fr_model is None:
            logger.warning("no bundled FR model (curate/fr_model.json): FR is decided by the rules")
    out = reason_scores(table, cfg, pixel_size_um, fr_model if cfg.fr_method == "model" else None)
    n = len(out)
    primary = np.full(n, FibreClass.AM.value, dtype=object)
    confidence = np.ones(n)
    undecided = np.ones(n, bool)
    p_none = np.ones(n)
    codes, missing = [], []
    for reason in PRIORITY:
        score = out[f"score_{reason.value}"].to_numpy(np.float64)
        judged = np.isfinite(score)
        fired = judged & (score >= 0)
        p = calibration.probability(reason.value, score)
        hit = undecided & fired
        primary[hit] = reason.value
        confidence[hit] = p[hit]
        undecided &= ~hit
        p_none *= np.where(judged, 1.0 - p, 1.0)
        codes.append(np.where(fired, reason.value, ""))
        missing.append(np.where(judged, "", reason.value))
    confidence[undecided] = p_none[undecided]
    for cls in np.unique(primary):
        sel = primary == cls
        confidence[sel] = calibration.class_probability(str(cls), confidence[sel])
    out["curation_class"] = primary
    out["reasons"] = [";".join(c for c in row if c) for row in zip(*codes, strict=True)]
    out["confidence"] = confidence
    out["not_judged"] = [";".join(c for c in row if c) for row in zip(*missing, strict=True)]
    return out
