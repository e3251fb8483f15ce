"""Folded-tissue regions (FR) from a low-resolution image.

A fold lays a second layer of section on top of the first: within the band both
channels carry roughly twice the signal of unfolded tissue. :func:`detect_folds`
marks tissue whose smoothed, background-subtracted signal is at least
``min_ratio`` times the slide's tissue median in **every** channel (a bright
patch in one channel only, e.g. a cluster of mito-rich type I fibres, is not a
fold), then removes specks and fills holes. :func:`mask_window` brings the
low-resolution mask onto a full-resolution window for ``measure``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["detect_folds", "mask_window"]


def _tissue_smooth(img: np.ndarray, tissue: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian mean over tissue pixels only (normalised convolution)."""
    if sigma_px <= 0:
        return img
    w = ndimage.gaussian_filter(tissue.astype(np.float32), sigma_px)
    s = ndimage.gaussian_filter(np.where(tissue, img, 0.0).astype(np.float32), sigma_px)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(w > 1e-3, s / w, 0.0)


def detect_folds(
    image_lowres: np.ndarray,
    tissue_mask: np.ndarray,
    *,
    pixel_size_um: float,
    min_ratio: float = 1.4,
    smooth_um: float = 20.0,
    min_area_um2: float = 20000.0,
    background: list[float] | None = None,
) -> np.ndarray:
    """Boolean ``(Y, X)`` mask of folded tissue on the low-resolution grid.

    Parameters
    ----------
    image_lowres : ndarray, (C, Y, X)
        A low-resolution level of the slide (e.g. ~8 um/px).
    tissue_mask : ndarray, (Y, X) bool
        Tissue on the same grid.
    pixel_size_um : float
        Pixel size of this level.
    min_ratio : float
        Smallest ratio to the tissue median, required in every channel.
    smooth_um : float
        Gaussian sigma of the smoothing (about a fibre radius or more).
    min_area_um2 : float
        Smallest fold kept.
    background : list of float, optional
        Per-channel background subtracted first; default: the median of
        non-tissue pixels (0 when the image is all tissue).
    """
    img = np.asarray(image_lowres, np.float32)
    tissue = np.asarray(tissue_mask, bool)
    if img.ndim != 3 or img.shape[1:] != tissue.shape:
        raise ValueError(f"image {img.shape} and tissue mask {tissue.shape} do not match")
    if not tissue.any():
        return np.zeros(tissue.shape, bool)
    fold = tissue.copy()
    sigma = smooth_um / pixel_size_um
    for c in range(img.shape[0]):
        if background is not None:
            bg = float(background[c])
        else:
            bg = float(np.median(img[c][~tissue])) if (~tissue).any() else 0.0
        sm = _tissue_smooth(img[c] - bg, tissue, sigma)
        ref = float(np.median(sm[tissue]))
        fold &= sm >= min_ratio * ref
    radius = max(1, int(round(0.5 * sigma)))
    disk = np.hypot(*np.mgrid[-radius : radius + 1, -radius : radius + 1]) <= radius
    fold = ndimage.binary_opening(fold, disk)
    lab, n = ndimage.label(fold)
    if n:
        sizes = np.bincount(lab.ravel(), minlength=n + 1) * pixel_size_um**2
        keep = sizes >= min_area_um2
        keep[0] = False
        fold = keep[lab]
    return ndimage.binary_fill_holes(fold) & tissue


def mask_window(
    mask_lowres: np.ndarray, scale: float, origin_yx: tuple[int, int], shape_yx: tuple[int, int]
) -> np.ndarray:
    """Nearest-neighbour view of a low-resolution mask on a full-resolution window.

    ``scale`` is the low-resolution pixel size in full-resolution pixels; pixel
    ``(y, x)`` of the slide takes the low-resolution pixel containing its centre,
    so a window's values do not depend on where it is cut.
    """
    h, w = shape_yx
    oy, ox = origin_yx
    ly = np.clip(
        ((np.arange(oy, oy + h) + 0.5) / scale).astype(np.int64), 0, mask_lowres.shape[0] - 1
    )
    lx = np.clip(
        ((np.arange(ox, ox + w) + 0.5) / scale).astype(np.int64), 0, mask_lowres.shape[1] - 1
    )
    return np.asarray(mask_lowres, bool)[ly[:, None], lx[None, :]]
