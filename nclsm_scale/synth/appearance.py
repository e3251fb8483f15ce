"""Fluorescence appearance model shared by the procedural generator and ``render_from_mask``.

Inputs are per-pixel geometry: a fibre identity (any nonzero ``uint64``; per-fibre
levels and the ground-truth type come from its hash), a signed distance to the
fibre boundary in pixels (> 0 inside, < 0 in the gaps) and a tissue flag, plus
the fields of vessels, nerves and nuclei (:mod:`.structures`). The channels are
the slide's stains (:mod:`.stains`): a membrane band of varying width, position,
brightness and continuity; connective tissue that is dark (dystrophin-like) or
membrane-bright (laminin/WGA-like), with unstained patches and tears; granular,
mottled mito texture with subsarcolemmal rims and dark cores, brightness by type
(I > IIa > IIx) with a broad per-fibre spread; MyHC channels bright in fibres of
their type; nuclei; autofluorescent granules; and ice-crystal holes and cracks in
freeze-artefact (FAM) fibres only. Slide shading, PSF blur with out-of-focus
regions, shot and read noise are applied by :func:`finish`. Every slide draws its
own :class:`Appearance` from the seed within the ranges of
:class:`~nclsm_scale.config.SynthConfig`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from nclsm_scale.config import SynthConfig
from nclsm_scale.synth.noise import (
    exp_approx,
    hash_ints,
    mix64,
    normal_approx,
    pixel_hash,
    salt,
    slide_uniform,
    uniform_k,
    value_noise_grid,
)
from nclsm_scale.synth.stains import (
    MYHC_POSITIVE,
    OXIDATIVE_RANK,
    fibre_hash,
    fibre_types,
    type_shares,
)
from nclsm_scale.synth.texture import blobs, freeze_damage

BLUR_TRUNCATE = 3.0
f32 = np.float32


@dataclass(frozen=True)
class Appearance:
    """One slide's appearance parameters (pixels, counts and shares)."""

    seed: int
    pixel_size_um: float
    stains: tuple[str, ...]
    fam_fraction: float
    type_shares: tuple[float, ...]
    blur_sigma_px: float
    defocus_share: float
    defocus_sigma_px: float
    defocus_scale_px: float
    membrane_width_px: float
    width_variation: float
    ring_offset: float
    ring_unevenness: float
    ring_breaks: float
    oblique_broadening: float
    cytoplasm_membrane: float
    connective: float
    endomysium_px: float
    perimysium_level: float
    interstitium: float
    unstained_share: float
    patch_px: float
    tear_width: float
    background: float
    type_contrast: float
    mito_spread: float
    subsarcolemmal: float
    core_dimming: float
    rim_depth_px: float
    grain_px: float
    grain_amp: float
    mottle_px: float
    mottle_amp: float
    myhc_background: float
    myhc_spread: float
    speckle_spacing_px: float
    speckle_density: float
    speckle_level: float
    vacuole_scale: float
    capillary_spacing_px: float
    capillary_level: float
    site_spacing_px: float
    vessel_diameter_px: tuple[float, float]
    nerve_diameter_px: tuple[float, float]
    nerve_share: float
    nucleus_spacing_px: float
    peaks: tuple[float, ...]
    crosstalk: float
    gain: float
    read_noise: float
    offset: float
    illumination: float
    scan_tile_px: int
    fold_gain: float

    @classmethod
    def draw(cls, cfg: SynthConfig, **overrides: float) -> Appearance:
        """Draw the appearance of slide ``cfg.seed`` within the config's ranges.

        Every parameter has its own named random stream, so adding a parameter never
        changes the others. Fixed ranges below are broad on purpose: they cover
        what published muscle sections show across stains, species and scanners.
        """
        seed, px = cfg.seed, cfg.pixel_size_um

        def pick(name: str, lo_hi: tuple[float, float]) -> float:
            lo, hi = lo_hi
            return lo + (hi - lo) * slide_uniform(seed, f"look-{name}")

        def on(name: str, share: float) -> bool:
            return slide_uniform(seed, f"look-on-{name}") < share

        peak = pick("signal", cfg.signal_range)
        values: dict[str, Any] = dict(
            seed=seed,
            pixel_size_um=px,
            stains=tuple(cfg.stains),
            fam_fraction=cfg.fam_fraction,
            type_shares=type_shares(cfg),
            blur_sigma_px=pick("blur", cfg.blur_sigma_um_range) / px,
            # half of the slides are in focus everywhere
            defocus_share=pick("defocus", cfg.defocus_share_range) if on("defocus", 0.5) else 0.0,
            defocus_sigma_px=pick("defocus-sigma", cfg.defocus_sigma_um_range) / px,
            defocus_scale_px=pick("defocus-scale", (150.0, 600.0)) / px,  # tilt and uneven thickness
            membrane_width_px=pick("membrane-width", cfg.membrane_width_um_range) / px,
            width_variation=pick("width-variation", (0.0, 0.6)),
            # ring centre in band widths inside the label outline: outlines drawn just inside
            # the membrane (NCL-SM) put it outside (< 0), outlines on the membrane near 0.5
            ring_offset=pick("ring-offset", (-0.6, 1.2)),
            ring_unevenness=pick("ring-uneven", (0.1, 0.6)),
            ring_breaks=pick("ring-breaks", (0.0, 0.35)),
            oblique_broadening=pick("oblique", (1.3, 2.2)),
            cytoplasm_membrane=pick("cytoplasm", (0.01, 0.12)),
            # skewed to dark (mean a third of the range): dystrophin-like stains are the most common
            connective=cfg.connective_membrane_range[0]
            + (cfg.connective_membrane_range[1] - cfg.connective_membrane_range[0])
            * slide_uniform(seed, "look-connective") ** 2,
            endomysium_px=pick("endomysium", (1.0, 4.0)) / px,
            perimysium_level=pick("perimysium", (0.2, 1.0)),
            interstitium=pick("interstitium", cfg.interstitium_range),
            unstained_share=pick("unstained", cfg.unstained_share_range),
            patch_px=pick("patch", (20.0, 80.0)) / px,
            tear_width=pick("tear", (0.005, 0.03)) if on("tear", 0.4) else 0.0,
            background=pick("background", (0.0, 0.03)),
            type_contrast=pick("type-contrast", cfg.type_contrast_range),
            mito_spread=pick("mito-spread", cfg.mito_spread_range),
            subsarcolemmal=pick("ssl", (0.1, 0.9)),
            core_dimming=pick("core", (0.0, 0.7)),
            rim_depth_px=pick("rim", (4.0, 12.0)) / px,
            grain_px=pick("grain", (0.6, 2.0)) / px,
            # log-normal texture with bounded exponents (grain <= 0.68, mottle <= 0.5): it varies
            # smoothly between ~0.3 and ~3 times the mean, never reaching the near-black,
            # steep-rimmed holes of freeze artefacts (<= 0.08 of the mean)
            grain_amp=pick("grain-amp", (0.15, 0.45)),
            mottle_px=pick("mottle", (3.0, 15.0)) / px,
            mottle_amp=pick("mottle-amp", (0.05, 0.5)),
            myhc_background=pick("myhc-bg", cfg.myhc_background_range),
            myhc_spread=pick("myhc-spread", (0.08, 0.25)),
            speckle_spacing_px=pick("speckle", (8.0, 25.0)) / px,
            speckle_density=pick("speckle-density", (0.0, 0.4)),
            speckle_level=pick("speckle-level", (0.1, 0.6)),
            vacuole_scale=pick("vacuole", (0.7, 1.4)),
            capillary_spacing_px=pick("capillary", (25.0, 45.0)) / px,
            capillary_level=pick("capillary-level", (0.1, 0.5)),
            site_spacing_px=pick("sites", cfg.vessel_spacing_um_range) / px,
            vessel_diameter_px=tuple(d / px for d in cfg.vessel_diameter_um_range),
            nerve_diameter_px=tuple(d / px for d in cfg.nerve_diameter_um_range),
            nerve_share=pick("nerves", cfg.nerve_share_range),
            nucleus_spacing_px=pick("nuclei", (9.0, 12.0)) / px,  # ~3 myonuclei per fibre profile
            peaks=tuple(peak if s == "membrane" else peak * pick(f"peak-{s}", (0.35, 1.0)) for s in cfg.stains),
            crosstalk=pick("crosstalk", (0.0, 0.08)),
            gain=pick("gain", (0.5, 4.0)),
            read_noise=pick("read-noise", cfg.read_noise_range),
            offset=pick("offset", cfg.offset_range),
            illumination=pick("illumination", cfg.illumination_range),
            scan_tile_px=int(round(pick("scan-tile", (400.0, 1200.0)) / px)),
            fold_gain=pick("fold", (0.7, 1.0)),
        )
        values.update(overrides)
        names = {f.name for f in fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise TypeError(f"unknown appearance parameters: {sorted(unknown)}")
        return cls(**values)

    @property
    def focus_sigma_px(self) -> float:
        """Total blur sigma in out-of-focus regions."""
        return math.hypot(self.blur_sigma_px, self.defocus_sigma_px)

    @property
    def pad_px(self) -> int:
        """Halo each chunk needs so that blurring it equals blurring the whole slide."""
        sigma = self.focus_sigma_px if self.defocus_share > 0.0 else self.blur_sigma_px
        return int(BLUR_TRUNCATE * sigma + 0.5) + 1

    @property
    def has_sites(self) -> bool:
        """Whether the slide has vessel and nerve sites."""
        return self.site_spacing_px > 0.0 and max(self.vessel_diameter_px + self.nerve_diameter_px) > 0.0


def is_fam(key: np.ndarray, seed: int, fam_fraction: float) -> np.ndarray:
    """Whether the fibres with these identities carry freeze artefacts (FAM)."""
    return (uniform_k(fibre_hash(key, seed), 2) < fam_fraction) & (np.asarray(key) != 0)


def _bump(t: np.ndarray) -> np.ndarray:
    t = np.minimum(t * t, f32(1.0))
    return (f32(1.0) - t) * (f32(1.0) - t)


def _step(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, f32(0.0), f32(1.0))
    return t * t * (f32(3.0) - f32(2.0) * t)


def capillaries(app: Appearance, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Capillary profiles (3-4 um, mito-positive endothelium) at interstitial points."""
    spacing = app.capillary_spacing_px
    r = 2.0 / app.pixel_size_um / spacing
    return blobs(y, x, spacing, salt(app.seed, "capillary"), (0.7 * r, 1.1 * r), 0.8)


@dataclass
class _Fibres:
    """Per-fibre levels of the distinct keys of a layer (float32, 0 where there is no fibre)."""

    fh: np.ndarray
    types: np.ndarray
    present: np.ndarray
    fam: np.ndarray
    mito: np.ndarray
    ring_gain: np.ndarray
    width_gain: np.ndarray
    ssl: np.ndarray
    dim: np.ndarray
    grain: np.ndarray
    mottle: np.ndarray
    broad: np.ndarray


def _fibre_levels(
    app: Appearance, uniq: np.ndarray, oblique: Callable[[np.ndarray], np.ndarray] | None
) -> _Fibres:
    """Per-fibre draws; only exact operations (array positions differ between windows)."""
    fh = fibre_hash(uniq, app.seed)
    present = uniq != 0
    types = fibre_types(uniq, app.seed, app.type_shares)
    rank = OXIDATIVE_RANK[types]
    # mito mass I > IIa > IIx: type_contrast ** -rank, per type (scalar pow), then a log-normal spread
    by_type = np.array([app.type_contrast**-r for r in OXIDATIVE_RANK])
    mito = by_type[types] * exp_approx(app.mito_spread * normal_approx(hash_ints(fh, 1)).astype(np.float64))
    broad = np.ones(len(uniq))
    if oblique is not None:
        broad = np.where(oblique(uniq) & present, app.oblique_broadening, 1.0)

    def fibre(a: np.ndarray) -> np.ndarray:
        return np.where(present, a, 0.0).astype(f32)

    return _Fibres(
        fh=fh,
        types=types,
        present=present,
        fam=(uniform_k(fh, 2) < app.fam_fraction) & present,
        mito=fibre(mito),
        ring_gain=fibre(0.65 + 0.6 * uniform_k(fh, 3)),
        width_gain=fibre(1.0 + app.width_variation * (2.0 * uniform_k(fh, 5) - 1.0)),
        ssl=fibre(app.subsarcolemmal * (1.0 - 0.5 * rank) * (0.5 + uniform_k(fh, 4))),
        dim=fibre(app.core_dimming * (0.3 + 0.7 * rank) * (0.6 + 0.8 * uniform_k(fh, 6))),
        grain=fibre(app.grain_amp * (0.5 + uniform_k(fh, 7))),
        mottle=fibre(app.mottle_amp * uniform_k(fh, 8)),
        broad=np.where(present, broad, 1.0).astype(f32),
    )


def _membrane(app: Appearance, fb: _Fibres, inv: np.ndarray, e: np.ndarray, tex: dict) -> np.ndarray:
    """The membrane band: width, position, brightness and breaks vary along it.

    Per-fibre gains (brightness, width, oblique broadening) fade in from the label
    outline inwards, so the band is continuous across the outline: no step in the
    image marks where the ground-truth boundary lies.
    """
    w = f32(app.membrane_width_px) * (f32(1.0) + f32(0.5 * app.width_variation) * (f32(2.0) * tex["ringw"] - f32(1.0)))
    half0 = np.maximum(f32(0.5) * w, f32(1.0)) + f32(0.5)
    inner = _step(e / half0)
    w = w * (f32(1.0) + (fb.width_gain[inv] - f32(1.0)) * inner)
    centre = f32(app.ring_offset) * w
    half = np.maximum(f32(0.5) * w, f32(1.0)) + f32(0.5)
    half = half * (f32(1.0) + (fb.broad[inv] - f32(1.0)) * inner)
    ring = _bump((e - centre) / half)
    gain = f32(1.0) + (fb.ring_gain[inv] - f32(1.0)) * inner
    uneven = f32(1.0 - app.ring_unevenness) + f32(2.0 * app.ring_unevenness) * tex["ring"]
    # breaks: stretches where the membrane stain fades (patchy dystrophin, damaged sarcolemma)
    breaks = f32(1.0) - f32(0.85) * _step((f32(app.ring_breaks) - tex["ringw"]) / f32(0.08))
    broad = f32(1.0) + (fb.broad[inv] - f32(1.0)) * inner
    return ring * gain * uneven * breaks / np.sqrt(broad)


def _interstitium(
    app: Appearance, e: np.ndarray, tex: dict, occupancy: np.ndarray | np.float32
) -> tuple[np.ndarray, np.ndarray]:
    """Connective-tissue fields of non-fibre pixels: (membrane-channel ECM, stained share)."""
    endo = f32(1.0) - _step((-e - f32(app.endomysium_px)) / f32(0.5 * app.endomysium_px + 1.0))
    ecm_endo = f32(0.6) + f32(0.8) * tex["inter"]
    ecm_peri = f32(app.perimysium_level) * (f32(0.2) + f32(1.0) * tex["fibrous"]) * (f32(0.5) + tex["inter"])
    # unstained patches cover about unstained_share of the interstitium (value noise is
    # centred on 0.5 with a spread of ~0.15); tears are thin lines along a noise level set
    t = f32(0.5 + 0.35 * (1.0 - 2.0 * app.unstained_share))
    stained = f32(1.0) - _step((tex["patch"] - t) / f32(0.06))
    if app.tear_width > 0.0:
        stained = stained * _step(np.abs(tex["tear"] - f32(0.5)) / f32(app.tear_width) - f32(0.5))
    stained = stained * (f32(1.0) - occupancy)
    ecm = (endo * ecm_endo + (f32(1.0) - endo) * ecm_peri) * stained
    return ecm, stained


def render_layer(
    app: Appearance,
    key: np.ndarray,
    edge_px: np.ndarray,
    tissue: np.ndarray,
    tex: dict[str, np.ndarray],
    y: np.ndarray,
    x: np.ndarray,
    oblique: Callable[[np.ndarray], np.ndarray] | None = None,
    extra: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """Noise-free, unblurred signal ``(C, *key.shape)`` float32 of one tissue layer.

    ``key`` identifies fibres (0 = none); ``tex`` holds :func:`~.texture.textures`
    values at the same points and ``y, x`` their integer pixel positions (for holes
    and capillaries). ``oblique`` maps fibre keys to "cut obliquely" flags: such
    fibres get broader, softer membrane bands. ``extra`` holds the fields of
    :func:`~.structures.render_sites` and, with a ``dapi`` stain, ``nuclei``.
    """
    codes, uniq = pd.factorize(key.ravel(), sort=True)
    inv = codes.reshape(key.shape)
    fb = _fibre_levels(app, np.asarray(uniq, np.uint64), oblique)
    e = edge_px.astype(f32)
    is_fibre = key != 0
    tis = tissue.astype(f32)
    extra = extra or {}
    occupancy = extra.get("occupancy", f32(0.0))
    ecm, stained = _interstitium(app, e, tex, occupancy)
    gap = ~is_fibre
    site = f32(1.0) * gap * tis

    membrane = _membrane(app, fb, inv, e, tex) * tis * (f32(1.0) - occupancy)
    membrane += np.where(is_fibre, f32(app.cytoplasm_membrane), f32(app.connective) * ecm * tis)
    inter = f32(app.interstitium) * (f32(0.6) + f32(0.8) * tex["inter"]) * stained * tis

    e_in = np.maximum(e, f32(0.0))
    ss = _bump(e_in / f32(2.5 / app.pixel_size_um)) * fb.ssl[inv]
    rim = f32(1.0) - np.minimum(e_in / f32(app.rim_depth_px), f32(1.0))
    profile = f32(1.0) - fb.dim[inv] * (f32(1.0) - rim * rim * (f32(3.0) - f32(2.0) * rim))
    texture = exp_approx(
        fb.grain[inv] * (f32(2.0) * tex["grain"] - f32(1.0)) + fb.mottle[inv] * (f32(2.0) * tex["mottle"] - f32(1.0))
    )
    mito = np.where(is_fibre, fb.mito[inv] * (profile + ss) * texture, inter * tex["grain"])

    near = np.nonzero(gap & tissue & (edge_px > -3.0 / app.pixel_size_um))
    cap = np.zeros(key.shape, f32)
    if len(near[0]):
        cap[near] = f32(app.capillary_level) * capillaries(
            app, y[near].astype(np.float64), x[near].astype(np.float64)
        ).astype(f32)

    channels = []
    for k, stain in enumerate(app.stains):
        if stain == "membrane":
            c = membrane + cap * f32(0.3 + app.connective) + site * extra.get("membrane", f32(0.0))
        elif stain == "mito":
            c = mito + cap + site * extra.get("mito", f32(0.0))
        elif stain == "dapi":
            c = extra.get("nuclei", np.zeros(key.shape, f32)) + f32(0.05) * inter
        else:
            c = _myhc(app, fb, inv, is_fibre, tex, stain, k) + f32(0.3) * inter
        if stain != "dapi":
            level = f32(app.speckle_level * slide_uniform(app.seed, f"speckle-{stain}"))
            c = c + np.where(is_fibre, level * tex["speckle"], f32(0.0))
        channels.append(np.asarray(c, f32))
    out = np.stack(channels)
    _freeze(app, fb, inv, is_fibre, y, x, out)
    n = len(app.stains)
    if n > 1 and app.crosstalk > 0.0:
        total = out.sum(axis=0)
        out = out + f32(app.crosstalk / (n - 1)) * (total[None] - out)
    for k in range(n):
        out[k] = (out[k] + f32(app.background)) * f32(app.peaks[k])
    return out


def _myhc(
    app: Appearance, fb: _Fibres, inv: np.ndarray, is_fibre: np.ndarray, tex: dict, stain: str, k: int
) -> np.ndarray:
    """A myosin heavy-chain channel: bright in fibres of its type(s), dim elsewhere, mottled."""
    hk = hash_ints(fb.fh, 20 + k)
    spread = exp_approx(app.myhc_spread * np.clip(normal_approx(hk).astype(np.float64), -2.0, 2.0))
    positive = np.isin(fb.types, MYHC_POSITIVE[stain])
    hybrid = fb.types >= 3
    # hybrids carry both myosins at 0.7-1 of the pure level, negatives the slide's background
    # +-15 %: with the default ranges every positive fibre (>= 0.43) outshines every negative
    # one (<= 0.35) before shading and noise, so types are separable as in a well-stained slide
    pos = np.where(hybrid, 0.7 + 0.3 * uniform_k(hk, 0), 1.0) * spread
    neg = app.myhc_background * (0.85 + 0.3 * uniform_k(hk, 1))
    level = np.where(fb.present, np.where(positive, pos, neg), 0.0).astype(f32)
    texture = exp_approx(
        f32(0.8) * fb.grain[inv] * (f32(2.0) * tex["grain"] - f32(1.0))
        + f32(0.2 + 1.2 * app.mottle_amp) * (f32(2.0) * tex["mottle"] - f32(1.0))
    )
    return np.where(is_fibre, level[inv] * texture, f32(0.0))


def _freeze(
    app: Appearance,
    fb: _Fibres,
    inv: np.ndarray,
    is_fibre: np.ndarray,
    y: np.ndarray,
    x: np.ndarray,
    out: np.ndarray,
) -> None:
    """Punch ice-crystal holes and cracks into FAM fibres (all channels), in place."""
    fam_px = fb.fam[inv] & is_fibre
    if not fam_px.any():
        return
    idx = np.nonzero(fam_px)
    fh = fb.fh[inv[idx]]
    depth = freeze_damage(app, y[idx].astype(np.float64), x[idx].astype(np.float64), fh).astype(f32)
    keep = f32(1.0) - f32(0.92) * depth
    rim = f32(0.25) * depth * (f32(1.0) - depth) * fb.ring_gain[inv[idx]]
    for k, stain in enumerate(app.stains):
        plane = out[k]  # a view: writing its damaged pixels writes ``out``
        plane[idx] = plane[idx] * keep + (rim if stain == "membrane" else f32(0.0))


def shading(app: Appearance, y0: int, x0: int, h: int, w: int, size_px: tuple[int, int]) -> np.ndarray:
    """Multiplicative illumination (slide-wide gradient and scanner-tile vignetting), float32."""
    big = max(size_px) / 2.5
    slide = value_noise_grid(y0, x0, h, w, big, salt(app.seed, "illum"))
    t = app.scan_tile_px
    fy = (np.arange(y0, y0 + h) % t).astype(f32) / f32(t) * f32(2.0) - f32(1.0)
    fx = (np.arange(x0, x0 + w) % t).astype(f32) / f32(t) * f32(2.0) - f32(1.0)
    vignette = f32(0.25) * (fy * fy)[:, None] + f32(0.25) * (fx * fx)[None, :]
    s = f32(app.illumination)
    return (f32(1.0) - s * (f32(1.0) - slide)) * (f32(1.0) - s * vignette)


def defocus_weight(app: Appearance, focus: np.ndarray) -> np.ndarray:
    """Out-of-focus weight in [0, 1] from the ``focus`` texture (about ``defocus_share`` of the area)."""
    t = f32(0.5 + 0.35 * (1.0 - 2.0 * app.defocus_share))
    return _step((focus - t) / f32(0.08))


def finish(
    app: Appearance, signal: np.ndarray, y0: int, x0: int, size_px: tuple[int, int], focus: np.ndarray
) -> np.ndarray:
    """Shade, blur (more where out of focus), crop the halo, add shot and read noise: ``(C, h, w)`` uint16.

    ``signal`` and ``focus`` (the ``focus`` texture) cover the window grown by
    :attr:`Appearance.pad_px` on every side; ``y0, x0`` is the window's (unpadded) origin.
    """
    p = app.pad_px
    n, hp, wp = signal.shape
    h, w = hp - 2 * p, wp - 2 * p
    signal = signal * shading(app, y0 - p, x0 - p, hp, wp, size_px)[None]
    core = np.s_[p : p + h, p : p + w]
    weight = defocus_weight(app, focus[core]) if app.defocus_share > 0.0 else None
    out = np.empty((n, h, w), np.uint16)
    for c in range(n):
        blurred = ndimage.gaussian_filter(signal[c], app.blur_sigma_px, truncate=BLUR_TRUNCATE, mode="nearest")[core]
        if weight is not None:
            soft = ndimage.gaussian_filter(signal[c], app.focus_sigma_px, truncate=BLUR_TRUNCATE, mode="nearest")
            blurred = blurred + weight * (soft[core] - blurred)
        hsh = pixel_hash(y0, x0, h, w, salt(app.seed, f"noise{c}"))
        shot = np.sqrt(np.maximum(blurred, f32(0.0)) * f32(app.gain))
        val = blurred + shot * normal_approx(hsh)
        val += f32(app.read_noise) * normal_approx(mix64(hsh))
        val += f32(app.offset)
        out[c] = np.clip(np.rint(val), 0, 65535).astype(np.uint16)
    return out


__all__ = [
    "Appearance",
    "capillaries",
    "defocus_weight",
    "finish",
    "is_fam",
    "render_layer",
    "shading",
]
