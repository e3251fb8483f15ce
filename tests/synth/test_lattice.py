"""Exactness and point-independence of the power-diagram evaluator."""

from __future__ import annotations

import numpy as np

from nclsm_scale.synth.lattice import Lattice, evaluate
from nclsm_scale.synth.noise import uniform_k


def _lattice(matrix=(1.0, 0.0, 0.0, 1.0), stretch=1.0) -> Lattice:
    return Lattice(
        spacing=40.0,
        jitter=0.45,
        salt=1234,
        key_prefix=1 << 60,
        weight_fn=lambda h: 0.6 * (uniform_k(h, 1) - 0.5),
        gap_px=3.0,
        touching_fraction=0.2,
        origin=(5.0, -7.0),
        matrix=matrix,
        stretch_max=stretch,
    )


def _brute_force(lat: Lattice, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    uy, ux = lat.to_u(y, x)
    cy, cx = np.meshgrid(np.arange(-10, 14), np.arange(-10, 14), indexing="ij")
    s = lat.seeds(cy.ravel(), cx.ravel())
    d = (uy[None] - s["uy"][:, None]) ** 2 + (ux[None] - s["ux"][:, None]) ** 2 - s["w"][:, None]
    return s["key"][np.argmin(d, axis=0)]


def test_owner_matches_brute_force() -> None:
    """The owner equals the power-diagram owner over all seeds (transverse and oblique)."""
    rng = np.random.default_rng(0)
    y, x = rng.uniform(0, 300, 4000), rng.uniform(0, 300, 4000)
    for lat in (_lattice(), _lattice((0.6, 0.3, -0.9, 1.2), 1.6)):
        seeds, owner, _ = evaluate(lat, y, x, cap_px=8.0)
        mismatch = seeds["key"][owner] != _brute_force(lat, y, x)
        assert mismatch.mean() < 1e-3  # only exact ties on rounding may differ


def test_result_independent_of_other_points() -> None:
    """Evaluating points alone or together gives bitwise identical owners and distances."""
    rng = np.random.default_rng(1)
    y, x = rng.uniform(0, 400, 3000), rng.uniform(0, 400, 3000)
    lat = _lattice((0.8, 0.2, -0.5, 1.125), 1.4)
    seeds, owner, edge = evaluate(lat, y, x, cap_px=8.0, corner_px=4.0)
    for part in (slice(0, 7), slice(100, 1100), slice(2999, 3000)):
        s2, o2, e2 = evaluate(lat, y[part], x[part], cap_px=8.0, corner_px=4.0)
        np.testing.assert_array_equal(s2["key"][o2], seeds["key"][owner[part]])
        np.testing.assert_array_equal(e2, edge[part])


def test_edge_is_distance_to_bisector() -> None:
    """Without gaps and corners the edge value is the distance to the cell boundary (capped)."""
    lat = Lattice(
        spacing=50.0,
        jitter=0.3,
        salt=5,
        key_prefix=0,
        weight_fn=lambda h: 0.0 * uniform_k(h, 0),
        gap_px=0.0,
    )
    yy, xx = np.mgrid[0:200:1.0, 0:200:1.0]
    seeds, owner, edge = evaluate(lat, yy.ravel(), xx.ravel(), cap_px=10.0)
    lab = owner.reshape(yy.shape)
    boundary = np.zeros_like(lab, bool)
    boundary[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    boundary[1:, :] |= lab[1:, :] != lab[:-1, :]
    e = edge.reshape(yy.shape)
    assert np.abs(e[boundary]).max() < 1.0
    assert e.max() <= 10.0 and np.median(e[~boundary]) > 3.0
