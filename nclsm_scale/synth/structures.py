"""Blood vessels, nerve bundles and nuclei, placed where the fibre geometry leaves room.

Vessels and nerves sit at hashed sites of a coarse lattice (one candidate per
cell). A candidate is used only if the geometry is tissue without fibre at
every sample point of its disc grown by a margin (:func:`site_fits`), so they
lie in the perimysium and in the spaces of missing fibres, never over a fibre;
their pixels are drawn only where there is no fibre anyway, so labels stay
exact. Nuclei (``dapi``) sit at hashed points whose geometry (sampled at the
centre) makes them myonuclei under the sarcolemma, rare central nuclei or
interstitial nuclei. Everything is a pure function of position.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from nclsm_scale.synth.noise import hash_ints, salt, uniform_k, value_noise_points
from nclsm_scale.synth.texture import blobs, splat

if TYPE_CHECKING:
    from nclsm_scale.synth.appearance import Appearance

#: Free space test: (y, x) 1-D pixel positions -> tissue without fibre (bool).
FreeFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
#: Geometry sample: (y, x) 1-D pixel positions -> (fibre key, signed edge px, tissue).
SampleFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]

_OFF = 1 << 31
MARGIN_UM = 2.0  # clearance between a vessel or nerve and the nearest fibre
# Sample points of a disc: (radius share, number of angles); ~R/3 apart, so no fibre
# larger than about a third of the site can hide between them.
_RINGS = ((0.0, 1), (0.35, 8), (0.7, 14), (1.0, 20))
_SAMPLES = np.array(
    [
        (r * math.cos(2.0 * math.pi * k / n), r * math.sin(2.0 * math.pi * k / n))
        for r, n in _RINGS
        for k in range(n)
    ]
)


@dataclass(frozen=True)
class Site:
    """One vessel or nerve profile: an ellipse with semi-axes ``a_px`` along (cos, sin), ``b_px``."""

    nerve: bool
    cy: float
    cx: float
    a_px: float
    b_px: float
    cos: float
    sin: float
    wall: float  # vessel wall (or perineurium) thickness as a share of the radius
    level: float
    salt: int


def _bump(t: np.ndarray) -> np.ndarray:
    t = np.minimum(t * t, 1.0)
    return (1.0 - t) * (1.0 - t)


def _step(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def draw_site(app: Appearance, i: int, j: int) -> Site:
    """The candidate site of lattice cell ``(i, j)`` (every cell has one; see :func:`site_fits`)."""
    h = hash_ints(salt(app.seed, "site"), np.int64(i) + _OFF, np.int64(j) + _OFF)
    u = [float(uniform_k(h, k)) for k in range(10)]
    s = app.site_spacing_px
    nerve = u[2] < app.nerve_share
    lo, hi = app.nerve_diameter_px if nerve else app.vessel_diameter_px
    r = min(0.5 * (lo + (hi - lo) * u[3] * u[3]), 0.3 * s)  # small profiles are the most common
    venule = not nerve and u[5] < 0.4
    # venules are thin-walled and often collapsed (aspect up to 3); arterioles round, thick-walled
    aspect = 1.0 + (2.0 if venule else 0.5) * u[4]
    n = math.hypot(2.0 * u[6] - 1.0, 2.0 * u[7] - 1.0) or 1.0
    if nerve:
        wall = min((2.0 + 3.0 * u[8]) / app.pixel_size_um / r, 0.4)
    else:
        wall = 0.1 + 0.15 * u[8] if venule else 0.3 + 0.2 * u[8]
    return Site(
        nerve=nerve,
        cy=(i + 0.5 + 0.4 * (u[0] - 0.5)) * s,
        cx=(j + 0.5 + 0.4 * (u[1] - 0.5)) * s,
        a_px=r * math.sqrt(aspect),
        b_px=r / math.sqrt(aspect),
        cos=(2.0 * u[6] - 1.0) / n,
        sin=(2.0 * u[7] - 1.0) / n,
        wall=wall,
        level=0.6 + 0.6 * u[9],
        salt=int(h) >> 1,
    )


def _sample_points(site: Site, margin_px: float) -> tuple[np.ndarray, np.ndarray]:
    a, b = site.a_px + margin_px, site.b_px + margin_px
    u, v = _SAMPLES[:, 0] * a, _SAMPLES[:, 1] * b
    return site.cy + site.cos * u - site.sin * v, site.cx + site.sin * u + site.cos * v


def sites_in_window(
    app: Appearance, y0: int, x0: int, h: int, w: int, free: FreeFn, cache: dict[tuple[int, int], Site | None]
) -> list[Site]:
    """Sites that fit the geometry and may touch the window (fits memoised in ``cache``)."""
    s = app.site_spacing_px
    if not app.has_sites:
        return []
    cells = [
        (i, j)
        for i in range(math.floor((y0 - 0.5 * s) / s), math.floor((y0 + h + 0.5 * s) / s) + 1)
        for j in range(math.floor((x0 - 0.5 * s) / s), math.floor((x0 + w + 0.5 * s) / s) + 1)
    ]
    todo = [c for c in cells if c not in cache]
    if todo:
        margin = MARGIN_UM / app.pixel_size_um
        cand = [draw_site(app, i, j) for i, j in todo]
        pts = [_sample_points(c, margin) for c in cand]
        ok = free(np.concatenate([p[0] for p in pts]), np.concatenate([p[1] for p in pts]))
        n = len(_SAMPLES)
        for k, (cell, site) in enumerate(zip(todo, cand, strict=True)):
            cache[cell] = site if bool(ok[k * n : (k + 1) * n].all()) else None
    return [fit for c in cells if (fit := cache[c]) is not None]


def render_sites(app: Appearance, sites: list[Site], y0: int, x0: int, h: int, w: int) -> dict[str, np.ndarray]:
    """Fields of the vessels and nerves on a window, float32 ``(h, w)``.

    ``occupancy`` (1 inside a profile: it replaces the connective tissue there),
    ``membrane`` (vessel basement membranes and wall; perineurium and endoneurial
    dots) and ``mito`` (smooth muscle of the wall; axons).
    """
    occ = np.zeros((h, w), np.float32)
    mem = np.zeros((h, w), np.float32)
    mito = np.zeros((h, w), np.float32)
    line = max(0.6 / app.pixel_size_um, 0.7)
    for site in sites:
        reach = max(site.a_px, site.b_px) * 1.15 + 2.0 * line + 1.0
        ys = slice(max(int(math.floor(site.cy - reach)) - y0, 0), min(int(math.ceil(site.cy + reach)) - y0 + 1, h))
        xs = slice(max(int(math.floor(site.cx - reach)) - x0, 0), min(int(math.ceil(site.cx + reach)) - x0 + 1, w))
        if ys.stop <= ys.start or xs.stop <= xs.start:
            continue
        yy = np.arange(ys.start + y0, ys.stop + y0, dtype=np.float64)[:, None]
        xx = np.arange(xs.start + x0, xs.stop + x0, dtype=np.float64)[None, :]
        yy, xx = np.broadcast_arrays(yy, xx)
        dy, dx = yy - site.cy, xx - site.cx
        u = (site.cos * dy + site.sin * dx) / site.a_px
        v = (-site.sin * dy + site.cos * dx) / site.b_px
        rho = np.sqrt(u * u + v * v)
        r = math.sqrt(site.a_px * site.b_px)
        lw = line / r
        o = 1.0 - _step((rho - 1.0) / (2.0 * lw))
        if site.nerve:
            t = site.wall
            peri = _bump((rho - (1.0 - 0.5 * t)) / (0.5 * t + lw))
            inside = 1.0 - _step((rho - (1.0 - t)) / lw)
            spacing = max(4.0 / app.pixel_size_um, 2.0)
            dots = blobs(yy.ravel(), xx.ravel(), spacing, site.salt, (0.25, 0.4), 0.85).reshape(yy.shape)
            m = site.level * (peri + inside * (0.25 + 0.5 * dots))
            c = site.level * inside * (0.05 + 0.25 * dots)
        else:
            mod = value_noise_points(yy, xx, max(0.7 * r, 2.0), site.salt)
            lumen = (1.0 - site.wall) + 0.5 * site.wall * (mod - 0.5)
            body = _step((rho - lumen) / lw) * o
            m = site.level * (1.2 * _bump((rho - lumen) / lw) + 0.7 * _bump((rho - 1.0) / lw) + 0.5 * body)
            c = site.level * 0.5 * body
        win = np.s_[ys, xs]
        occ[win] = np.maximum(occ[win], o.astype(np.float32))
        mem[win] = np.maximum(mem[win], m.astype(np.float32))
        mito[win] = np.maximum(mito[win], c.astype(np.float32))
    return {"occupancy": occ, "membrane": mem, "mito": mito}


def nuclei(app: Appearance, y0: int, x0: int, h: int, w: int, sample: SampleFn) -> np.ndarray:
    """DAPI signal in [0, 1] of a window, float32 ``(h, w)``.

    One candidate per cell of a lattice (spacing ``app.nucleus_spacing_px``); the
    geometry at its centre decides: a myonucleus just under the sarcolemma (70 %
    of candidates there), a central nucleus deep inside a fibre (1.5 %), an
    interstitial nucleus (endothelium, fibroblasts) within 5 um of a fibre (35 %).
    Nuclei are ellipses 2-3.2 um in radius, 1.3-2.5 times as long as wide, lying
    along the nearest fibre outline (its direction from the edge gradient).
    """
    s = app.nucleus_spacing_px
    px = app.pixel_size_um
    ys = np.arange(math.floor(y0 / s) - 1, math.floor((y0 + h - 1) / s) + 2)
    xs = np.arange(math.floor(x0 / s) - 1, math.floor((x0 + w - 1) / s) + 2)
    hc = hash_ints(salt(app.seed, "nucleus"), ys[:, None] + _OFF, xs[None, :] + _OFF)
    cy = (ys[:, None] + 0.5 + 0.3 * (uniform_k(hc, 0) - 0.5)) * s
    cx = (xs[None, :] + 0.5 + 0.3 * (uniform_k(hc, 1) - 0.5)) * s
    r = (2.0 + 1.2 * uniform_k(hc, 2)) / px
    d = max(1.0 / px, 1.0)  # step of the edge gradient
    py = np.concatenate([cy.ravel(), cy.ravel() + d, cy.ravel(), cy.ravel() - d, cy.ravel()])
    px_ = np.concatenate([cx.ravel(), cx.ravel(), cx.ravel() + d, cx.ravel(), cx.ravel() - d])
    key, edge, tissue = sample(py, px_)
    n = hc.size
    e = edge.reshape(5, *hc.shape)
    key, tissue = key[:n].reshape(hc.shape), tissue[:n].reshape(hc.shape)
    u = uniform_k(hc, 3)
    fibre = key != 0
    under = fibre & (e[0] >= 0.9 * r) & (e[0] <= 0.9 * r + 2.0 / px) & (u < 0.7)
    central = fibre & (e[0] > 8.0 / px) & (u < 0.015)
    inter = ~fibre & tissue & (e[0] > -5.0 / px) & (u < 0.35)
    present = under | central | inter
    # long axis along the outline: perpendicular to the edge gradient (random where it is flat)
    gy, gx = e[1] - e[3], e[2] - e[4]
    norm = np.sqrt(gy * gy + gx * gx)
    flat = norm < 1e-6
    cos = np.where(flat, 2.0 * uniform_k(hc, 5) - 1.0, -gx)
    sin = np.where(flat, 2.0 * uniform_k(hc, 6) - 1.0, gy)
    norm = np.sqrt(cos * cos + sin * sin) + 1e-12
    cos, sin = cos / norm, sin / norm
    aspect = 1.3 + 1.2 * uniform_k(hc, 4)
    a, b = r * np.sqrt(aspect), r / np.sqrt(aspect)
    level = 0.6 + 0.4 * uniform_k(hc, 7)
    out = np.zeros((h, w), np.float32)
    if present.any():
        a, b, cos, sin, level = (v[present] for v in (a, b, cos, sin, level))

        def value(dy: np.ndarray, dx: np.ndarray, i: np.ndarray) -> np.ndarray:
            uu = (cos[i] * dy + sin[i] * dx) / a[i]
            vv = (-sin[i] * dy + cos[i] * dx) / b[i]
            t = uu * uu + vv * vv
            return np.where(t < 1.0, level[i] * (1.0 - t * t), 0.0)

        cy, cx = np.broadcast_to(cy, hc.shape)[present], np.broadcast_to(cx, hc.shape)[present]
        splat(out, y0, x0, cy, cx, float(a.max()) + 1.0, value)
    return out


__all__ = ["Site", "draw_site", "nuclei", "render_sites", "sites_in_window"]
