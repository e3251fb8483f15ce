"""Synthetic sections measured the way the pipeline measures them, with their ground-truth classes.

Shared by the curation tests and ``bench/curation.py``: the section is rendered at
1 um/px (or ``pixel_size_um``), the tissue mask and folds are found on an 8 um/px
view as ``segment`` and ``curate`` find them, normalisation constants come from
that view, and every ground-truth fibre is measured (segmentation errors are left
out: this scores the curation alone).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from nclsm_scale.config import MeasureConfig, SynthConfig
from nclsm_scale.curate import detect_folds
from nclsm_scale.curate.driver import fold_counts
from nclsm_scale.curate.folds import fold_channels
from nclsm_scale.grid import lowres_window
from nclsm_scale.io.readers import assign_roles
from nclsm_scale.measure import measure_fibres
from nclsm_scale.normalise import compute_norm
from nclsm_scale.segment.regions import tissue_mask

#: Low-resolution pixel size (um) of the tissue and fold masks, like the regions level.
LOW_UM = 8.0


def measure_section(
    size_px: int = 2048, measure: MeasureConfig | None = None, **synth
) -> tuple[pd.DataFrame, np.ndarray, float]:
    """Measure every ground-truth fibre of a synthetic section; return (table, gt_class, pixel size).

    ``table.attrs["far_from_border"]``: fibres not on the image border with no true
    non-tissue within 15 um (whole fibres deep inside the section: never EDGE).
    """
    from nclsm_scale.synth import generate_section

    cfg = SynthConfig(**{"size_px": (size_px, size_px), "pixel_size_um": 1.0, "fam_fraction": 0.1, "folds": 2,
                         **synth})
    s = generate_section(cfg)
    px = cfg.pixel_size_um
    f = max(1, int(round(LOW_UM / px)))
    n_y, n_x = s.image.shape[1] // f, s.image.shape[2] // f
    low = s.image[:, : n_y * f, : n_x * f].astype(np.float32).reshape(-1, n_y, f, n_x, f).mean(axis=(2, 4))
    norm = compute_norm(low)
    scale = [h - lo for lo, h in zip(norm.lo, norm.hi, strict=True)]
    names = list(s.channel_names)
    roles = assign_roles(names)
    tissue = tissue_mask(low, px * f, 25.0) > 0
    planes = fold_channels(low, roles, norm.lo, scale)
    folds = detect_folds(planes, tissue, pixel_size_um=px * f, background=[0.0] * len(planes))
    t = measure_fibres(
        s.fibres,
        s.image,
        pixel_size_um=px,
        channel_roles=roles,
        channel_names=names,
        tissue_mask=lowres_window(tissue, f, (0, 0), s.fibres.shape),
        background=list(norm.lo),
        scale=scale,
        cfg=measure,
    )
    ids, counts = fold_counts(s.fibres, lowres_window(folds, f, (0, 0), s.fibres.shape))
    in_fold = np.zeros(len(t), np.int64)
    in_fold[t["fibre_id"].searchsorted(ids)] = counts
    t["fold_fraction"] = in_fold / t["area_seg_px"].to_numpy(np.float64)
    near = ndimage.binary_dilation(s.regions == 0, iterations=int(round(15 / px)))
    on_outline = np.bincount(s.fibres[near], minlength=len(t) + 1)[1:] > 0
    t.attrs["far_from_border"] = ~on_outline & ~s.table["touches_image_border"].to_numpy(bool)
    return t, s.table["gt_class"].astype(str).to_numpy(), px


def primary_without_edge(reasons: pd.Series) -> np.ndarray:
    """The first reason other than EDGE, else AM (the synthetic ground truth has no EDGE class)."""
    return np.array([next((r for r in cell.split(";") if r and r != "EDGE"), "AM") for cell in reasons])


def judgeable(gt: pd.Series | np.ndarray, not_judged: pd.Series) -> np.ndarray:
    """Fibres whose true class the slide can judge: not debris, and not a reason listed in ``not_judged``."""
    gt = np.asarray(gt).astype(str)
    unjudged = np.array([g in nj.split(";") for g, nj in zip(gt, not_judged, strict=True)], bool)
    return (gt != "DEBRIS") & ~unjudged
