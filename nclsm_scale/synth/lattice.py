"""Power diagrams of jittered lattice seeds, evaluated exactly at arbitrary points.

A :class:`Lattice` places one seed per square cell of a lattice in its own
``u``-space, ``u = M (y - c)`` (``M`` area-preserving: rotation and stretch), with
a hashed jitter and a hashed power weight. :func:`evaluate` returns, for points
given in ``y``-space (pixels, already warped), the owning seed and the signed
distance in pixels to the owner's cell boundary minus half the per-pair gap.

Exactness and chunk invariance: a point's owner and its distance (capped at
``cap_px``) are those of the power diagram of *all* seeds. Seeds whose bisector
with any possible owner is provably farther than the cap are pruned, and ties
break to the smaller key, so the answer never depends on which other points
are evaluated in the same call. This needs jitter <= 0.45 and weights within
``[-W_NEG, W_POS]`` spacing^2; ``cap_px`` must not exceed :meth:`Lattice.max_cap_px`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np

from nclsm_scale.synth.noise import hash_ints, uniform, uniform_k

W_NEG = 0.9
W_POS = 0.35
JITTER_MAX = 0.45
MIN_GAP_PX = 1.5  # a non-touching pair is separated by at least one background pixel
_OFF19 = 1 << 19
_HUGE = 1e30
KeepFn = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class Lattice:
    """One lattice of seeds: spacing and jitter in ``u``-space, gaps in pixels."""

    spacing: float
    jitter: float
    salt: int
    key_prefix: int
    weight_fn: Callable[[np.ndarray], np.ndarray]
    gap_px: float
    touching_fraction: float = 0.0
    origin: tuple[float, float] = (0.0, 0.0)
    matrix: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 1.0)
    stretch_max: float = 1.0
    corner_fn: Callable[[np.ndarray], np.ndarray] = np.ones_like
    gap_range: tuple[float, float] = (0.6, 1.4)

    @property
    def gap_max_px(self) -> float:
        """Largest per-pair gap (``gap_range`` times ``gap_px``, at least ``MIN_GAP_PX``)."""
        return max(self.gap_range[1] * self.gap_px, MIN_GAP_PX)

    def max_cap_px(self) -> float:
        """Largest admissible distance cap for exact pruning (see module docstring)."""
        return 0.6 * self.spacing / self.stretch_max

    def to_u(self, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map ``y``-space points to ``u``-space."""
        m00, m01, m10, m11 = self.matrix
        dy, dx = y - self.origin[0], x - self.origin[1]
        return m00 * dy + m01 * dx, m10 * dy + m11 * dx

    def to_y(self, uy: np.ndarray, ux: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map ``u``-space points back to ``y``-space (``M`` has determinant 1)."""
        m00, m01, m10, m11 = self.matrix
        return m11 * uy - m01 * ux + self.origin[0], -m10 * uy + m00 * ux + self.origin[1]

    def seeds(self, cy: np.ndarray, cx: np.ndarray) -> dict[str, np.ndarray]:
        """Seeds of lattice cells ``(cy, cx)``: key, hash, u-position, weight (px^2)."""
        cy = np.asarray(cy, np.int64)
        cx = np.asarray(cx, np.int64)
        key = (
            np.uint64(self.key_prefix)
            | ((cy + _OFF19).astype(np.uint64) << np.uint64(20))
            | (cx + _OFF19).astype(np.uint64)
        )
        h = hash_ints(self.salt, key)
        s = self.spacing
        uy = (cy + 0.5 + self.jitter * (2.0 * uniform(h) - 1.0)) * s
        ux = (cx + 0.5 + self.jitter * (2.0 * uniform_k(h, 0) - 1.0)) * s
        w = np.clip(self.weight_fn(h), -W_NEG, W_POS) * (s * s)
        return {"key": key, "hash": h, "uy": uy, "ux": ux, "w": w}

    def pair_gaps(self, key: np.ndarray) -> np.ndarray:
        """Gap in pixels for every pair of the given seed keys (symmetric, 0 = touching)."""
        a = np.minimum(key[:, None], key[None, :])
        b = np.maximum(key[:, None], key[None, :])
        h = hash_ints(self.salt ^ 0x7A3D, a, b)
        lo, hi = self.gap_range
        gap = np.maximum(self.gap_px * (lo + (hi - lo) * uniform(h) ** 2), MIN_GAP_PX)
        return np.where(uniform_k(h, 1) < self.touching_fraction, 0.0, gap)


def _candidates(
    lat: Lattice, uy: np.ndarray, ux: np.ndarray, cap_px: float, keep_fn: KeepFn | None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Seeds that can matter for points in the bounding box of ``(uy, ux)``.

    Returns the seeds whose bisector with any possible owner may lie within the
    cap, and a mask of those that may own some point of the box.
    """
    s = lat.spacing
    y_lo, y_hi = float(uy.min()), float(uy.max())
    x_lo, x_hi = float(ux.min()), float(ux.max())
    cys = np.arange(int(np.floor(y_lo / s)) - 3, int(np.floor(y_hi / s)) + 4)
    cxs = np.arange(int(np.floor(x_lo / s)) - 3, int(np.floor(x_hi / s)) + 4)
    cy, cx = np.meshgrid(cys, cxs, indexing="ij")
    seeds = lat.seeds(cy.ravel(), cx.ravel())
    if keep_fn is not None:
        seeds = {k: v[keep_fn(seeds)] for k, v in seeds.items()}
        if not len(seeds["key"]):
            return seeds, np.zeros(0, bool)
    py, px, w = seeds["uy"], seeds["ux"], seeds["w"]
    ny = np.clip(py, y_lo, y_hi) - py
    nx = np.clip(px, x_lo, x_hi) - px
    fy = np.maximum(np.abs(py - y_lo), np.abs(py - y_hi))
    fx = np.maximum(np.abs(px - x_lo), np.abs(px - x_hi))
    far2 = fy * fy + fx * fx
    d_min = ny * ny + nx * nx - w
    d_owner = float(np.min(far2 - w))
    reach = np.sqrt(far2) + np.sqrt(max(d_owner + W_POS * s * s, 0.0))
    keep = (d_min - d_owner) < 2.0 * cap_px * lat.stretch_max * reach
    may_own = d_min <= d_owner + 1e-6 * (abs(d_owner) + s * s)
    return {k: v[keep] for k, v in seeds.items()}, may_own[keep]


@overload
def evaluate(
    lat: Lattice,
    y: np.ndarray,
    x: np.ndarray,
    cap_px: float,
    *,
    keep_fn: KeepFn | None = ...,
    corner_px: float = ...,
    edges: Literal[True] = ...,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]: ...


@overload
def evaluate(
    lat: Lattice,
    y: np.ndarray,
    x: np.ndarray,
    cap_px: float,
    *,
    keep_fn: KeepFn | None = ...,
    corner_px: float = ...,
    edges: Literal[False],
) -> tuple[dict[str, np.ndarray], np.ndarray, None]: ...


def evaluate(
    lat: Lattice,
    y: np.ndarray,
    x: np.ndarray,
    cap_px: float,
    *,
    keep_fn: KeepFn | None = None,
    corner_px: float = 0.0,
    edges: bool = True,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray | None]:
    """Owner seed and boundary distance of 1-D point arrays in ``y``-space.

    Parameters
    ----------
    lat : Lattice
        The seeds.
    y, x : ndarray of float64
        Point coordinates in pixels (1-D, same length, not empty).
    cap_px : float
        Distances are capped at ``cap_px - gap_max_px / 2``.
    keep_fn : callable, optional
        Seed filter (a pure per-seed property): the diagram of the kept seeds.
    corner_px : float
        Round cell corners with this radius times :attr:`Lattice.corner_fn` of
        the owner (at most the capped distance).
    edges : bool
        Compute ``edge_px`` (else it is ``None``: owners only).

    Returns
    -------
    seeds : dict of ndarray
        The candidate seeds (see :meth:`Lattice.seeds`), sorted by key.
    owner : ndarray of intp
        Index into ``seeds`` of each point's owner (-1 if no seed was kept).
    edge_px : ndarray of float64
        Signed distance to the owner's cell boundary minus half the pair gap:
        > 0 inside the shrunken cell, < 0 in the gap.

    Notes
    -----
    ``D_j(u) - D_i(u)`` is linear in ``u``; owners compare ``c_j - 2 p_j.u`` and
    the distance to each bisector is evaluated per owner group only for seeds
    whose (exact, corner-checked) lower bound over the group's box is under the
    cap. Every per-point value is computed by the same expression whatever the
    grouping, so results are bitwise independent of the other points.
    """
    uy, ux = lat.to_u(y, x)
    seeds, may_own = _candidates(lat, uy, ux, cap_px, keep_fn)
    py, px, w = seeds["uy"], seeds["ux"], seeds["w"]
    if len(py) == 0:
        return seeds, np.full(uy.shape, -1, np.intp), np.full(uy.shape, -_HUGE)
    c = py * py + px * px - w
    owners = np.flatnonzero(may_own)
    owner = np.full(uy.shape, owners[0], np.intp)
    best = c[owners[0]] - 2.0 * (py[owners[0]] * uy + px[owners[0]] * ux)
    for j in owners[1:]:
        lin = c[j] - 2.0 * (py[j] * uy + px[j] * ux)
        better = lin < best  # strict: ties keep the smaller key
        owner[better] = j
        np.minimum(best, lin, out=best)
    if not edges:
        return seeds, owner, None
    cap = cap_px - 0.5 * lat.gap_max_px
    e1 = np.full(uy.shape, cap)
    e2 = np.full(uy.shape, cap)
    m00, m01, m10, m11 = lat.matrix
    gaps = lat.pair_gaps(seeds["key"])
    for i in np.flatnonzero(np.bincount(owner, minlength=len(py))):
        sel = np.flatnonzero(owner == i)
        gy, gx = uy[sel], ux[sel]
        dpy, dpx = py - py[i], px - px[i]
        vy, vx = m00 * dpy + m10 * dpx, m01 * dpy + m11 * dpx
        norm = np.sqrt(vy * vy + vx * vx)
        scale = 0.5 / np.where(norm > 0, norm, 1.0)
        dc = c - c[i]
        half_gap = 0.5 * gaps[i]
        corners_y = np.array([gy.min(), gy.max()])
        corners_x = np.array([gx.min(), gx.max()])
        lin_c = dc[:, None, None] - 2.0 * (
            dpy[:, None, None] * corners_y[None, :, None]
            + dpx[:, None, None] * corners_x[None, None, :]
        )
        bound = lin_c.reshape(len(dc), 4).min(axis=1) * scale - half_gap
        rel = np.flatnonzero((bound < cap + 1e-6 * (1.0 + abs(cap))) & (np.arange(len(dc)) != i))
        if not len(rel):
            continue
        e = (dc[rel, None] - 2.0 * (dpy[rel, None] * gy + dpx[rel, None] * gx)) * scale[rel, None]
        e -= half_gap[rel, None]
        first = e.argmin(axis=0)
        ge1 = np.minimum(e[first, np.arange(len(sel))], cap)
        e[first, np.arange(len(sel))] = np.inf
        e1[sel] = ge1
        e2[sel] = np.minimum(e.min(axis=0), cap)
    if corner_px <= 0.0:
        return seeds, owner, e1
    r = np.minimum(corner_px * lat.corner_fn(seeds["hash"]), cap)[owner]
    a, b = r - np.minimum(e1, r), r - e2
    rounded = r - np.sqrt(a * a + b * b)
    return seeds, owner, np.where(e2 < r, rounded, e1)
