"""Folded-tissue regions (FR) from a low-resolution image.

A fold lays a second layer of section on top of the first: within the band both
channels carry roughly twice the signal of the tissue around it.
:func:`detect_folds` compares, per channel, the background-subtracted signal
averaged over tissue at about a fibre's scale (``smooth_um``) with a **local**
reference: the tissue average at a much larger scale (``reference_um``), taken
without the candidate fold pixels (two passes), so slide-wide shading and
scanner-tile vignetting cancel while a band a few fibres wide stands out. The
fold score is the smaller ratio of the two channels (a bright patch in one
channel only, e.g. a cluster of mito-rich type I fibres, is not a fold).
Hysteresis: regions with a score of at least ``min_ratio`` grow into connected
tissue scoring at least ``low_ratio``; specks are opened away, small regions
dropped and holes filled. :func:`nclsm_scale.grid.lowres_window` brings the
low-resolution mask onto a window of the segmentation level.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from nclsm_scale.normalise import cytoplasm_signal

__all__ = ["detect_folds", "fold_channels", "fold_score"]


def _masked_mean(img: np.ndarray, mask: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian mean of ``img`` over ``mask`` pixels only (normalised convolution); NaN where empty."""
    m = mask.astype(np.float32)
    if sigma_px <= 0:
        return np.where(mask, img, np.nan)
    w = ndimage.gaussian_filter(m, sigma_px, mode="constant")
    s = ndimage.gaussian_filter(np.where(mask, img, 0.0).astype(np.float32), sigma_px, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(w > 1e-3, s / w, np.nan)


def fold_channels(
    image: np.ndarray, roles: Mapping[str, int], background: Sequence[float], scale: Sequence[float]
) -> np.ndarray:
    """The channels a fold doubles, background-free: the membrane and the cytoplasm signal.

    A folded second layer brightens the membrane and the fibres' cytoplasm; stains
    of some fibres only (myosin isoforms) or of sparse structures (nuclei) do not
    double everywhere, so they are not compared one by one: the cytoplasm is the
    mito channel or the brightest myosin channel (:func:`~nclsm_scale.normalise.cytoplasm_signal`).
    A slide with neither role keeps all its channels.
    """
    planes = []
    if "membrane" in roles:
        c = roles["membrane"]
        planes.append((image[c].astype(np.float32) - np.float32(background[c])) / np.float32(scale[c]))
    cyto = cytoplasm_signal(image, roles, background, scale)
    if cyto is not None:
        planes.append(cyto)
    if not planes:
        return np.stack([(image[c].astype(np.float32) - np.float32(background[c])) / np.float32(scale[c])
                         for c in range(image.shape[0])])
    return np.stack(planes)


def fold_score(
    image_lowres: np.ndarray,
    tissue_mask: np.ndarray,
    *,
    pixel_size_um: float,
    smooth_um: float = 24.0,
    reference_um: float = 250.0,
    exclude_ratio: float = 1.25,
    background: list[float] | None = None,
) -> np.ndarray:
    """Per-pixel fold score: the smaller channel ratio of local signal to the shading-corrected reference.

    About 1 on ordinary tissue, about 2 inside a fold; NaN outside tissue.
    ``exclude_ratio``: pixels scoring above it in the first pass are left out of
    the reference of the second pass (a wide fold must not raise its own reference).
    """
    img = np.asarray(image_lowres, np.float32)
    tissue = np.asarray(tissue_mask, bool)
    if img.ndim != 3 or img.shape[1:] != tissue.shape:
        raise ValueError(f"image {img.shape} and tissue mask {tissue.shape} do not match")
    sig_s, sig_r = smooth_um / pixel_size_um, reference_um / pixel_size_um
    local = []
    for c in range(img.shape[0]):
        if background is not None:
            bg = float(background[c])
        else:
            bg = float(np.median(img[c][~tissue])) if (~tissue).any() else 0.0
        local.append(_masked_mean(img[c] - bg, tissue, sig_s))
    ref_mask = tissue
    score = np.full(tissue.shape, np.nan)
    for _ in range(2):
        ratios = []
        for sm in local:
            ref = _masked_mean(np.nan_to_num(sm), ref_mask, sig_r)
            with np.errstate(invalid="ignore", divide="ignore"):
                ratios.append(np.where(ref > 0, sm / ref, np.nan))
        score = np.where(tissue, np.fmin(*ratios) if len(ratios) == 2 else np.nanmin(ratios, axis=0), np.nan)
        ref_mask = tissue & ~(score > exclude_ratio)
        if ref_mask.sum() < 0.2 * tissue.sum():
            break
    return score


def detect_folds(
    image_lowres: np.ndarray,
    tissue_mask: np.ndarray,
    *,
    pixel_size_um: float,
    min_ratio: float = 1.5,
    low_ratio: float = 1.25,
    smooth_um: float = 24.0,
    reference_um: float = 250.0,
    min_area_um2: float = 5000.0,
    background: list[float] | None = None,
) -> np.ndarray:
    """Boolean ``(Y, X)`` mask of folded tissue on the low-resolution grid.

    Parameters
    ----------
    image_lowres : ndarray, (C, Y, X)
        A low-resolution level of the slide (about 4-8 um/px).
    tissue_mask : ndarray, (Y, X) bool
        Tissue on the same grid.
    pixel_size_um : float
        Pixel size of this level.
    min_ratio, low_ratio : float
        Hysteresis thresholds of :func:`fold_score` (seed and extent of a fold).
    smooth_um : float
        Gaussian sigma of the local signal (about a fibre radius).
    reference_um : float
        Gaussian sigma of the shading-corrected reference (several fold widths).
    min_area_um2 : float
        Smallest fold kept.
    background : list of float, optional
        Per-channel background subtracted first; default: the median of
        non-tissue pixels (0 when the image is all tissue).
    """
    tissue = np.asarray(tissue_mask, bool)
    if not tissue.any():
        if np.ndim(image_lowres) != 3 or np.shape(image_lowres)[1:] != tissue.shape:
            raise ValueError(f"image {np.shape(image_lowres)} and tissue mask {tissue.shape} do not match")
        return np.zeros(tissue.shape, bool)
    score = fold_score(image_lowres, tissue, pixel_size_um=pixel_size_um, smooth_um=smooth_um,
                       reference_um=reference_um, background=background)
    score = np.nan_to_num(score, nan=0.0)
    low = score >= low_ratio
    radius = max(1, int(round(0.5 * smooth_um / pixel_size_um)))
    disk = np.hypot(*np.mgrid[-radius : radius + 1, -radius : radius + 1]) <= radius
    low = ndimage.binary_opening(low, disk)
    lab, n = ndimage.label(low)
    if not n:
        return np.zeros(tissue.shape, bool)
    seeded = np.zeros(n + 1, bool)
    seeded[np.unique(lab[(score >= min_ratio) & low])] = True
    sizes = np.bincount(lab.ravel(), minlength=n + 1) * pixel_size_um**2
    keep = seeded & (sizes >= min_area_um2)
    keep[0] = False
    return ndimage.binary_fill_holes(keep[lab]) & tissue
