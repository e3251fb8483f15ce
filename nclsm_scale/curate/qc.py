"""Slide quality control: whether there is muscle on the slide, and how good the image is.

Each curated slide gets the measures of :data:`~nclsm_scale.tables.QC_COLUMNS`
(stored in curate's table metadata, then in the slide table):

- **tissue**: the share and area of the slide under the tissue mask (``labels/regions``);
- **membrane contrast**: per fibre, ``(ring - interior) / (ring + interior)`` of the
  membrane channel's medians (background subtracted by ``measure``), the median over
  the fibres larger than DEBRIS. A membrane stain is what outlines fibres: on
  muscle the sarcolemma is several times brighter than the cytoplasm (0.46-0.78 on
  the synthetic sections of every look, 0.73 and 0.90 on the two real images), while
  outlines the network draws on noise or an unstained slide have none (about 0);
- **focus**: the share of the membrane channel's structure energy at 0.5-2 um among
  0.5-8 um (band-pass Gaussian differences, the noise's own energy in each band
  subtracted), on up to :data:`FOCUS_TILES` tiles of tissue at the level nearest
  1 um/px. Thin in-focus membranes put much of it at the fine scale; blur moves it
  to the coarse one (synthetic sections at a PSF sigma of 0.5 um: 0.44-0.53; 1 um:
  0.27-0.32; 1.5 um: 0.16-0.18; 2 um: 0.10; 2.5 um: 0.07). NaN when the pixels are too coarse
  (finest level above :data:`FOCUS_MAX_PIXEL_UM`), there is no membrane channel or
  tissue, or the fine-scale structure is below the noise;
- **rejected fraction**: the share of fibres the per-fibre rules reject.

A slide is **flagged** (``qc_flag``, the codes below ';'-joined) when it has no
tissue (:data:`NO_TISSUE`: less than ``curate.qc_min_tissue_um2``), no fibres
(:data:`NO_FIBRES`) or no membrane contrast (:data:`NO_MEMBRANE_CONTRAST`: below
``curate.qc_min_membrane_contrast``): a blank slide, noise, a slide of another stain.
Every fibre of a flagged slide is then class QC (:func:`reject_slide`), so it has no
analysable fibres. Focus and the rejected fraction are reported, not flagged: a
slightly blurred slide or an oblique one still has fibres worth measuring.
Another tissue whose cells a membrane stain outlines is not recognised by these
measures.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from nclsm_scale.config import CurateConfig
from nclsm_scale.slide import Slide
from nclsm_scale.tables import FibreClass

__all__ = [
    "FOCUS_MAX_PIXEL_UM",
    "FOCUS_TILES",
    "NO_FIBRES",
    "NO_MEMBRANE_CONTRAST",
    "NO_TISSUE",
    "SlideQC",
    "focus_share",
    "focus_tiles",
    "membrane_contrast",
    "reject_slide",
    "slide_qc",
    "tissue_picks",
]

#: Flag: less tissue than ``curate.qc_min_tissue_um2``.
NO_TISSUE = "no_tissue"
#: Flag: segmentation found no fibres.
NO_FIBRES = "no_fibres"
#: Flag: the fibres' outlines are not brighter than their interiors in the membrane channel.
NO_MEMBRANE_CONTRAST = "no_membrane_contrast"
#: Number of tissue tiles the focus is measured on.
FOCUS_TILES = 8
#: Edge (um) of a focus tile.
FOCUS_TILE_UM = 256.0
#: Focus is measured at the level nearest 1 um/px; slides whose finest level is coarser than this are not judged.
FOCUS_MAX_PIXEL_UM = 1.5
#: Gaussian sigmas (um) bounding the fine (0.5-2 um) and coarse (2-8 um) bands of the focus measure.
FOCUS_BANDS_UM = (0.5, 2.0, 8.0)


@dataclass(frozen=True)
class SlideQC:
    """One slide's quality measures (see the module docstring); ``flag`` is '' when the slide passes."""

    qc_flag: str
    qc_tissue_fraction: float
    qc_membrane_contrast: float
    qc_focus: float
    qc_rejected_fraction: float

    def record(self) -> dict[str, str | float]:
        """The measures as curate's table metadata and the slide table hold them (``tables.QC_COLUMNS``)."""
        return asdict(self)


