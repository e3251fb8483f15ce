"""Training batches: random crops with geometric, stain and export augmentation.

A batch is a pure function of (pool, seed, step): the generator of step ``k`` is
``numpy.random.default_rng([seed, k])``, so training is reproducible and a resumed
run sees exactly the batches an uninterrupted one would. Export augmentation
(:func:`export_artefacts`) mimics published and exported images: resampled, 8-bit
RGB composites, JPEG-compressed.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from nclsm_scale.model.targets import fibre_targets

__all__ = ["Pool", "export_artefacts", "jpeg", "make_batch", "quantise_8bit", "resample_down_up"]

#: Chance that a patch goes through export artefacts, and of each step within.
EXPORT_P = 0.5
#: Share of training patches without their mito channel (zeros): membrane-only slides (membrane plus
#: fibre-type channels, the commonest real layout) must segment as well as membrane + mito ones.
MITO_DROP_P = 0.35
RESAMPLE_P = 0.5
JPEG_P = 0.6


@dataclass
class Pool:
    """A training image with its targets and a sample of fibre pixel positions."""

    image: np.ndarray  # (2, y, x) float32, normalised
    targets: np.ndarray  # (3, y, x) float32
    fibre_yx: np.ndarray  # (n, 2) int positions inside fibres

    @classmethod
    def from_sample(
        cls, image: np.ndarray, labels: np.ndarray, *, seed: int = 0, max_points: int = 20000
    ) -> Pool:
        """Targets and fibre positions of one (normalised image, labels) pair."""
        yx = np.argwhere(labels > 0)
        if len(yx) > max_points:
            yx = yx[np.random.default_rng(seed).choice(len(yx), max_points, replace=False)]
        return cls(np.ascontiguousarray(image, np.float32), fibre_targets(labels), yx)


def _crop(array: np.ndarray, cy: int, cx: int, r: int) -> np.ndarray:
    c, h, w = array.shape
    out = np.zeros((c, 2 * r, 2 * r), np.float32)
    y0, x0 = cy - r, cx - r
    sy0, sx0, sy1, sx1 = max(y0, 0), max(x0, 0), min(y0 + 2 * r, h), min(x0 + 2 * r, w)
    if sy1 > sy0 and sx1 > sx0:
        out[:, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = array[:, sy0:sy1, sx0:sx1]
    return out


def _gaussian(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[1]
    x = F.conv2d(
        F.pad(x, (radius, radius, 0, 0), mode="reflect"),
        k.view(1, 1, 1, -1).repeat(c, 1, 1, 1),
        groups=c,
    )
    return F.conv2d(
        F.pad(x, (0, 0, radius, radius), mode="reflect"),
        k.view(1, 1, -1, 1).repeat(c, 1, 1, 1),
        groups=c,
    )


def _stain(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Per-channel gamma, gain, offset, uneven illumination, blur and noise on ``(1, 2, p, p)``."""
    p = x.shape[-1]
    out = []
    for c in range(x.shape[1]):
        ch = x[:, c : c + 1].clamp(min=0)
        ch = ch ** float(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
        field = torch.from_numpy(rng.uniform(-0.3, 0.3, (1, 1, 3, 3)).astype(np.float32))
        field = 1 + F.interpolate(field, size=(p, p), mode="bilinear", align_corners=True)
        ch = ch * float(np.exp(rng.uniform(np.log(0.5), np.log(1.6)))) * field + float(
            rng.uniform(-0.1, 0.15)
        )
        out.append(ch)
    x = torch.cat(out, dim=1)
    if rng.random() < 0.5:
        x = _gaussian(x, float(rng.uniform(0.3, 1.5)))
    sigma = float(rng.uniform(0.0, 0.08))
    x = x + torch.from_numpy(rng.normal(0.0, 1.0, x.shape).astype(np.float32)) * sigma
    if rng.random() < 0.3:
        shot = float(rng.uniform(0.02, 0.1))
        x = (
            x
            + torch.from_numpy(rng.normal(0.0, 1.0, x.shape).astype(np.float32))
            * shot
            * x.clamp(min=0).sqrt()
        )
    return x


def quantise_8bit(x: torch.Tensor, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8-bit codes ``(c, p, p)`` uint8 of a ``(1, c, p, p)`` patch with an exporter's display range.

    Per channel the range runs from a low quantile (0-5 %) to a high one (98-100 %)
    times 0.8-1.1 (exporters often saturate highlights). Returns the codes and each
    channel's (lo, hi), which map codes back to the patch's scale.
    """
    v = x[0].detach().numpy().astype(np.float64)
    c = v.shape[0]
    lo = np.array([np.quantile(v[k], rng.uniform(0.0, 0.05)) for k in range(c)])
    hi = np.array([np.quantile(v[k], rng.uniform(0.98, 1.0)) for k in range(c)]) * rng.uniform(0.8, 1.1, c)
    hi = np.maximum(hi, lo + 1e-3)
    codes = np.rint((v - lo[:, None, None]) / (hi - lo)[:, None, None] * 255.0)
    return np.clip(codes, 0, 255).astype(np.uint8), lo, hi


def _from_codes(codes: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> torch.Tensor:
    v = codes.astype(np.float32) / np.float32(255.0) * (hi - lo)[:, None, None].astype(np.float32)
    return torch.from_numpy(v + lo[:, None, None].astype(np.float32))[None]


def jpeg(codes: np.ndarray, quality: int, subsampling: int) -> np.ndarray:
    """JPEG round trip of 8-bit channels ``(c, p, p)``, composed as RGB (R = channel 0, ...).

    Channels beyond three go through further RGB images. ``subsampling`` is PIL's (0 =
    4:4:4, 2 = 4:2:0: colour detail at half resolution, as most exporters write).
    """
    out = np.empty_like(codes)
    for k in range(0, codes.shape[0], 3):
        part = codes[k : k + 3]
        rgb = np.zeros((*codes.shape[1:], 3), np.uint8)
        rgb[..., : part.shape[0]] = np.moveaxis(part, 0, -1)
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG", quality=quality, subsampling=subsampling)
        buf.seek(0)
        back = np.asarray(Image.open(buf).convert("RGB"))
        out[k : k + 3] = np.moveaxis(back[..., : part.shape[0]], -1, 0)
    return out


def resample_down_up(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Shrink a ``(n, c, p, p)`` patch by ``factor`` (area average) and enlarge it back (bilinear)."""
    p = x.shape[-1]
    small = max(1, int(round(p / factor)))
    down = F.interpolate(x, size=(small, small), mode="area")
    return F.interpolate(down, size=(p, p), mode="bilinear", align_corners=False)


def export_artefacts(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Artefacts of exported images on a ``(1, c, p, p)`` patch, in the exporter's order.

    Half of the patches are shrunk and re-enlarged (factor 1.3-4, log-uniform: figures
    and downsampled exports), then every patch is quantised to 8 bits with a display
    range (:func:`quantise_8bit`) and 60 % are JPEG-compressed at quality 30-95 (4:2:0
    chroma subsampling in two thirds of them).
    """
    if rng.random() < RESAMPLE_P:
        x = resample_down_up(x, float(np.exp(rng.uniform(np.log(1.3), np.log(4.0)))))
    codes, lo, hi = quantise_8bit(x, rng)
    if rng.random() < JPEG_P:
        codes = jpeg(codes, int(rng.integers(30, 96)), 2 if rng.random() < 2.0 / 3.0 else 0)
    return _from_codes(codes, lo, hi)


def make_batch(
    pools: list[Pool],
    rng: np.random.Generator,
    *,
    batch_size: int,
    patch_px: int,
    scale_min: float = 0.7,
    scale_max: float = 1.4,
    augment: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(n, 2, p, p)`` and targets ``(n, 3, p, p)`` for one step.

    Each patch is centred on a random fibre pixel (85 %) or a random pixel, zoomed
    by a log-uniform factor in ``[scale_min, scale_max]`` (fibres look that much
    larger), rotated by a random angle and mirrored at random (bilinear
    resampling of image and targets alike), then stained (see :func:`_stain`),
    for half of the patches given export artefacts (:func:`export_artefacts`), and
    for :data:`MITO_DROP_P` of them stripped of the mito channel (all zeros, as the
    engine feeds a slide without one).
    """
    images, targets = [], []
    for _ in range(batch_size):
        pool = pools[int(rng.integers(len(pools)))]
        _, h, w = pool.image.shape
        if len(pool.fibre_yx) and rng.random() < 0.85:
            cy, cx = (int(v) for v in pool.fibre_yx[int(rng.integers(len(pool.fibre_yx)))])
        else:
            cy, cx = int(rng.integers(h)), int(rng.integers(w))
        src_per_out = (
            1.0 / float(np.exp(rng.uniform(np.log(scale_min), np.log(scale_max))))
            if augment
            else 1.0
        )
        theta = float(rng.uniform(0, 2 * np.pi)) if augment else 0.0
        flip = -1.0 if augment and rng.random() < 0.5 else 1.0
        r = int(math.ceil(patch_px / 2 * src_per_out * math.sqrt(2))) + 2
        both = np.concatenate([_crop(pool.image, cy, cx, r), _crop(pool.targets, cy, cx, r)])
        k = src_per_out * patch_px / (2 * r)
        cos, sin = math.cos(theta) * k, math.sin(theta) * k
        affine = torch.tensor(
            [[[cos * flip, -sin, 0.0], [sin * flip, cos, 0.0]]], dtype=torch.float32
        )
        grid = F.affine_grid(affine, [1, both.shape[0], patch_px, patch_px], align_corners=False)
        warped = F.grid_sample(
            torch.from_numpy(both)[None], grid, mode="bilinear", align_corners=False
        )
        img = _stain(warped[:, :2], rng) if augment else warped[:, :2]
        if augment and rng.random() < EXPORT_P:
            img = export_artefacts(img, rng)
        if augment and rng.random() < MITO_DROP_P:  # a membrane-only slide: zeros where the mito channel would be
            img = img.clone()
            img[:, 1] = 0.0
        images.append(img)
        targets.append(warped[:, 2:])
    return torch.cat(images), torch.cat(targets).clamp(0, 1)
