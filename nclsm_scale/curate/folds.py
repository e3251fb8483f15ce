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

Tiles: the scores are computed tile by tile (:func:`fold_tiles`, :func:`tile_masks`),
each tile on a window with a halo of the Gaussians' reach (the smoothing, then the
reference twice), so memory follows the tile, not the slide, and ``curate`` fans
the tiles out to Dask. Only the threshold masks (bits packed along x until one
pass is chosen, then a byte a pixel) and the hysteresis on them are whole-level
(:func:`hysteresis`). A tile's core sees exactly the pixels the whole image gives
it, so the mask does not depend on the tiling (tested bit for bit). Written by
hand rather than with ``dask.array`` overlap because the second pass needs the
whole level's first-pass exclusion count before either pass's masks can be chosen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from nclsm_scale.normalise import cytoplasm_signal

__all__ = [
    "TILE_PX", "FoldTile", "detect_folds", "fold_channels", "fold_score", "fold_tiles", "hysteresis", "tile_masks",
]

#: Tile edge (low-resolution px) of the fold scores: a window of about 1550² px, some 120 MB of work.
TILE_PX = 1024
#: Gaussian truncation of :func:`scipy.ndimage.gaussian_filter` (its default), in sigmas.
_TRUNCATE = 4.0
#: First-pass scores above this leave the second pass's reference (:func:`fold_score`).
_EXCLUDE_RATIO = 1.25
#: Below this share of the tissue left for the second pass's reference, the first pass stands.
_MIN_REFERENCE_SHARE = 0.2


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


def _pass_scores(
    img: np.ndarray, tissue: np.ndarray, sig_s: float, sig_r: float, exclude_ratio: float
) -> tuple[np.ndarray, np.ndarray]:
    """Fold scores of both passes on one window (background already subtracted)."""
    local = [_masked_mean(img[c], tissue, sig_s) for c in range(img.shape[0])]

    def score(ref_mask: np.ndarray) -> np.ndarray:
        ratios = []
        for sm in local:
            ref = _masked_mean(np.nan_to_num(sm), ref_mask, sig_r)
            with np.errstate(invalid="ignore", divide="ignore"):
                ratios.append(np.where(ref > 0, sm / ref, np.nan))
        return np.where(tissue, np.fmin(*ratios) if len(ratios) == 2 else np.nanmin(ratios, axis=0), np.nan)

    first = score(tissue)
    return first, score(tissue & ~(first > exclude_ratio))


def _first_pass_stands(tissue_px: int, excluded_px: int) -> bool:
    """True when the first pass's exclusions leave too little tissue for a second reference."""
    return tissue_px - excluded_px < _MIN_REFERENCE_SHARE * tissue_px


def _background_free(image_lowres: np.ndarray, tissue: np.ndarray, background: Sequence[float] | None) -> np.ndarray:
    """``image_lowres`` as float32 less its per-channel background (default: median off tissue)."""
    img = np.asarray(image_lowres, np.float32)
    if img.ndim != 3 or img.shape[1:] != tissue.shape:
        raise ValueError(f"image {img.shape} and tissue mask {tissue.shape} do not match")
    if background is None:
        background = [float(np.median(img[c][~tissue])) if (~tissue).any() else 0.0 for c in range(img.shape[0])]
    return img - np.asarray(background, np.float32)[:, None, None]


def fold_score(
    image_lowres: np.ndarray,
    tissue_mask: np.ndarray,
    *,
    pixel_size_um: float,
    smooth_um: float = 24.0,
    reference_um: float = 250.0,
    exclude_ratio: float = _EXCLUDE_RATIO,
    background: list[float] | None = None,
) -> np.ndarray:
    """Per-pixel fold score: the smaller channel ratio of local signal to the shading-corrected reference.

    About 1 on ordinary tissue, about 2 inside a fold; NaN outside tissue.
    ``exclude_ratio``: pixels scoring above it in the first pass are left out of
    the reference of the second pass (a wide fold must not raise its own reference).
    """
    tissue = np.asarray(tissue_mask, bool)
    img = _background_free(image_lowres, tissue, background)
    first, second = _pass_scores(img, tissue, smooth_um / pixel_size_um, reference_um / pixel_size_um, exclude_ratio)
    excluded = int((tissue & (first > exclude_ratio)).sum())
    return first if _first_pass_stands(int(tissue.sum()), excluded) else second


