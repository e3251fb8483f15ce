"""Texture fields and hashed point patterns: pure functions of position.

:func:`textures` evaluates every smooth noise field a window needs on its pixel
grid; :func:`blobs` and :func:`cracks` give round spots and cell-edge crack
networks at arbitrary points from a per-cell table, so a point's value never
depends on which other points are evaluated with it. :func:`freeze_damage`
combines them into the ice-crystal holes and cracks of freeze-artefact fibres.
Only exactly rounded operations are used per point (see :mod:`.noise`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from nclsm_scale.synth.noise import hash_ints, salt, uniform, uniform_k, value_noise_grid

if TYPE_CHECKING:
    from nclsm_scale.synth.appearance import Appearance

_OFF = 1 << 31


def _ridge(n: np.ndarray) -> np.ndarray:
    """Thin bright ridges along the mid-level lines of a noise field (reticular, fibrous)."""
    r = np.float32(1.0) - np.float32(2.0) * np.abs(n - np.float32(0.5))
    return r * r


def textures(app: Appearance, y0: int, x0: int, h: int, w: int) -> dict[str, np.ndarray]:
    """Position-only texture fields of a window, float32 in [0, 1].

    ``grain`` fine granular/reticular myofibrillar texture; ``mottle`` patchy
    texture at ``app.mottle_px``; ``ring``, ``ringw`` brightness and width
    variation along membranes; ``inter`` endomysium texture; ``fibrous``
    collagen-like perimysium strands; ``patch`` large unstained patches;
    ``tear`` thin tears; ``speckle`` autofluorescent granules (lipofuscin).
    """
    s = app.seed
    px = app.pixel_size_um

    def noise(spacing_px: float, name: str) -> np.ndarray:
        return value_noise_grid(y0, x0, h, w, spacing_px, salt(s, name))

    g1 = noise(app.grain_px, "grain1")
    grain = np.float32(0.5) * g1 + np.float32(0.5) * _ridge(noise(2.3 * app.grain_px, "grain2"))
    # collagen strands: mid-level lines of a two-octave noise (irregular, wavy curves, not cells)
    fib = _ridge(np.float32(0.65) * noise(12.0 / px, "fibrous1") + np.float32(0.35) * noise(4.0 / px, "fibrous2"))
    speckle = spots(
        y0, x0, h, w, app.speckle_spacing_px, salt(s, "speckle"), (0.4 / px, 1.0 / px), app.speckle_density
    )
    return {
        "grain": grain,
        "mottle": np.float32(0.6) * noise(app.mottle_px, "mottle") + np.float32(0.4) * noise(
            0.43 * app.mottle_px, "mottle2"
        ),
        "ring": noise(9.0 / px, "ring"),
        "ringw": noise(15.0 / px, "ringw"),
        "inter": noise(4.0 / px, "inter"),
        "fibrous": fib,
        "patch": noise(app.patch_px, "patch"),
        "tear": noise(150.0 / px, "tear"),
        "focus": noise(app.defocus_scale_px, "focus"),
        "speckle": speckle.astype(np.float32),
    }


def splat(
    out: np.ndarray,
    y0: int,
    x0: int,
    cy: np.ndarray,
    cx: np.ndarray,
    reach_px: float,
    value: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
) -> None:
    """Draw small objects into a window by maximum, in place.

    Object ``i`` at ``(cy[i], cx[i])`` (absolute pixels) covers the pixels within
    ``reach_px``; ``value(dy, dx, i)`` gives its value at offsets ``dy, dx`` (float64,
    pixel minus centre) for object indices ``i`` (broadcast). Values depend only on
    absolute positions, so every window gets the same pixels.
    """
    h, w = out.shape
    k = int(math.ceil(reach_px))
    off = np.arange(-k, k + 1)
    iy = np.floor(cy).astype(np.int64)[:, None, None] + off[None, :, None]
    ix = np.floor(cx).astype(np.int64)[:, None, None] + off[None, None, :]
    idx = np.arange(len(cy))[:, None, None]
    iy, ix, idx = np.broadcast_arrays(iy, ix, idx)
    inside = (iy >= y0) & (iy < y0 + h) & (ix >= x0) & (ix < x0 + w)
    iy, ix, idx = iy[inside], ix[inside], idx[inside]
    val = value(iy - cy[idx], ix - cx[idx], idx)
    np.maximum.at(out, (iy - y0, ix - x0), val.astype(out.dtype))


def spots(
    y0: int, x0: int, h: int, w: int, spacing_px: float, salt_: int, radius_px: tuple[float, float], p: float
) -> np.ndarray:
    """Sparse round spots (``1 - t^3`` profile) on a jittered lattice, float32 ``(h, w)`` in [0, 1].

    One spot per cell with probability ``p``, radius uniform in ``radius_px`` (at most
    the spacing: cells two beyond the window are searched).
    """
    out = np.zeros((h, w), np.float32)
    ys = np.arange(math.floor(y0 / spacing_px) - 2, math.floor((y0 + h) / spacing_px) + 3)
    xs = np.arange(math.floor(x0 / spacing_px) - 2, math.floor((x0 + w) / spacing_px) + 3)
    hc = hash_ints(salt_, ys[:, None] + _OFF, xs[None, :] + _OFF)
    keep = uniform_k(hc, 2) < p
    if not keep.any():
        return out
    cy = ((ys[:, None] + 0.5 + 0.7 * (uniform(hc) - 0.5)) * spacing_px)[keep]
    cx = ((xs[None, :] + 0.5 + 0.7 * (uniform_k(hc, 0) - 0.5)) * spacing_px)[keep]
    lo, hi = radius_px
    r = (lo + (hi - lo) * uniform_k(hc, 1))[keep]

    def value(dy: np.ndarray, dx: np.ndarray, i: np.ndarray) -> np.ndarray:
        t = np.sqrt(dy * dy + dx * dx) / r[i]
        return np.where(t < 1.0, 1.0 - t * t * t, 0.0)

    splat(out, y0, x0, cy, cx, hi + 1.0, value)
    return out


def _cell_table(
    y: np.ndarray, x: np.ndarray, spacing_px: float, salt_: int, n: int
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``n`` uniforms per lattice cell around the points; each point's cell and table index.

    The table covers the points' cells and one ring beyond; entries are pure functions
    of the cell, so a point's neighbours get the same values in every call.
    """
    cy = np.floor(y / spacing_px).astype(np.int64)
    cx = np.floor(x / spacing_px).astype(np.int64)
    ys = np.arange(int(cy.min()) - 1, int(cy.max()) + 2)
    xs = np.arange(int(cx.min()) - 1, int(cx.max()) + 2)
    h = hash_ints(salt_, ys[:, None] + _OFF, xs[None, :] + _OFF)
    table = [uniform(h)] + [uniform_k(h, k) for k in range(n - 1)]
    return table, cy, cx, cy - ys[0], cx - xs[0]


