"""Compiled loops against plain definitions (scipy, or Python loops on small windows)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi
from segment_fixtures import core_image

from nclsm_scale.segment import kernels
from nclsm_scale.segment.cores import find_cores


def _levels(h: int, w: int, top: int, seed: int) -> np.ndarray:
    """Random levels with many ties and background (-1)."""
    return np.random.default_rng(seed).integers(-1, top + 1, (h, w)).astype(np.int32)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 30), w=st.integers(1, 30), top=st.integers(0, 4), core=st.integers(0, 3),
       size=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_cores_are_scipy_components_with_their_boxes_edges_and_sizes(h, w, top, core, size, seed) -> None:
    level = _levels(h, w, top, seed)
    comp, n = ndi.label(level >= core)
    edge = np.zeros(n + 1, bool)
    edge[np.concatenate([comp[0], comp[-1], comp[:, 0], comp[:, -1]])] = True
    sizes = np.bincount(comp.ravel(), minlength=n + 1)
    kept = [c for c in range(1, n + 1) if sizes[c] >= size or edge[c]]  # scipy numbers in raster order too
    cores = find_cores(level, core, size)
    assert cores.n == len(kept)
    image = core_image(cores)
    lut = np.zeros(n + 1, np.int32)
    lut[kept] = np.arange(1, len(kept) + 1)
    assert np.array_equal(image, lut[comp])
    for j, (c, sl) in enumerate(zip(kept, [ndi.find_objects(comp)[c - 1] for c in kept], strict=True), 1):
        assert cores.boxes[j].tolist() == [sl[0].start, sl[1].start, sl[0].stop, sl[1].stop]
        assert cores.open[j] == edge[c]
    assert all(cores.at(y, x) == image[y, x] for y in range(h) for x in range(w))


def _ascend_reference(level: np.ndarray, margin: int, radius: int, unknown: int, none: int) -> np.ndarray:
    h, w = level.shape
    out = np.empty((h, w), np.int64)
    for y in range(h):
        for x in range(w):
            if level[y, x] < 0:
                out[y, x] = none
            elif not (margin <= y < h - margin and margin <= x < w - margin):
                out[y, x] = unknown
            else:
                # the largest (level, -position) among the 3 x 3 neighbours
                nb = [(level[y + dy, x + dx], -((y + dy) * w + x + dx)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
                top = -max(nb)[1]
                if top == y * w + x:  # a peak: the square of the radius decides
                    sq = [(level[yy, xx], -(yy * w + xx)) for yy in range(y - radius, y + radius + 1)
                          for xx in range(x - radius, x + radius + 1)]
                    top = -max(sq)[1]
                    top = none if top == y * w + x else top
                out[y, x] = top
    return out


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 24), w=st.integers(1, 24), top=st.integers(0, 3), margin=st.integers(1, 4),
       seed=st.integers(0, 2**16), data=st.data())
def test_ascent_parents_follow_the_definition(h, w, top, margin, seed, data) -> None:
    radius = data.draw(st.integers(1, margin))
    level = _levels(h, w, top, seed)
    n = h * w
    out = np.empty((h, w), np.int32)
    kernels.ascend(level, margin, radius, n, n + 1, out)
    assert np.array_equal(out, _ascend_reference(level, margin, radius, n, n + 1))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 3000), span=st.integers(1, 50), seed=st.integers(0, 2**16))
def test_resolve_finds_every_root_of_a_forest(n, span, seed) -> None:
    rng = np.random.default_rng(seed)
    forest = np.maximum(np.arange(n) - rng.integers(0, span + 1, n), 0)
    perm = rng.permutation(n)  # renumbered: chains run both ways in memory
    parent = np.empty(n, np.int32)
    parent[perm] = perm[forest]
    expected = parent.copy()
    while not np.array_equal(expected[expected], expected):
        expected = expected[expected]
    kernels.resolve(parent)
    assert np.array_equal(parent, expected)
