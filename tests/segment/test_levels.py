"""Level planes: what pass 1 writes is what pass 2 reads, -1 outside the plane, in memory or zarr."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from nclsm_scale.segment.levels import ArrayLevels, StoredLevels


@pytest.mark.parametrize("kind", ["array", "stored"])
def test_levels_written_by_core_read_back_by_any_window(tmp_path, kind) -> None:
    shape = (70, 90)
    plane = np.random.default_rng(0).integers(-1, 1 << 17, shape).astype(np.int32)
    levels = ArrayLevels(shape) if kind == "array" else StoredLevels.create(str(tmp_path / "lv"), shape, 32)
    for y0 in range(0, 70, 32):
        for x0 in range(0, 90, 32):
            levels.write(y0, x0, plane[y0 : y0 + 32, x0 : x0 + 32])
    if kind == "stored":
        levels = pickle.loads(pickle.dumps(levels))
    got = levels.levels(-5, 20, 80, 100)
    expected = np.full((85, 80), -1, dtype=np.int32)
    expected[5:75, :70] = plane[:, 20:90]
    assert got.dtype == np.int32 and np.array_equal(got, expected)
    assert np.all(levels.levels(100, 100, 103, 104) == -1)


def test_stored_levels_pickle_to_their_path_only(tmp_path) -> None:
    levels = StoredLevels.create(str(tmp_path / "lv"), (4096, 4096), 1024)
    levels.levels(0, 0, 2, 2)
    assert len(pickle.dumps(levels)) < 300