def membrane_contrast(table: pd.DataFrame, min_area_um2: float = 0.0) -> float:
    """Median over fibres of at least ``min_area_um2`` of ``(ring - interior) / (ring + interior)`` (membrane medians).

    NaN without a membrane channel or fibres with a positive sum.

    >>> t = pd.DataFrame({"area_um2": [900.0, 800.0], "membrane_ring_median": [300.0, 200.0],
    ...                   "membrane_interior_median": [100.0, 100.0]})
    >>> round(membrane_contrast(t), 3)
    0.417
    """
    if "membrane_ring_median" not in table.columns or not len(table):
        return math.nan
    big = table[table["area_um2"].to_numpy(np.float64) >= min_area_um2]
    use = big if len(big) else table
    ring = use["membrane_ring_median"].to_numpy(np.float64)
    interior = use["membrane_interior_median"].to_numpy(np.float64)
    total = ring + interior
    ok = np.isfinite(total) & (total > 0)
    return float(np.median((ring[ok] - interior[ok]) / total[ok])) if ok.any() else math.nan


@functools.cache
def _noise_gain(sigma_a_px: float, sigma_b_px: float) -> float:
    """Variance of white noise of unit variance after the band filter ``G(a) - G(b)``."""
    r = int(4 * sigma_b_px) + 2
    delta = np.zeros((2 * r + 1, 2 * r + 1))
    delta[r, r] = 1.0
    h = ndi.gaussian_filter(delta, sigma_a_px) - ndi.gaussian_filter(delta, sigma_b_px)
    return float((h**2).sum())


def focus_share(tiles: list[np.ndarray], pixel_size_um: float) -> float:
    """Noise-corrected share of the 0.5-2 um band in the 0.5-8 um structure energy of ``tiles`` (2-D, one channel).

    The noise variance comes from the median absolute 2 x 2 diagonal difference of
    each tile (zero for smooth structure, the pixel variance for white noise).
    NaN when the fine band holds no more energy than its noise.
    """
    if not tiles:
        return math.nan
    s1, s2, s3 = (s / pixel_size_um for s in FOCUS_BANDS_UM)
    fine = coarse = noise = 0.0
    count = 0
    for tile in tiles:
        t = np.asarray(tile, np.float64)
        g1, g2, g3 = (ndi.gaussian_filter(t, s) for s in (s1, s2, s3))
        d = (t[1:, 1:] - t[1:, :-1] - t[:-1, 1:] + t[:-1, :-1]) / 2.0
        noise += (1.4826 * float(np.median(np.abs(d - np.median(d))))) ** 2 * t.size
        fine += float(np.var(g1 - g2)) * t.size
        coarse += float(np.var(g2 - g3)) * t.size
        count += t.size
    noise /= count
    fine_noise = noise * _noise_gain(s1, s2)
    fine_signal = fine / count - fine_noise
    coarse_signal = coarse / count - noise * _noise_gain(s2, s3)
    if not fine_signal > fine_noise or not fine_signal + coarse_signal > 0:
        return math.nan
    return float(np.clip(fine_signal / (fine_signal + coarse_signal), 0.0, 1.0))


def tissue_picks(tissue: np.ndarray, n: int) -> list[tuple[int, int]]:
    """``(row, col)`` of up to ``n`` tissue pixels at evenly spaced ranks in raster order.

    The ranks are found through per-row counts, without listing every tissue pixel
    (a regions level can hold 10^8 of them).

    >>> tissue_picks(np.array([[0, 1, 1], [0, 0, 0], [1, 0, 1]], bool), 3)
    [(0, 1), (2, 0), (2, 2)]
    """
    row_ends = np.cumsum(np.count_nonzero(tissue, axis=1))
    total = int(row_ends[-1]) if row_ends.size else 0
    picks = []
    for i in np.unique(np.linspace(0, total - 1, min(n, total)).round().astype(int)).tolist():
        row = int(np.searchsorted(row_ends, i, side="right"))
        picks.append((row, int(np.flatnonzero(tissue[row])[i - (int(row_ends[row - 1]) if row else 0)])))
    return picks


