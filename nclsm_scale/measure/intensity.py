"""Per-fibre intensity features of a window: membrane band, interior statistics, dark blobs.

Inputs are a compact label image (IDs ``1..n``), its 4-connected border mask
(:func:`~nclsm_scale.measure.shape.perimeters`) and the fibres' bounding boxes.
Every value depends only on the fibre's pixels and a fixed neighbourhood
(:func:`~nclsm_scale.measure.fibres.context_px`), never on where the window is cut.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["band_masks", "channel_stats", "dark_blobs", "interior_medians"]

#: Gaussian truncation (in sigmas) of the dark-blob smoothing; sets the context it needs.
SMOOTH_TRUNCATE = 3.0


def band_masks(comp: np.ndarray, border: np.ndarray, ring_px: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ring, interior)``: fibre pixels within ``ring_px`` (4-connected steps) of the outline, and the rest."""
    interior = (comp != 0) & ~border
    for _ in range(ring_px - 1):
        e = interior.copy()
        e[1:] &= interior[:-1]
        e[:-1] &= interior[1:]
        e[:, 1:] &= interior[:, :-1]
        e[:, :-1] &= interior[:, 1:]
        e[0] = e[-1] = False
        e[:, 0] = e[:, -1] = False
        interior = e
    ring = (comp != 0) & ~interior
    return ring, interior


def channel_stats(
    comp: np.ndarray, mask: np.ndarray, channel: np.ndarray, n: int, background: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-fibre ``(count, mean, std)`` of ``channel - background`` over ``mask`` pixels."""
    idx = np.flatnonzero(mask)
    fib = comp.ravel()[idx].astype(np.int64) - 1
    v = channel.ravel()[idx].astype(np.float64) - background
    cnt = np.bincount(fib, minlength=n).astype(np.float64)
    s1 = np.bincount(fib, weights=v, minlength=n)
    s2 = np.bincount(fib, weights=v * v, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / cnt
        std = np.sqrt(np.maximum(s2 / cnt - mean * mean, 0.0))
    return cnt, mean, std


def interior_medians(
    comp: np.ndarray, interior: np.ndarray, channel: np.ndarray, bbox: np.ndarray, background: float
) -> np.ndarray:
    """Median of ``channel - background`` over each fibre's interior (NaN when empty)."""
    out = np.full(len(bbox), np.nan)
    for i, (y0, x0, y1, x1) in enumerate(bbox):
        sl = np.s_[y0:y1, x0:x1]
        v = channel[sl][interior[sl] & (comp[sl] == i + 1)]
        if v.size:
            out[i] = float(np.median(v)) - background
    return out


def dark_blobs(
    comp: np.ndarray,
    interior: np.ndarray,
    channel: np.ndarray,
    median: np.ndarray,
    *,
    background: float,
    smooth_px: float,
    ratio: float,
    min_blob_px: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-fibre ``(dark_fraction, dark_blob_count)`` of the interior (freeze-artefact holes).

    A pixel is dark when the smoothed, background-subtracted signal is below
    ``ratio`` times its fibre's interior median; dark 4-connected blobs of at
    least ``min_blob_px`` pixels are counted and their pixels summed.
    """
    n = median.size
    img = channel.astype(np.float32)
    if smooth_px > 0:
        img = ndimage.gaussian_filter(img, smooth_px, truncate=SMOOTH_TRUNCATE, mode="nearest")
    idx = np.flatnonzero(interior)
    fib = comp.ravel()[idx].astype(np.int64) - 1
    thr = ratio * np.where(np.isfinite(median), median, -np.inf) + background
    dark = np.zeros(comp.shape, bool)
    dark.ravel()[idx[img.ravel()[idx] < thr[fib]]] = True
    blobs, nblob = ndimage.label(dark)
    if nblob == 0:
        return np.zeros(n), np.zeros(n, np.int64)
    bidx = np.flatnonzero(blobs)
    bl = blobs.ravel()[bidx]
    size = np.bincount(bl, minlength=nblob + 1)
    owner = np.zeros(nblob + 1, np.int64)
    owner[bl] = comp.ravel()[bidx].astype(np.int64) - 1
    big = np.flatnonzero(size >= max(min_blob_px, 1))
    big = big[big > 0]
    count = np.bincount(owner[big], minlength=n).astype(np.int64)
    dark_px = np.bincount(owner[big], weights=size[big], minlength=n)
    inner = np.bincount(fib, minlength=n).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(inner > 0, dark_px / inner, 0.0)
    return frac, count
