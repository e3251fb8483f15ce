"""Slide geometry: fascicles, fibres, tissue outline, holes and folds, pointwise.

:class:`SlidePlan` holds everything drawn once per slide from the seed. Its
methods evaluate the geometry at any points, so a chunk, a whole slide and the
mirrored layer of a fold all use the same code. Fibre identity is a 64-bit seed
key (fascicle cell and fibre cell packed); dense IDs are assigned later.

Rules that keep every fibre whole: a fibre exists only if its seed lies in its
own fascicle, inside the tissue outline and outside holes (decided per seed);
holes and the tissue edge therefore follow fibre boundaries, as in real
sections where whole fibres drop out. Dropped-out fibres (decided per seed as
well) leave their cell as unlabelled interstitium. A fine second domain warp
makes outlines wavy; labels follow it, so the ground truth stays exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from nclsm_scale.config import SynthConfig
from nclsm_scale.errors import ConfigError
from nclsm_scale.synth.lattice import MIN_GAP_PX, Lattice, evaluate
from nclsm_scale.synth.noise import (
    hash_ints,
    salt,
    slide_uniform,
    uniform,
    uniform_k,
    value_noise_grid,
    value_noise_points,
)

TILE_PX = 128
CAP_UM = 16.0  # boundary distances are exact up to here (membrane, mito rim, corners)
# Calibration (measured on 2 um/px slides, interior fibres): jittered lattice alone
# gives CSA CV ~ 0.157 + 0.36 * jitter; power weights add in quadrature ~1.35 * spread.
_CV_AT_ZERO_JITTER, _CV_PER_JITTER, _JITTER = 0.157, 0.36, 0.25
_CV_PER_SPREAD = 1.35
_AREA_CORRECTION = 1.03
_MASK20 = (1 << 20) - 1
_OFF19 = 1 << 19


def _unit(a: float, b: float) -> tuple[float, float]:
    y, x = 2.0 * a - 1.0, 2.0 * b - 1.0
    n = math.sqrt(y * y + x * x)
    return (y / n, x / n) if n > 1e-6 else (1.0, 0.0)


@dataclass(frozen=True)
class Fold:
    """One folded band of tissue.

    Points with ``0 <= t < width`` and ``|a| < half_length``, where ``a = m.(p - p0)``
    and ``t = n.(p - p0) + bend a^2`` (``n`` the fold normal, ``m`` along the fold).
    """

    y0: float
    x0: float
    ny: float
    nx: float
    width_px: float
    bend_per_px: float
    half_length_px: float


@dataclass
class SlidePlan:
    """Everything about one slide's geometry that is drawn from the seed."""

    cfg: SynthConfig
    fascicles: Lattice = field(init=False)
    spacing_px: float = field(init=False)
    cap_px: float = field(init=False)
    corner_px: float = field(init=False)
    jitter: float = field(init=False)
    weight_spread: float = field(init=False)
    folds: list[Fold] = field(init=False)
    dropout_fraction: float = field(init=False)
    wave_px: float = field(init=False)
    wave_length_px: float = field(init=False)
    sites: dict = field(default_factory=dict, init=False, repr=False)  # vessel/nerve fits, memoised
    _fibre_lattices: dict[int, Lattice] = field(default_factory=dict, init=False, repr=False)
    _membership: dict[int, bool] = field(default_factory=dict, init=False, repr=False)
    _dropped: dict[int, tuple[bool, bool]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        cfg = self.cfg
        px = cfg.pixel_size_um
        gap_px = max(cfg.gap_um / px, MIN_GAP_PX)
        diam_px = math.sqrt(cfg.mean_csa_um2) / px
        # cell area ~ fibre area + half the gap along a hexagon-like perimeter
        self.spacing_px = _AREA_CORRECTION * (diam_px + 1.9 * gap_px / 2.0 + 0.6 * gap_px)
        base_cv = _CV_AT_ZERO_JITTER + _CV_PER_JITTER * _JITTER
        if cfg.csa_cv >= base_cv:
            self.jitter = _JITTER
            self.weight_spread = math.sqrt(cfg.csa_cv**2 - base_cv**2) / _CV_PER_SPREAD
        else:
            self.jitter = max((cfg.csa_cv - _CV_AT_ZERO_JITTER) / _CV_PER_JITTER, 0.05)
            self.weight_spread = 0.0
        self.cap_px = min(0.27 * self.spacing_px, max(CAP_UM / px, 6.0 + 1.4 * gap_px))
        self.corner_px = min(0.2 * self.spacing_px, self.cap_px - 0.7 * gap_px)
        fasc_px = max(cfg.fascicle_diameter_um / px, 5.0 * self.spacing_px)
        if max(cfg.size_px) / fasc_px > 2000 or max(cfg.size_px) / self.spacing_px > 2**18:
            raise ConfigError(
                f"synth: a {cfg.size_px[0]}x{cfg.size_px[1]} px slide has too many fascicles or "
                "fibres along one side for the 64-bit fibre keys; raise synth.fascicle_diameter_um "
                "(or synth.pixel_size_um), or render a smaller slide."
            )
        self.fascicles = Lattice(
            spacing=fasc_px,
            jitter=0.4,
            salt=salt(cfg.seed, "fascicle"),
            key_prefix=0,
            weight_fn=lambda h: 0.5 * (uniform_k(h, 1) - 0.5),
            gap_px=cfg.perimysium_um / px,
            gap_range=cfg.perimysium_factor_range,
        )
        self.folds = [self._fold(k) for k in range(cfg.folds)]
        lo, hi = cfg.dropout_fraction_range
        self.dropout_fraction = lo + (hi - lo) * self._draw("dropout")
        # Crenated outlines: wavelengths of 4-12 um (at least 3 px, so coarse pixels see a smooth
        # outline); the amplitude stays below a tenth of the wavelength, so the warp's slope
        # (<= 3 amplitude / wavelength for value noise) keeps it one-to-one and fibres whole.
        self.wave_length_px = max((4.0 + 8.0 * self._draw("wave", 0)) / px, 3.0)
        lo, hi = cfg.outline_wave_um_range
        self.wave_px = min((lo + (hi - lo) * self._draw("wave", 1)) / px, 0.1 * self.wave_length_px)
        # Fascicle outlines wave at the fibre scale (slope <= 0.3, so a clipped fibre stays
        # whole) and fibres whose seed lies near them drop out: fascicles end on whole-fibre,
        # jagged outlines as in real sections, not on straight cuts through fibres.
        self.border_wave_px = 0.2 * self.spacing_px
        # fascicle distances (already net of half the perimysium gap) matter up to the fibre cap
        # at pixels and up to half a spacing (plus the wave) at seeds
        self._fascicle_cap = min(
            0.5 * self.fascicles.gap_max_px + max(self.cap_px, 0.5 * self.spacing_px) + self.border_wave_px + 1.0,
            self.fascicles.max_cap_px(),
        )

    # --- per-slide draws -------------------------------------------------
    def _draw(self, name: str, k: int = 0) -> float:
        return slide_uniform(self.cfg.seed, name, k)

    def _fold(self, k: int) -> Fold:
        h, w = self.cfg.size_px
        ny, nx = _unit(self._draw(f"fold{k}", 0), self._draw(f"fold{k}", 1))
        width = (
            self.cfg.fold_width_um
            / self.cfg.pixel_size_um
            * (0.6 + 0.8 * self._draw(f"fold{k}", 2))
        )
        return Fold(
            y0=h * (0.2 + 0.6 * self._draw(f"fold{k}", 3)),
            x0=w * (0.2 + 0.6 * self._draw(f"fold{k}", 4)),
            ny=ny,
            nx=nx,
            width_px=width,
            bend_per_px=(self._draw(f"fold{k}", 5) - 0.5) * 2.0 / max(h, w),
            half_length_px=math.hypot(h, w) * (0.15 + 0.3 * self._draw(f"fold{k}", 6)),
        )

    def fibre_weight(self, h: np.ndarray) -> np.ndarray:
        """Power weight (units spacing^2) of fibre seeds: size spread, atrophy, hypertrophy."""
        cfg = self.cfg
        w = self.weight_spread * (2.0 * uniform_k(h, 1) - 1.0)
        u_kind, u_size = uniform_k(h, 2), uniform_k(h, 3)
        atrophic = u_kind < cfg.atrophic_fraction
        hyper = ~atrophic & (u_kind < cfg.atrophic_fraction + cfg.hypertrophic_fraction)
        w = np.where(atrophic, -(0.45 + 0.4 * u_size), w)
        return np.where(hyper, 0.2 + 0.15 * u_size, w)

    def fibre_corner(self, h: np.ndarray) -> np.ndarray:
        """Corner-rounding factor of fibre seeds: atrophic fibres stay angular."""
        atrophic = uniform_k(h, 2) < self.cfg.atrophic_fraction
        return np.where(atrophic, 0.15, 0.6 + 0.8 * uniform_k(h, 5))

    def fibre_lattice(self, fkey: int, fy: float, fx: float, fhash: int) -> Lattice:
        """Return the fibre lattice of the fascicle with key ``fkey`` (seed at ``fy, fx``)."""
        lat = self._fibre_lattices.get(fkey)
        if lat is not None:
            return lat
        cfg = self.cfg
        h = np.array([fhash], np.uint64)
        u = [float(uniform_k(h, k)[0]) for k in range(2, 9)]
        oblique = u[0] < cfg.ntm_fraction
        lo, hi = cfg.ntm_aspect_range
        aspect = lo + (hi - lo) * u[1] if oblique else 1.0 + 0.12 * u[1]
        c, s = _unit(u[2], u[3])
        r = math.sqrt(aspect)
        matrix = (c / r, s / r, -s * r, c * r)
        cell_y = ((fkey >> 20) & _MASK20) - _OFF19
        cell_x = (fkey & _MASK20) - _OFF19
        lat = Lattice(
            spacing=self.spacing_px * (0.92 + 0.16 * u[4]),
            jitter=self.jitter,
            salt=salt(cfg.seed, "fibre"),
            key_prefix=((cell_y + 2048) << 52) | ((cell_x + 2048) << 40),
            weight_fn=self.fibre_weight,
            corner_fn=self.fibre_corner,
            gap_px=cfg.gap_um / cfg.pixel_size_um,
            touching_fraction=cfg.touching_fraction,
            origin=(fy, fx),
            matrix=matrix,
            stretch_max=r,
        )
        self._fibre_lattices[fkey] = lat
        return lat

    # --- pointwise fields --------------------------------------------------
    def tissue_at(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Inside the tissue outline and outside holes (evaluated at fibre seeds)."""
        h, w = self.cfg.size_px
        e = self.cfg.tissue_extent
        cy = h * (0.42 + 0.16 * self._draw("tissue", 0))
        cx = w * (0.42 + 0.16 * self._draw("tissue", 1))
        ay = e * h * (0.44 + 0.14 * self._draw("tissue", 2))
        ax = e * w * (0.44 + 0.14 * self._draw("tissue", 3))
        c, s = _unit(self._draw("tissue", 4), self._draw("tissue", 5))
        dy, dx = (y - cy) / ay, (x - cx) / ax
        q1, q2 = c * dy + s * dx, -s * dy + c * dx
        wobble = value_noise_points(y, x, 0.3 * min(ay, ax), salt(self.cfg.seed, "outline"))
        limit = 0.85 + 0.35 * wobble
        inside = q1 * q1 + q2 * q2 < limit * limit
        hole_px = 250.0 / self.cfg.pixel_size_um
        holes = value_noise_points(y, x, hole_px, salt(self.cfg.seed, "holes"))
        return inside & (holes < 1.0 - 0.75 * math.sqrt(self.cfg.hole_fraction))

    def _warp_terms(self) -> list[tuple[float, float, str]]:
        """(amplitude px, wavelength px, salt name) of the coarse and the fine warp."""
        terms = [(self.cfg.warp_fraction * self.spacing_px, 0.7 * self.spacing_px, "warp")]
        if self.wave_px > 0.0:
            terms.append((self.wave_px, self.wave_length_px, "wave"))
        return terms

    def _clip(self, e: np.ndarray, fe: np.ndarray) -> np.ndarray:
        """Fibre edge distance clipped by the fascicle edge, the corner where they meet rounded."""
        lo, hi = np.minimum(e, fe), np.maximum(e, fe)
        r = self.corner_px
        a, b = r - np.minimum(lo, r), r - hi
        return np.where(hi < r, r - np.sqrt(a * a + b * b), lo)

    def _tissue_around(self, sy: np.ndarray, sx: np.ndarray) -> np.ndarray:
        """Whether the tissue outline test holds 0.7 fibre spacings around seeds (six directions)."""
        ok = self.tissue_at(sy, sx)
        r = 0.7 * self.spacing_px
        for k in range(6):
            a = math.pi * k / 3.0
            ok &= self.tissue_at(sy + r * math.sin(a), sx + r * math.cos(a))
        return ok

    def warp_grid(self, y0: int, x0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """Warped coordinates of a pixel window (float64, absolute)."""
        ys = np.broadcast_to(np.arange(y0, y0 + h, dtype=np.float64)[:, None], (h, w))
        xs = np.broadcast_to(np.arange(x0, x0 + w, dtype=np.float64)[None, :], (h, w))
        for amp, lam, name in self._warp_terms():
            wy = value_noise_grid(y0, x0, h, w, lam, salt(self.cfg.seed, f"{name}y"), np.float64)
            wx = value_noise_grid(y0, x0, h, w, lam, salt(self.cfg.seed, f"{name}x"), np.float64)
            ys, xs = ys + amp * (2.0 * wy - 1.0), xs + amp * (2.0 * wx - 1.0)
        return ys, xs

    def warp_points(self, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Warped coordinates of arbitrary points (same field as :meth:`warp_grid`)."""
        wy_, wx_ = y, x
        for amp, lam, name in self._warp_terms():
            wy = value_noise_points(y, x, lam, salt(self.cfg.seed, f"{name}y"))
            wx = value_noise_points(y, x, lam, salt(self.cfg.seed, f"{name}x"))
            wy_, wx_ = wy_ + amp * (2.0 * wy - 1.0), wx_ + amp * (2.0 * wx - 1.0)
        return wy_, wx_

    def border_wave(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Offset (px) added to fascicle-edge distances at warped points."""
        n = value_noise_points(y, x, 2.0 * self.spacing_px, salt(self.cfg.seed, "border"))
        return self.border_wave_px * (2.0 * n - 1.0)

    def dropped(self, seeds: dict[str, np.ndarray], lat: Lattice) -> np.ndarray:
        """Whether fibre seeds dropped out of the section: near a fascicle outline, or at random.

        Seeds within 0.35-0.6 spacings (hashed) of the waved fascicle outline drop, so
        the outline runs between whole fibres (or cuts a little off the next ones).
        Elsewhere the chance is ``3 n^2`` times the slide's dropout fraction, ``n`` a
        value noise at the seed (mean of ``n^2`` about 1/3): missing fibres come in
        groups, leaving interstitial spaces of one to several fibres as real sections do.
        """
        sy, sx = lat.to_y(seeds["uy"], seeds["ux"])
        _, _, fe = evaluate(self.fascicles, sy, sx, self._fascicle_cap)
        fe = fe + self.border_wave(sy, sx)
        near = fe < self.spacing_px * (0.35 + 0.25 * uniform_k(seeds["hash"], 7))
        if self.dropout_fraction <= 0.0:
            return near
        n = value_noise_points(sy, sx, 3.0 * self.spacing_px, salt(self.cfg.seed, "dropout-cluster"))
        u = uniform(hash_ints(salt(self.cfg.seed, "dropout"), seeds["key"]))
        return near | (u < self.dropout_fraction * 3.0 * n * n)

    def sample(self, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fibre key, edge (px) and tissue flag at pixel positions (1-D, not yet warped)."""
        wy, wx = self.warp_points(np.asarray(y, np.float64), np.asarray(x, np.float64))
        return self.evaluate_points(wy, wx)

    def free_at(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Whether pixel positions (1-D) are tissue but no fibre: room for vessels and nerves."""
        key, _, tissue = self.sample(y, x)
        return tissue & (key == 0)

    def fold_coords(
        self, y: np.ndarray, x: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Fold mask, mirrored source position and layer weight (soft band edges) at each point.

        ``y`` and ``x`` broadcast together (e.g. a column and a row of a window).
        """
        shape = np.broadcast_shapes(np.shape(y), np.shape(x))
        in_fold = np.zeros(shape, bool)
        sy = np.broadcast_to(y, shape).astype(np.float64)
        sx = np.broadcast_to(x, shape).astype(np.float64)
        weight = np.zeros(shape, np.float32)
        taper = 3.0 / self.cfg.pixel_size_um
        for f in self.folds:
            dy, dx = y - f.y0, x - f.x0
            along = -f.nx * dy + f.ny * dx
            t = f.ny * dy + f.nx * dx + f.bend_per_px * along * along
            inset = np.minimum(np.minimum(t, f.width_px - t), f.half_length_px - np.abs(along))
            band = (inset > 0.0) & ~in_fold
            if not band.any():
                continue
            idx = np.nonzero(band)
            t_b = t[idx]
            along_b = np.broadcast_to(along, shape)[idx]
            shift = 2.0 * t_b + 0.15 * f.width_px
            sy[idx] = sy[idx] - shift * f.ny + 0.1 * along_b
            sx[idx] = sx[idx] - shift * f.nx
            ramp = np.clip(inset[idx] / taper, 0.0, 1.0)
            weight[idx] = (ramp * ramp * (3.0 - 2.0 * ramp)).astype(np.float32)
            in_fold |= band
        return in_fold, sy, sx, weight

    def evaluate_points(
        self, y: np.ndarray, x: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fibre key, edge distance (px) and tissue flag at warped 1-D points.

        ``key`` is 0 outside fibres; ``edge_px`` is > 0 inside a fibre, the
        (negative) distance to the owning fibre in the gaps, and ``-cap_px``
        where no fibre is near.
        """
        n = y.shape[0]
        key = np.zeros(n, np.uint64)
        edge = np.full(n, -self.cap_px)
        tissue = np.zeros(n, bool)
        fas, f_owner, f_edge = evaluate(self.fascicles, y, x, self._fascicle_cap)
        for fi in np.flatnonzero(np.bincount(f_owner, minlength=len(fas["key"]))):
            sel = np.flatnonzero(f_owner == fi)
            fkey = int(fas["key"][fi])
            lat = self.fibre_lattice(
                fkey, float(fas["uy"][fi]), float(fas["ux"][fi]), int(fas["hash"][fi])
            )

            def in_fascicle(
                seeds: dict[str, np.ndarray], lat: Lattice = lat, fkey: int = fkey
            ) -> np.ndarray:
                return self._seed_in_fascicle(lat, fkey, seeds)

            seeds, owner, e = evaluate(
                lat, y[sel], x[sel], self.cap_px, keep_fn=in_fascicle, corner_px=self.corner_px
            )
            if not len(seeds["key"]):
                continue
            sy, sx = lat.to_y(seeds["uy"], seeds["ux"])
            in_tissue = self.tissue_at(sy, sx)
            e = self._clip(e, f_edge[sel] + self.border_wave(y[sel], x[sel]))
            v = in_tissue[owner]
            dropped, outer = self._dropped_seeds(seeds, lat)
            gone = dropped[owner]
            v &= ~outer[owner]  # a dropped cell on the tissue outline is background, not interstitium
            is_fibre = v & (e > 0.0) & ~gone
            key[sel] = np.where(is_fibre, seeds["key"][owner], np.uint64(0))
            # in a dropped cell (and its share of the gaps) the nearest fibre lies about one gap
            # beyond the cell's own outline; farther out (perimysium) e already is negative enough
            g = lat.gap_px
            e_gone = np.maximum(np.where(e > -0.5 * g, -(e + g), e), -self.cap_px)
            e = np.where(gone, e_gone, e)
            edge[sel] = np.where(v, e, -self.cap_px)
            tissue[sel] = v
        return key, edge, tissue

    def _seed_in_fascicle(
        self, lat: Lattice, fkey: int, seeds: dict[str, np.ndarray]
    ) -> np.ndarray:
        """Whether each fibre seed lies in fascicle ``fkey`` (memoised per chunk)."""
        cache = self._membership
        keys = seeds["key"].tolist()
        known = [cache.get(k) for k in keys]
        missing = [n for n, v in enumerate(known) if v is None]
        if missing:
            sy, sx = lat.to_y(seeds["uy"][missing], seeds["ux"][missing])
            sfas, s_owner, _ = evaluate(self.fascicles, sy, sx, self._fascicle_cap, edges=False)
            for n, v in zip(
                missing, (sfas["key"][s_owner] == np.uint64(fkey)).tolist(), strict=True
            ):
                cache[keys[n]] = known[n] = v
        return np.array(known, bool)

    def _dropped_seeds(self, seeds: dict[str, np.ndarray], lat: Lattice) -> tuple[np.ndarray, np.ndarray]:
        """(dropped, dropped on the tissue outline) per seed, memoised per chunk like membership."""
        cache = self._dropped
        keys = seeds["key"].tolist()
        missing = [n for n, k in enumerate(keys) if k not in cache]
        if missing:
            sub = {k: v[missing] for k, v in seeds.items()}
            drop = self.dropped(sub, lat)
            outer = np.zeros(len(missing), bool)
            if drop.any():
                sy, sx = lat.to_y(sub["uy"][drop], sub["ux"][drop])
                outer[drop] = ~self._tissue_around(sy, sx)
            for n, d, o in zip(missing, drop.tolist(), outer.tolist(), strict=True):
                cache[keys[n]] = (d, o)
        pairs = np.array([cache[k] for k in keys], bool).reshape(len(keys), 2)
        return pairs[:, 0], pairs[:, 1]

    def evaluate_grid(
        self, y0: int, x0: int, h: int, w: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`evaluate_points` on every pixel of a window, tile by tile."""
        self._membership.clear()
        self._dropped.clear()
        wy, wx = self.warp_grid(y0, x0, h, w)
        key = np.zeros((h, w), np.uint64)
        edge = np.zeros((h, w), np.float64)
        tissue = np.zeros((h, w), bool)
        for ty in range(0, h, TILE_PX):
            for tx in range(0, w, TILE_PX):
                sl = np.s_[ty : ty + TILE_PX, tx : tx + TILE_PX]
                k, e, t = self.evaluate_points(wy[sl].ravel(), wx[sl].ravel())
                shape = key[sl].shape
                key[sl], edge[sl], tissue[sl] = k.reshape(shape), e.reshape(shape), t.reshape(shape)
        return key, edge, tissue


def fascicle_hash_of(key: np.ndarray, seed: int) -> np.ndarray:
    """Hash of the fascicle a fibre key belongs to (as drawn by the fascicle lattice)."""
    key = np.asarray(key, np.uint64)
    fy = ((key >> np.uint64(52)).astype(np.int64)) - 2048
    fx = (((key >> np.uint64(40)) & np.uint64(0xFFF)).astype(np.int64)) - 2048
    fkey = ((fy + _OFF19).astype(np.uint64) << np.uint64(20)) | (fx + _OFF19).astype(np.uint64)
    return hash_ints(salt(seed, "fascicle"), fkey)


def is_oblique(key: np.ndarray, cfg: SynthConfig) -> np.ndarray:
    """Whether the fibres with these keys lie in an obliquely cut (NTM) fascicle."""
    return uniform_k(fascicle_hash_of(key, cfg.seed), 2) < cfg.ntm_fraction