def blobs(
    y: np.ndarray,
    x: np.ndarray,
    spacing_px: float,
    salt_: int,
    radius: tuple[float, float],
    p: float | np.ndarray,
    *,
    sharp: bool = False,
) -> np.ndarray:
    """Depth in [0, 1] of round blobs on a jittered lattice at points (1-D float64 arrays).

    One blob per lattice cell with probability ``p`` (a scalar or one value per
    point), radius a uniform share ``radius`` of the spacing (keep it under 0.5:
    only the 3 x 3 neighbouring cells are searched). Profile ``1 - t^3``, or
    flat-bottomed with a steep rim (``1 - t^8``) when ``sharp``.
    """
    out = np.zeros(y.shape, np.float64)
    if y.size == 0:
        return out
    (u_y, u_x, u_r, u_p), cy, cx, iy, ix = _cell_table(y, x, spacing_px, salt_, 4)
    fy, fx = y / spacing_px - cy, x / spacing_px - cx  # position within the own cell
    lo, hi = radius
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            cell = (iy + dy, ix + dx)
            py = dy + 0.5 + 0.7 * (u_y[cell] - 0.5)
            px = dx + 0.5 + 0.7 * (u_x[cell] - 0.5)
            r = lo + (hi - lo) * u_r[cell]
            t = np.sqrt((fy - py) ** 2 + (fx - px) ** 2) / r
            t3 = t * t * t
            prof = 1.0 - (t3 * t3 * t * t if sharp else t3)
            out = np.maximum(out, np.where((u_p[cell] < p) & (t < 1.0), prof, 0.0))
    return out