@dataclass(frozen=True)
class FoldTile:
    """One tile of the low-resolution grid: its core and the window (core plus halo, clipped) it is read with."""

    y0: int
    x0: int
    y1: int
    x1: int
    wy0: int
    wx0: int
    wy1: int
    wx1: int

    @property
    def core(self) -> tuple[slice, slice]:
        """The core in the grid."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def inner(self) -> tuple[slice, slice]:
        """The core in the window."""
        return slice(self.y0 - self.wy0, self.y1 - self.wy0), slice(self.x0 - self.wx0, self.x1 - self.wx0)


def fold_tiles(
    shape: tuple[int, ...], tile_px: int, *, pixel_size_um: float, smooth_um: float, reference_um: float
) -> list[FoldTile]:
    """Tiles of ``tile_px`` covering a ``(Y, X)`` grid, each with the halo its scores need."""

    def reach(sigma_px: float) -> int:  # scipy.ndimage.gaussian_filter's kernel radius
        return int(_TRUNCATE * sigma_px + 0.5) if sigma_px > 0 else 0

    halo = reach(smooth_um / pixel_size_um) + 2 * reach(reference_um / pixel_size_um)
    ny, nx = int(shape[0]), int(shape[1])
    tiles = []
    for y0 in range(0, ny, tile_px):
        for x0 in range(0, nx, tile_px):
            y1, x1 = min(y0 + tile_px, ny), min(x0 + tile_px, nx)
            tiles.append(FoldTile(y0, x0, y1, x1, max(y0 - halo, 0), max(x0 - halo, 0),
                                  min(y1 + halo, ny), min(x1 + halo, nx)))
    return tiles


def tile_masks(
    image: np.ndarray,
    tissue: np.ndarray,
    tile: FoldTile,
    *,
    pixel_size_um: float,
    min_ratio: float,
    low_ratio: float,
    smooth_um: float,
    reference_um: float,
) -> tuple[np.ndarray, int]:
    """Threshold masks of one tile's core for both passes, and its first-pass exclusions.

    Parameters
    ----------
    image : ndarray, (C, h, w)
        The fold channels of the tile's window, background already subtracted.
    tissue : ndarray, (h, w) bool
        Tissue on the window.
    tile : FoldTile
    pixel_size_um, min_ratio, low_ratio, smooth_um, reference_um : float
        As in :func:`detect_folds`.

    Returns
    -------
    masks : ndarray, (2, 2, core h, ceil(core w / 8)) uint8
        ``[pass, (score >= low_ratio, score >= min_ratio)]``, bits packed along x
        (:func:`numpy.packbits`: an eighth of the bytes to send and hold).
    excluded : int
        Core tissue pixels the first pass leaves out of the second pass's reference.
    """
    scores = _pass_scores(np.asarray(image, np.float32), tissue, smooth_um / pixel_size_um,
                          reference_um / pixel_size_um, _EXCLUDE_RATIO)
    inner = tile.inner
    masks = np.stack([np.stack([sc[inner] >= low_ratio, sc[inner] >= min_ratio]) for sc in scores])
    return np.packbits(masks, axis=-1), int((tissue[inner] & (scores[0][inner] > _EXCLUDE_RATIO)).sum())


def hysteresis(
    tiles: Sequence[FoldTile],
    parts: Sequence[tuple[np.ndarray, int]],
    tissue_mask: np.ndarray,
    *,
    pixel_size_um: float,
    smooth_um: float = 24.0,
    min_area_um2: float = 5000.0,
) -> np.ndarray:
    """The fold mask from every tile's :func:`tile_masks`: seeded regions of the low threshold, cleaned.

    The low-threshold mask is opened with a disk of half ``smooth_um``; its
    regions holding a seed (min threshold) and at least ``min_area_um2`` are kept,
    their holes filled, within tissue.
    """
    tissue = np.asarray(tissue_mask, bool)
    chosen = 0 if _first_pass_stands(int(tissue.sum()), sum(n for _, n in parts)) else 1
    low, seed = np.zeros(tissue.shape, bool), np.zeros(tissue.shape, bool)
    for tile, (masks, _) in zip(tiles, parts, strict=True):
        low[tile.core], seed[tile.core] = np.unpackbits(masks[chosen], axis=-1, count=tile.x1 - tile.x0).view(bool)
    radius = max(1, int(round(0.5 * smooth_um / pixel_size_um)))
    disk = np.hypot(*np.mgrid[-radius : radius + 1, -radius : radius + 1]) <= radius
    low = ndimage.binary_opening(low, disk)
    lab, n = ndimage.label(low)
    if not n:
        return np.zeros(tissue.shape, bool)
    seeded = np.zeros(n + 1, bool)
    seeded[np.unique(lab[seed & low])] = True
    sizes = np.bincount(lab.ravel(), minlength=n + 1) * pixel_size_um**2
    keep = seeded & (sizes >= min_area_um2)
    keep[0] = False
    return ndimage.binary_fill_holes(keep[lab]) & tissue


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
    tile_px: int = TILE_PX,
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
    tile_px : int
        Edge of the tiles the scores are computed on (memory, not results).
    """
    tissue = np.asarray(tissue_mask, bool)
    img = _background_free(image_lowres, tissue, background)
    if not tissue.any():
        return np.zeros(tissue.shape, bool)
    tiles = fold_tiles(tissue.shape, tile_px, pixel_size_um=pixel_size_um, smooth_um=smooth_um,
                       reference_um=reference_um)
    kw = {"pixel_size_um": pixel_size_um, "min_ratio": min_ratio, "low_ratio": low_ratio, "smooth_um": smooth_um,
          "reference_um": reference_um}
    parts = [tile_masks(img[:, t.wy0 : t.wy1, t.wx0 : t.wx1], tissue[t.wy0 : t.wy1, t.wx0 : t.wx1], t, **kw)
             for t in tiles]
    return hysteresis(tiles, parts, tissue, pixel_size_um=pixel_size_um, smooth_um=smooth_um,
                      min_area_um2=min_area_um2)
