"""Fluorescence appearance model shared by the procedural generator and ``render_from_mask``.

Inputs are per-pixel geometry: a fibre identity (any nonzero ``uint64``; per-fibre
levels come from its hash), a signed distance to the fibre boundary in pixels
(> 0 inside, < 0 in the gaps) and a tissue flag. Channel 0 is the membrane
marker (dystrophin: thin uneven rings), channel 1 mitochondrial mass (VDAC:
granular cytoplasm, type I fibres brighter, subsarcolemmal enrichment). Slide
shading, PSF blur, shot and read noise are applied by :func:`finish`.
Every slide draws its own :class:`Appearance` from the seed within the ranges
of :class:`~nclsm_scale.config.SynthConfig`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
from scipy import ndimage

from nclsm_scale.config import SynthConfig
from nclsm_scale.synth.noise import (
    hash_ints,
    mix64,
    normal_approx,
    pixel_hash,
    salt,
    uniform,
    uniform_k,
    value_noise_grid,
)

BLUR_TRUNCATE = 3.0
CHANNEL_NAMES = ("dystrophin", "VDAC")


@dataclass(frozen=True)
class Appearance:
    """One slide's appearance parameters (pixels and counts)."""

    seed: int
    pixel_size_um: float
    fam_fraction: float
    blur_sigma_px: float
    membrane_width_px: float
    type1_fraction: float
    type_contrast: float
    membrane_peak: float
    mito_peak: float
    cytoplasm_membrane: float
    interstitium_membrane: float
    interstitium_mito: float
    background: float
    subsarcolemmal: float
    grain_px: float
    grain_amp: float
    unevenness: float
    gain: float
    read_noise: float
    offset: float
    illumination: float
    scan_tile_px: int
    vacuole_px: float
    fold_gain: float
    capillary_spacing_px: float
    oblique_broadening: float
    core_dimming: float
    rim_depth_px: float
    capillary_level: float
    crosstalk: float

    @classmethod
    def draw(cls, cfg: SynthConfig, **overrides: float) -> Appearance:
        """Draw the appearance of slide ``cfg.seed`` within the config's ranges."""
        base = np.array([salt(cfg.seed, "appearance")], np.uint64)
        draws = iter(float(uniform_k(base, k)[0]) for k in range(64))

        def pick(lo_hi: tuple[float, float]) -> float:
            lo, hi = lo_hi
            return lo + (hi - lo) * next(draws)

        px = cfg.pixel_size_um
        peak = pick(cfg.signal_range)
        values = dict(
            seed=cfg.seed,
            pixel_size_um=px,
            fam_fraction=cfg.fam_fraction,
            blur_sigma_px=pick(cfg.blur_sigma_um_range) / px,
            membrane_width_px=pick(cfg.membrane_width_um_range) / px,
            type1_fraction=pick(cfg.type1_fraction_range),
            type_contrast=pick(cfg.type_contrast_range),
            membrane_peak=peak,
            mito_peak=peak * pick((0.35, 1.0)),
            cytoplasm_membrane=pick((0.02, 0.1)),
            interstitium_membrane=pick((0.02, 0.08)),
            interstitium_mito=pick((0.03, 0.12)),
            background=pick((0.005, 0.03)),
            subsarcolemmal=pick((0.2, 0.9)),
            grain_px=pick((0.8, 2.0)) / px,
            grain_amp=pick((0.3, 0.7)),
            unevenness=pick((0.1, 0.35)),
            gain=pick((0.5, 4.0)),
            read_noise=pick(cfg.read_noise_range),
            offset=pick(cfg.offset_range),
            illumination=pick(cfg.illumination_range),
            scan_tile_px=int(round(pick((400.0, 1200.0)) / px)),
            vacuole_px=pick((4.0, 10.0)) / px,
            fold_gain=pick((0.7, 1.0)),
            capillary_spacing_px=pick((25.0, 45.0)) / px,
            oblique_broadening=pick((1.3, 2.2)),
            core_dimming=pick((0.0, 0.6)),
            rim_depth_px=pick((4.0, 12.0)) / px,
            capillary_level=pick((0.1, 0.5)),
            crosstalk=pick((0.0, 0.08)),
        )
        values.update(overrides)
        names = {f.name for f in fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise TypeError(f"unknown appearance parameters: {sorted(unknown)}")
        return cls(**values)

    @property
    def pad_px(self) -> int:
        """Halo each chunk needs so that blurring it equals blurring the whole slide."""
        return int(BLUR_TRUNCATE * self.blur_sigma_px + 0.5) + 1


def fibre_hash(key: np.ndarray, seed: int) -> np.ndarray:
    """Per-fibre appearance hash of fibre identities (0 stays meaningless)."""
    return hash_ints(salt(seed, "fibre-look"), key)


def is_fam(key: np.ndarray, seed: int, fam_fraction: float) -> np.ndarray:
    """Whether the fibres with these identities carry freeze artefacts (FAM)."""
    return (uniform_k(fibre_hash(key, seed), 2) < fam_fraction) & (np.asarray(key) != 0)


def is_type1(key: np.ndarray, seed: int, type1_fraction: float) -> np.ndarray:
    """Whether the fibres are mito-bright (type I)."""
    return uniform_k(fibre_hash(key, seed), 0) < type1_fraction


def _bump(t: np.ndarray) -> np.ndarray:
    t = np.minimum(t * t, 1.0)
    return (1.0 - t) * (1.0 - t)


def textures(app: Appearance, y0: int, x0: int, h: int, w: int) -> dict[str, np.ndarray]:
    """Position-only texture fields of a window (float32)."""
    s = app.seed
    g1 = value_noise_grid(y0, x0, h, w, app.grain_px, salt(s, "grain1"))
    g2 = value_noise_grid(y0, x0, h, w, 2.3 * app.grain_px, salt(s, "grain2"))
    reticular = np.float32(1.0) - np.float32(2.0) * np.abs(g2 - np.float32(0.5))
    grain = np.float32(0.5) * g1 + np.float32(0.5) * reticular
    ring = value_noise_grid(y0, x0, h, w, 9.0 / app.pixel_size_um, salt(s, "ring"))
    inter = value_noise_grid(y0, x0, h, w, 4.0 / app.pixel_size_um, salt(s, "inter"))
    return {"grain": grain, "ring": ring, "inter": inter}


def blobs(
    y: np.ndarray,
    x: np.ndarray,
    spacing_px: float,
    salt_: int,
    radius: tuple[float, float],
    p: float,
) -> np.ndarray:
    """Depth in [0, 1] of round blobs on a jittered lattice at points (1-D arrays).

    One blob per lattice cell with probability ``p``, radius a uniform share
    ``radius`` of the spacing; a pure function of position.
    """
    fy, fx = y / spacing_px, x / spacing_px
    cy, cx = np.floor(fy).astype(np.int64), np.floor(fx).astype(np.int64)
    depth = np.zeros(y.shape, np.float64)
    lo, hi = radius
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            h = hash_ints(salt_, cy + dy + (1 << 31), cx + dx + (1 << 31))
            py = cy + dy + 0.5 + 0.7 * (uniform(h) - 0.5)
            px = cx + dx + 0.5 + 0.7 * (uniform_k(h, 0) - 0.5)
            r = lo + (hi - lo) * uniform_k(h, 1)
            present = uniform_k(h, 2) < p
            t = np.sqrt((fy - py) ** 2 + (fx - px) ** 2) / r
            depth = np.maximum(depth, np.where(present & (t < 1.0), 1.0 - t * t * t, 0.0))
    return depth


def vacuoles(app: Appearance, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Freeze-artefact vacuole depth in [0, 1] at integer pixel positions (1-D arrays)."""
    return blobs(y, x, app.vacuole_px, salt(app.seed, "vacuole"), (0.15, 0.5), 0.75)


def capillaries(app: Appearance, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Capillary profiles (3-4 um, mito-positive endothelium) at interstitial points."""
    spacing = app.capillary_spacing_px
    r = 2.0 / app.pixel_size_um / spacing
    return blobs(y, x, spacing, salt(app.seed, "capillary"), (0.7 * r, 1.1 * r), 0.8)


def render_layer(
    app: Appearance,
    key: np.ndarray,
    edge_px: np.ndarray,
    tissue: np.ndarray,
    tex: dict[str, np.ndarray],
    y: np.ndarray,
    x: np.ndarray,
    oblique: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Noise-free, unblurred signal ``(2, *key.shape)`` float32 of one tissue layer.

    ``key`` identifies fibres (0 = none); ``tex`` holds :func:`textures` values at
    the same points and ``y, x`` their integer pixel positions (for vacuoles).
    ``oblique`` maps fibre keys to "cut obliquely" flags: such fibres get broader,
    softer membrane rings (the sarcolemma is cut at a slant).
    """
    f32 = np.float32
    codes, uniq = pd.factorize(key.ravel(), sort=True)
    inv = codes.reshape(key.shape)
    fh = fibre_hash(uniq, app.seed)
    type1 = uniform_k(fh, 0) < app.type1_fraction
    mito_level = np.where(type1, 1.0, 1.0 / app.type_contrast) * (0.85 + 0.3 * uniform_k(fh, 1))
    ring_gain = 0.65 + 0.6 * uniform_k(fh, 3)
    ssl = app.subsarcolemmal * np.where(type1, 1.0, 0.5) * (0.5 + uniform_k(fh, 4))
    dim = np.where(type1, 0.3, 1.0) * app.core_dimming * (0.6 + 0.8 * uniform_k(fh, 6))
    present = uniq != 0
    fam = (uniform_k(fh, 2) < app.fam_fraction) & present
    mito_level, ring_gain, ssl, dim = (
        np.where(present, a, 0.0).astype(f32) for a in (mito_level, ring_gain, ssl, dim)
    )

    e = edge_px.astype(f32)
    is_fibre = key != 0
    broad = np.ones(len(uniq), f32)
    if oblique is not None:
        broad = np.where(oblique(uniq) & present, f32(app.oblique_broadening), broad).astype(f32)
    half = f32(max(0.5 * app.membrane_width_px, 1.0) + 0.5) * broad[inv]
    ring = _bump((e - f32(0.5 * app.membrane_width_px)) / half) / np.sqrt(broad)[inv]
    ring *= tissue.astype(f32)
    uneven = f32(1.0 - app.unevenness) + f32(2.0 * app.unevenness) * tex["ring"]
    membrane = ring * ring_gain[inv] * uneven
    membrane += np.where(is_fibre, f32(app.cytoplasm_membrane), f32(0.0))
    inter = (f32(0.6) + f32(0.8) * tex["inter"]) * tissue.astype(f32)
    membrane += np.where(is_fibre, f32(0.0), f32(app.interstitium_membrane) * inter)

    depth_ss = f32(2.5 / app.pixel_size_um)
    e_in = np.maximum(e, f32(0.0))
    ss = _bump(e_in / depth_ss) * ssl[inv]
    rim = f32(1.0) - np.minimum(e_in / f32(app.rim_depth_px), f32(1.0))
    profile = f32(1.0) - dim[inv] * (f32(1.0) - rim * rim * (f32(3.0) - f32(2.0) * rim))
    grain = f32(1.0 - app.grain_amp) + f32(2.0 * app.grain_amp) * tex["grain"]
    mito = np.where(is_fibre, mito_level[inv] * (profile + ss) * grain, f32(0.0))
    mito += np.where(is_fibre, f32(0.0), f32(app.interstitium_mito) * inter * grain)

    fam_px = fam[inv] & is_fibre
    if fam_px.any():
        idx = np.nonzero(fam_px)
        hole = vacuoles(app, y[idx].astype(np.float64), x[idx].astype(np.float64)).astype(f32)
        keep = f32(1.0) - f32(0.9) * hole
        mito[idx] *= keep
        membrane[idx] = (
            membrane[idx] * keep + f32(0.25) * hole * (f32(1.0) - hole) * ring_gain[inv[idx]]
        )
    gap = np.nonzero(~is_fibre & tissue & (edge_px > -3.0 / app.pixel_size_um))
    if len(gap[0]):
        cap = capillaries(app, y[gap].astype(np.float64), x[gap].astype(np.float64))
        mito[gap] += f32(app.capillary_level) * cap.astype(f32)
    bg = f32(app.background)
    out = np.empty((2, *key.shape), f32)
    xt = f32(app.crosstalk)
    out[0] = (membrane + xt * mito + bg) * f32(app.membrane_peak)
    out[1] = (mito + xt * membrane + bg) * f32(app.mito_peak)
    return out


def shading(
    app: Appearance, y0: int, x0: int, h: int, w: int, size_px: tuple[int, int]
) -> np.ndarray:
    """Multiplicative illumination (slide-wide gradient and scanner-tile vignetting), float32."""
    f32 = np.float32
    big = max(size_px) / 2.5
    slide = value_noise_grid(y0, x0, h, w, big, salt(app.seed, "illum"))
    t = app.scan_tile_px
    fy = (np.arange(y0, y0 + h) % t).astype(f32) / f32(t) * f32(2.0) - f32(1.0)
    fx = (np.arange(x0, x0 + w) % t).astype(f32) / f32(t) * f32(2.0) - f32(1.0)
    vignette = f32(0.25) * (fy * fy)[:, None] + f32(0.25) * (fx * fx)[None, :]
    s = f32(app.illumination)
    return (f32(1.0) - s * (f32(1.0) - slide)) * (f32(1.0) - s * vignette)


def finish(
    app: Appearance, signal: np.ndarray, y0: int, x0: int, size_px: tuple[int, int]
) -> np.ndarray:
    """Shade, blur, crop the halo, add shot and read noise: ``(2, h, w)`` uint16.

    ``signal`` covers the window grown by :attr:`Appearance.pad_px` on every side;
    ``y0, x0`` is the window's (unpadded) origin.
    """
    p = app.pad_px
    _, hp, wp = signal.shape
    h, w = hp - 2 * p, wp - 2 * p
    signal = signal * shading(app, y0 - p, x0 - p, hp, wp, size_px)[None]
    out = np.empty((2, h, w), np.uint16)
    for c in range(2):
        blurred = ndimage.gaussian_filter(
            signal[c], app.blur_sigma_px, truncate=BLUR_TRUNCATE, mode="nearest"
        )[p : p + h, p : p + w]
        hsh = pixel_hash(y0, x0, h, w, salt(app.seed, f"noise{c}"))
        shot = np.sqrt(np.maximum(blurred, np.float32(0.0)) * np.float32(app.gain))
        val = blurred + shot * normal_approx(hsh)
        val += np.float32(app.read_noise) * normal_approx(mix64(hsh))
        val += np.float32(app.offset)
        out[c] = np.clip(np.rint(val), 0, 65535).astype(np.uint16)
    return out


__all__ = [
    "CHANNEL_NAMES",
    "Appearance",
    "finish",
    "fibre_hash",
    "is_fam",
    "is_type1",
    "render_layer",
    "textures",
    "vacuoles",
]
