"""Render a fluorescence image for a given fibre instance mask (e.g. real NCL-SM masks).

The mask is resampled to the output pixel size (labels by mode of up to 4 x 4
samples per output pixel when shrinking, nearest when enlarging), the signed
distance to each fibre's boundary comes from a Euclidean distance transform,
and the image is drawn with the same appearance model as procedural sections
(per-fibre levels, types and FAM damage from a hash of the source label id).
Tissue is every pixel within 15 um of a fibre plus the gaps that closing the
fibre mask by 50 um fills (perimysium between fascicles); vessels and nerves
are placed there where they clear every fibre.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import ndimage
from skimage.segmentation import find_boundaries

from nclsm_scale.config import SynthConfig
from nclsm_scale.errors import ValidationError
from nclsm_scale.synth.appearance import Appearance, finish, is_fam, render_layer
from nclsm_scale.synth.generate import (
    GT_CLASSES,
    TABLE_COLUMNS,
    SyntheticSection,
    geometry_columns,
    merge_stats,
    window_stats,
)
from nclsm_scale.synth.geometry import CAP_UM
from nclsm_scale.synth.stains import channel_names, fibre_types, type_names
from nclsm_scale.synth.structures import SampleFn, nuclei, render_sites, sites_in_window
from nclsm_scale.synth.texture import textures

TISSUE_MARGIN_UM = 15.0
CLOSING_UM = 50.0  # gaps up to ~100 um between fascicles are perimysium, not background


def resample_labels(labels: np.ndarray, scale: float) -> np.ndarray:
    """Resample a label image by ``scale`` (output px per input px): mode when shrinking.

    Each output pixel takes the most frequent label among ``k x k`` evenly spaced
    samples of its footprint (``k = min(ceil(1/scale), 4)``; ties go to the first
    sample); ``k = 1`` is nearest-neighbour sampling.
    """
    h, w = labels.shape
    oh, ow = max(1, round(h * scale)), max(1, round(w * scale))
    k = min(max(1, math.ceil(1.0 / scale - 1e-9)), 4)
    offsets = (np.arange(k) + 0.5) / k
    ys = [np.minimum(((np.arange(oh) + o) / scale).astype(np.int64), h - 1) for o in offsets]
    xs = [np.minimum(((np.arange(ow) + o) / scale).astype(np.int64), w - 1) for o in offsets]
    samples = [labels[np.ix_(yy, xx)] for yy in ys for xx in xs]
    best = samples[0].copy()
    mixed = np.zeros((oh, ow), bool)
    for cand in samples[1:]:
        mixed |= cand != best
    idx = np.nonzero(mixed)  # only footprints with several labels need a vote
    subs = [cand[idx] for cand in samples]
    top, top_count = subs[0], np.zeros(len(idx[0]), np.int32)
    for cand in subs:
        count = np.zeros(len(idx[0]), np.int32)
        for other in subs:
            count += cand == other
        better = count > top_count
        top = np.where(better, cand, top)
        top_count = np.maximum(count, top_count)
    best[idx] = top
    return best


def signed_edge_px(labels: np.ndarray) -> np.ndarray:
    """Distance to the own fibre's boundary (> 0 inside) or to the nearest fibre (< 0 outside)."""
    fg = labels > 0
    interior = fg & ~find_boundaries(labels, mode="inner", background=0)
    inside = ndimage.distance_transform_edt(interior) + 0.5
    outside = ndimage.distance_transform_edt(~fg) - 0.5
    return np.where(fg, inside, -outside)


def tissue_from_mask(fibres: np.ndarray, pixel_size_um: float) -> np.ndarray:
    """Tissue around a fibre mask: within 15 um of a fibre, or in a gap a 50 um closing fills."""
    outside = ndimage.distance_transform_edt(~fibres) * pixel_size_um
    dilated = outside <= CLOSING_UM
    closed = ndimage.distance_transform_edt(dilated) * pixel_size_um > CLOSING_UM
    return (outside < TISSUE_MARGIN_UM) | closed


