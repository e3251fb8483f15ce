"""Helpers of the segmentation tests: fibre masks and the renumbering-invariant comparison."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from nclsm_scale.segment.cores import Cores

NCLSM = Path("/work/shared/data/ncl-sm")


def voronoi_fibres(
    shape: tuple[int, int], spacing_px: int, gap_px: int, seed: int, touching: float = 0.2
) -> np.ndarray:
    """Polygonal fibres (jittered Voronoi cells) separated by gaps; a share of them touch."""
    rng = np.random.default_rng(seed)
    ys, xs = np.meshgrid(
        np.arange(spacing_px // 2, shape[0], spacing_px),
        np.arange(spacing_px // 2, shape[1], spacing_px),
        indexing="ij",
    )
    pts = np.stack([ys.ravel(), xs.ravel()], 1)
    pts = pts + rng.integers(-spacing_px // 3, spacing_px // 3 + 1, pts.shape)
    pts = np.clip(pts, 0, np.array(shape) - 1)
    ids = np.zeros(shape, dtype=np.int64)
    ids[pts[:, 0], pts[:, 1]] = np.arange(1, len(pts) + 1)
    _, (iy, ix) = ndi.distance_transform_edt(ids == 0, return_indices=True)
    lab = ids[iy, ix]
    edge = np.zeros(shape, dtype=bool)
    edge[:-1] |= lab[:-1] != lab[1:]
    edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    keep = rng.random(len(pts) + 1) < touching
    lab[ndi.binary_dilation(edge, iterations=gap_px) & ~keep[lab]] = 0
    return lab.astype(np.uint32)


def nclsm_crop(name: str, y0: int, x0: int, size: int, factor: int = 4) -> np.ndarray:
    """A crop of a real NCL-SM mask, downsampled by ``factor`` (about 1 um/px)."""
    import tifffile

    with tifffile.TiffFile(NCLSM / f"{name}_fibres.tiff") as tif:
        full = tif.asarray()
    return full[y0 : y0 + size * factor : factor, x0 : x0 + size * factor : factor].astype(np.uint32)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when ``a`` and ``b`` are equal up to a bijection of values mapping 0 to 0."""
    code = np.unique(a.ravel().astype(np.int64) << 32 | b.ravel().astype(np.int64))
    pa, pb = code >> 32, code & 0xFFFFFFFF
    bijective = np.unique(pa).size == code.size and np.unique(pb).size == code.size
    return bool(bijective and np.all((pa == 0) == (pb == 0)))


def core_image(cores: Cores) -> np.ndarray:
    """int32 image of a window's cores: each pixel's core, 0 elsewhere."""
    out = np.zeros(cores.shape, np.int32)
    cores.paint(out, np.arange(cores.n + 1, dtype=np.int32))
    return out
