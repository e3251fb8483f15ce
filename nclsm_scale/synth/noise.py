"""Integer hashing and value noise: pure, reproducible functions of position.

Everything random in a synthetic section is a hash of integers (the seed, a salt,
lattice or pixel coordinates), so any pixel can be computed alone and a slide
rendered chunk by chunk equals the slide rendered whole. Only exactly rounded
IEEE operations (``+ - * /``, ``sqrt``, ``floor``) are used on per-pixel or
per-seed arrays: transcendental ufuncs may differ between SIMD and tail lanes.
"""

from __future__ import annotations

import functools

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_OFF = np.int64(1 << 31)


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser of a ``uint64`` array (wrapping arithmetic)."""
    z = np.asarray(x, dtype=np.uint64)
    if z.ndim == 0:  # numpy scalars warn on wrap-around; arrays wrap silently
        with np.errstate(over="ignore"):
            return np.asarray(_mix(z))
    return _mix(z)


def _mix(z: np.ndarray) -> np.ndarray:
    z = z + _GOLDEN
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def hash_ints(*parts: np.ndarray | np.integer | int) -> np.ndarray:
    """Hash several integer arrays (broadcast together) into one ``uint64`` array."""
    h = np.zeros((), dtype=np.uint64)
    for part in parts:
        p = np.asarray(part)
        p = p.astype(np.uint64) if p.dtype != np.uint64 else p
        h = mix64(h ^ p)
    return np.asarray(h)


@functools.lru_cache(maxsize=4096)
def salt(seed: int, name: str) -> int:
    """Return a 63-bit salt from the slide seed and a stream name (stable across runs)."""
    acc = np.array([seed], dtype=np.uint64)
    for ch in name.encode():
        acc = mix64(acc ^ np.uint64(ch))
    return int(acc[0] >> np.uint64(1))


def uniform(h: np.ndarray) -> np.ndarray:
    """Uniform float64 in [0, 1) from the top 53 bits of a hash."""
    return (np.asarray(h, dtype=np.uint64) >> np.uint64(11)).astype(np.float64) * (2.0**-53)


def uniform_k(h: np.ndarray, k: int) -> np.ndarray:
    """Return the ``k``-th independent uniform drawn from one hash (k = 0, 1, 2, ...)."""
    return uniform(
        mix64(np.asarray(h, dtype=np.uint64) ^ np.uint64(0x5851F42D4C957F2D * (k + 1) % 2**64))
    )


@functools.lru_cache(maxsize=4096)
def slide_uniform(seed: int, name: str, k: int = 0) -> float:
    """Return the ``k``-th uniform in [0, 1) of the per-slide stream ``name`` (one draw, cached)."""
    return float(uniform_k(np.array([salt(seed, name)], np.uint64), k)[0])


def exp_approx(x: np.ndarray) -> np.ndarray:
    """``exp(x)`` as ``(1 + x/64)^64`` by six squarings: exact operations only.

    Relative error below 1 % for ``|x| <= 1`` (it is used for log-normal spreads,
    where only the shape matters); ``x`` must exceed -64.
    """
    y = 1.0 + np.asarray(x) / 64.0
    for _ in range(6):
        y = y * y
    return y


def normal_approx(h: np.ndarray) -> np.ndarray:
    """Approximately standard normal float32 from a hash (Irwin-Hall, four 16-bit uniforms)."""
    h = np.asarray(h, dtype=np.uint64)
    m = np.uint64(0xFFFF)
    s = (h & m).astype(np.float32)
    s += ((h >> np.uint64(16)) & m).astype(np.float32)
    s += ((h >> np.uint64(32)) & m).astype(np.float32)
    s += (h >> np.uint64(48)).astype(np.float32)
    return (s * np.float32(1.0 / 65536.0) - np.float32(2.0)) * np.float32(1.7320508)


def pixel_hash(y0: int, x0: int, h: int, w: int, salt_: int) -> np.ndarray:
    """Hash of every pixel of the window ``[y0, y0+h) x [x0, x0+w)`` (absolute coordinates)."""
    ys = mix64(np.arange(y0, y0 + h, dtype=np.int64).astype(np.uint64) + np.uint64(salt_))
    xs = np.arange(x0, x0 + w, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        return mix64(ys[:, None] ^ (xs[None, :] * _M2))


def _smooth(t: np.ndarray) -> np.ndarray:
    return t * t * (3.0 - 2.0 * t)


def lattice_values(cy: np.ndarray, cx: np.ndarray, salt_: int) -> np.ndarray:
    """Uniform value in [0, 1) at integer lattice nodes (arrays broadcast)."""
    packed = ((np.asarray(cy, np.int64) + _OFF).astype(np.uint64) << np.uint64(32)) ^ (
        np.asarray(cx, np.int64) + _OFF
    ).astype(np.uint64)
    return uniform(mix64(packed ^ np.uint64(salt_)))


def value_noise_grid(
    y0: int, x0: int, h: int, w: int, spacing_px: float, salt_: int, dtype: type = np.float32
) -> np.ndarray:
    """Smooth value noise in [0, 1) on the pixel grid of a window (``dtype``).

    Separable evaluation: nodes are interpolated along x for each lattice row,
    then along y; every pixel's value depends only on its absolute position.
    """
    fy = np.arange(y0, y0 + h, dtype=np.float64) / spacing_px
    fx = np.arange(x0, x0 + w, dtype=np.float64) / spacing_px
    iy, ix = np.floor(fy), np.floor(fx)
    sy, sx = _smooth(fy - iy), _smooth(fx - ix)
    iy, ix = iy.astype(np.int64), ix.astype(np.int64)
    rows = np.arange(iy[0], iy[-1] + 2)
    cols = np.arange(ix[0], ix[-1] + 2)
    nodes = lattice_values(rows[:, None], cols[None, :], salt_)
    jx = ix - cols[0]
    along_x = nodes[:, jx] * (1.0 - sx) + nodes[:, jx + 1] * sx
    jy = iy - rows[0]
    out = along_x[jy] * (1.0 - sy)[:, None] + along_x[jy + 1] * sy[:, None]
    return out.astype(dtype, copy=False)


def value_noise_points(y: np.ndarray, x: np.ndarray, spacing_px: float, salt_: int) -> np.ndarray:
    """Smooth value noise in [0, 1) at arbitrary points (float64)."""
    fy, fx = np.asarray(y, np.float64) / spacing_px, np.asarray(x, np.float64) / spacing_px
    iy, ix = np.floor(fy), np.floor(fx)
    sy, sx = _smooth(fy - iy), _smooth(fx - ix)
    iy, ix = iy.astype(np.int64), ix.astype(np.int64)
    v00 = lattice_values(iy, ix, salt_)
    v01 = lattice_values(iy, ix + 1, salt_)
    v10 = lattice_values(iy + 1, ix, salt_)
    v11 = lattice_values(iy + 1, ix + 1, salt_)
    top = v00 * (1.0 - sx) + v01 * sx
    bottom = v10 * (1.0 - sx) + v11 * sx
    return top * (1.0 - sy) + bottom * sy
