"""Hash and value-noise primitives."""

from __future__ import annotations

import numpy as np

from nclsm_scale.synth.noise import (
    normal_approx,
    pixel_hash,
    uniform,
    value_noise_grid,
    value_noise_points,
)


def test_grid_and_point_noise_agree() -> None:
    """Separable grid evaluation equals pointwise evaluation bitwise (any window)."""
    grid = value_noise_grid(13, -7, 50, 61, 9.5, 42, np.float64)
    yy, xx = np.mgrid[13:63, -7:54].astype(np.float64)
    np.testing.assert_array_equal(grid, value_noise_points(yy, xx, 9.5, 42))
    np.testing.assert_array_equal(
        value_noise_grid(20, 0, 10, 10, 9.5, 42, np.float64), grid[7:17, 7:17]
    )


def test_pixel_hash_windows_and_distributions() -> None:
    """Pixel hashes depend only on position; uniforms and normals have the right moments."""
    h = pixel_hash(100, 200, 300, 400, 9)
    np.testing.assert_array_equal(pixel_hash(150, 333, 20, 30, 9), h[50:70, 133:163])
    u = uniform(h)
    assert abs(u.mean() - 0.5) < 0.01 and 0.0 <= u.min() and u.max() < 1.0
    n = normal_approx(h)
    assert abs(float(n.mean())) < 0.01 and abs(float(n.std()) - 1.0) < 0.01