def focus_tiles(slide: Slide, tissue: np.ndarray, regions_level: int) -> tuple[list[np.ndarray], float]:
    """Membrane-channel tiles of tissue at the level nearest 1 um/px, and that level's pixel size.

    Up to :data:`FOCUS_TILES` tiles of :data:`FOCUS_TILE_UM`, centred on tissue pixels
    of the regions level at evenly spaced ranks (raster order) and kept inside the
    slide. No tiles without a membrane channel, tissue, or a fine enough level.
    """
    if "membrane" not in slide.roles or not tissue.any():
        return [], math.nan
    level = slide.level_nearest(1.0)
    px = slide.pixel_size_um(level)
    if px > FOCUS_MAX_PIXEL_UM:
        return [], px
    _, ny, nx = slide.levels[level].shape
    edge = min(int(round(FOCUS_TILE_UM / px)), ny, nx)
    scale = slide.pixel_size_um(regions_level) / px
    channel = slide.roles["membrane"]
    tiles = []
    for row, col in tissue_picks(tissue, FOCUS_TILES):
        cy, cx = int((row + 0.5) * scale), int((col + 0.5) * scale)
        y0, x0 = min(max(cy - edge // 2, 0), ny - edge), min(max(cx - edge // 2, 0), nx - edge)
        tiles.append(slide.read(level, y0, x0, y0 + edge, x0 + edge)[channel])
    return tiles, px


def slide_qc(
    curated: pd.DataFrame, tissue: np.ndarray, regions_pixel_size_um: float, focus: float, cfg: CurateConfig
) -> SlideQC:
    """The slide's QC measures and flag from its curated fibres (before :func:`reject_slide`) and tissue mask.

    ``curated`` holds measure's columns and ``curation_class``; ``tissue`` is the
    boolean tissue mask at the regions level.
    """
    tissue_um2 = float(np.count_nonzero(tissue)) * regions_pixel_size_um**2
    contrast = membrane_contrast(curated, cfg.debris_max_um2)
    flags = []
    if tissue_um2 < cfg.qc_min_tissue_um2:
        flags.append(NO_TISSUE)
    if not len(curated):
        flags.append(NO_FIBRES)
    if contrast < cfg.qc_min_membrane_contrast:  # NaN (no membrane channel) is not judged
        flags.append(NO_MEMBRANE_CONTRAST)
    rejected = float((curated["curation_class"] != FibreClass.AM.value).mean()) if len(curated) else math.nan
    return SlideQC(
        qc_flag=";".join(flags),
        qc_tissue_fraction=float(np.count_nonzero(tissue)) / tissue.size if tissue.size else math.nan,
        qc_membrane_contrast=contrast,
        qc_focus=focus,
        qc_rejected_fraction=rejected,
    )


def reject_slide(curated: pd.DataFrame) -> pd.DataFrame:
    """Every fibre of a slide that failed QC as class QC (confidence 1), its own reasons kept after ``QC``.

    >>> t = pd.DataFrame({"curation_class": ["AM", "NTM"], "reasons": ["", "NTM"], "confidence": [0.9, 0.8]})
    >>> reject_slide(t)[["curation_class", "reasons", "confidence"]].to_dict("list")
    {'curation_class': ['QC', 'QC'], 'reasons': ['QC', 'QC;NTM'], 'confidence': [1.0, 1.0]}
    """
    out = curated.copy()
    code = FibreClass.QC.value
    out["curation_class"] = code
    out["reasons"] = [f"{code};{r}" if r else code for r in out["reasons"].astype(str)]
    out["confidence"] = 1.0
    return out