def cracks(y: np.ndarray, x: np.ndarray, spacing_px: float, salt_: int, width_px: float) -> np.ndarray:
    """Depth in [0, 1] of a crack network (edges of a jittered Voronoi tiling) at points.

    The depth is 1 on a cell edge and falls to 0 at ``width_px`` from it (measured as
    the difference of the two nearest seed distances): a shattered, cracked-glass look.
    """
    if y.size == 0:
        return np.zeros(y.shape, np.float64)
    (u_y, u_x), cy, cx, iy, ix = _cell_table(y, x, spacing_px, salt_, 2)
    fy, fx = y / spacing_px - cy, x / spacing_px - cx
    d1 = np.full(y.shape, np.inf)
    d2 = np.full(y.shape, np.inf)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            cell = (iy + dy, ix + dx)
            py = dy + 0.5 + 0.8 * (u_y[cell] - 0.5)
            px = dx + 0.5 + 0.8 * (u_x[cell] - 0.5)
            d = np.sqrt((fy - py) ** 2 + (fx - px) ** 2) * spacing_px
            d2 = np.minimum(d2, np.maximum(d, d1))
            d1 = np.minimum(d1, d)
    t = np.clip((d2 - d1) / width_px, 0.0, 1.0)
    return 1.0 - t * t * (3.0 - 2.0 * t)


def freeze_damage(app: Appearance, y: np.ndarray, x: np.ndarray, fh: np.ndarray) -> np.ndarray:
    """Ice-crystal damage depth in [0, 1] at points of freeze-artefact fibres.

    ``fh`` is each point's fibre hash. Every FAM fibre draws its own mix of three
    hole layers (tiny ~2 um, medium ~5 um and large ~12 um spacing, times the
    slide's ``vacuole_scale``) and of a crack network, so FAM fibres range from a
    fine "Swiss cheese" to a few large holes to a shattered look. Holes are
    flat-bottomed with steep rims, unlike the smooth, shallow mito texture. The
    medium or the large layer is always dense, and spacings never drop below what
    the slide's PSF resolves, so every FAM fibre shows its damage at the rendered
    resolution (ground truth and image agree).
    """
    px = app.pixel_size_um
    depth = np.zeros(y.shape, np.float64)
    # (spacing um, radius share of the spacing, salt)
    layers = ((2.0, (0.25, 0.45), "hole-tiny"), (5.0, (0.2, 0.4), "hole-mid"), (12.0, (0.15, 0.38), "hole-big"))
    style = uniform_k(fh, 11)
    dominant = 1.0 + np.floor(2.0 * uniform_k(fh, 16))
    resolved = 1.5 + 2.5 * app.blur_sigma_px  # smallest hole spacing (px) whose holes show (radius >= sigma)
    for k, (spacing_um, radius, name) in enumerate(layers):
        spacing = max(spacing_um * app.vacuole_scale / px, resolved * (k + 1))
        # the dominant layer is dense; each other layer is absent from about 40 % of FAM
        # fibres and sparse to dense in the rest
        u = uniform_k(fh, 12 + k)
        p = np.where(dominant == k, 0.45 + 0.45 * u, np.clip(1.4 * u - 0.55, 0.0, 0.8))
        sel = np.flatnonzero(p > 0.0)
        if len(sel):
            hole = blobs(y[sel], x[sel], spacing, salt(app.seed, name), radius, p[sel], sharp=True)
            depth[sel] = np.maximum(depth[sel], hole)
    # a crack network in ~45 % of FAM fibres, cell size 5-15 um in four steps
    level = np.floor(4.0 * uniform_k(fh, 15))
    width = max(0.5 / px, 0.8, 1.2 * app.blur_sigma_px)
    for lv in range(4):
        sel = np.flatnonzero((style < 0.45) & (level == lv))
        if len(sel):
            spacing = (5.0 + 10.0 * lv / 3.0) * app.vacuole_scale / px
            c = cracks(y[sel], x[sel], spacing, salt(app.seed, f"crack{lv}"), width)
            depth[sel] = np.maximum(depth[sel], 0.9 * c)
    return depth


__all__ = ["blobs", "cracks", "freeze_damage", "splat", "spots", "textures"]