def _lookup(
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray],
    p: int,
    fill: tuple[npt.ArrayLike, npt.ArrayLike, npt.ArrayLike],
) -> SampleFn:
    """Point lookup (nearest pixel) in key, edge and tissue arrays padded by ``p``; ``fill`` outside."""
    h, w = arrays[0].shape

    def at(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        iy = np.floor(np.asarray(y) + 0.5).astype(np.int64) + p
        ix = np.floor(np.asarray(x) + 0.5).astype(np.int64) + p
        ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
        iy, ix = np.clip(iy, 0, h - 1), np.clip(ix, 0, w - 1)
        key, edge, tissue = (np.where(ok, a[iy, ix], f) for a, f in zip(arrays, fill, strict=True))
        return key, edge, tissue

    return at


def render_from_mask(
    labels: np.ndarray,
    *,
    seed: int,
    mask_pixel_size_um: float,
    pixel_size_um: float,
    stains: Sequence[str] = ("membrane", "mito"),
    **appearance: Any,
) -> SyntheticSection:
    """Render an image whose fibres are the instances of ``labels``.

    Parameters
    ----------
    labels : ndarray (Y, X) of int
        Instance mask, 0 = background (e.g. NCL-SM ``S60_fibres.tiff``).
    seed : int
        Appearance seed (per-slide draws as in :class:`~nclsm_scale.config.SynthConfig`).
    mask_pixel_size_um, pixel_size_um : float
        Pixel size of the mask and of the output (the mask is resampled).
    stains : sequence of str
        Channels to render (see ``SynthConfig.stains``).
    **appearance
        Overrides of :class:`~nclsm_scale.synth.appearance.Appearance` fields
        (e.g. ``blur_sigma_px=1.0, fam_fraction=0.0``).

    Returns
    -------
    SyntheticSection
        Dense labels 1..N in source-label order; ``table.source_label`` holds the
        input ids; ``gt_class`` is FAM (freeze damage drawn), DEBRIS (< 150 um^2) or AM;
        ``gt_type`` the rendered fibre type; regions: 1 tissue (see the module), else 0.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValidationError(
            f"labels must be a 2-D integer array, got {labels.dtype} {labels.shape}."
        )
    if mask_pixel_size_um <= 0 or pixel_size_um <= 0:
        raise ValidationError("mask_pixel_size_um and pixel_size_um must be positive.")
    cfg = SynthConfig(seed=seed, pixel_size_um=pixel_size_um, size_px=(1, 1), stains=list(stains))
    app = Appearance.draw(cfg, **appearance)
    src = resample_labels(labels, mask_pixel_size_um / pixel_size_um).astype(np.uint64)
    h, w = src.shape
    edge = np.clip(signed_edge_px(src), -1e9, CAP_UM / pixel_size_um)
    tissue = tissue_from_mask(src > 0, pixel_size_um)
    p = app.pad_px
    key_p = np.pad(src, p, mode="edge")
    edge_p = np.pad(edge, p, mode="edge")
    tissue_p = np.pad(tissue, p, mode="edge")
    yy = np.broadcast_to(np.arange(-p, h + p, dtype=np.float64)[:, None], key_p.shape)
    xx = np.broadcast_to(np.arange(-p, w + p, dtype=np.float64)[None, :], key_p.shape)
    sample = _lookup((key_p, edge_p, tissue_p), p, (np.uint64(0), -1e9, False))

    def free(y: np.ndarray, x: np.ndarray) -> np.ndarray:
        key, _, tis = sample(y, x)
        return tis & (key == 0)

    hp, wp = h + 2 * p, w + 2 * p
    extra = render_sites(app, sites_in_window(app, -p, -p, hp, wp, free, {}), -p, -p, hp, wp)
    if "dapi" in app.stains:
        extra["nuclei"] = nuclei(app, -p, -p, hp, wp, sample)
    tex = textures(app, -p, -p, hp, wp)
    signal = render_layer(app, key_p, edge_p, tissue_p, tex, yy, xx, extra=extra)
    image = finish(app, signal, 0, 0, (h, w), tex["focus"])
    stats = merge_stats([window_stats(src, np.zeros((h, w), bool), 0, 0)])
    source = stats.index.to_numpy(np.uint64)
    fibres = np.searchsorted(source, src).astype(np.uint32) + np.uint32(1)
    fibres[src == 0] = 0
    cols = geometry_columns(stats, (h, w), pixel_size_um)
    fam = is_fam(source, seed, app.fam_fraction)
    debris = cols["area_um2"] < cfg.debris_max_um2
    cols["gt_class"] = pd.Categorical(
        np.select([debris, fam], ["DEBRIS", "FAM"], "AM"), categories=GT_CLASSES
    )
    table = pd.DataFrame(cols)[TABLE_COLUMNS]
    table["freeze_artefact"] = fam
    table["gt_type"] = type_names(fibre_types(source, seed, app.type_shares))
    table["source_label"] = source.astype(np.int64)
    regions = tissue.astype(np.uint8)
    return SyntheticSection(image, fibres, regions, table, pixel_size_um, channel_names(app.stains))
