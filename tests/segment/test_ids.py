"""Global IDs: dense, ranked by global position, independent of how seeds were split into blocks."""

from __future__ import annotations

import numpy as np
import pytest

from nclsm_scale.segment.assign import window_seeds
from nclsm_scale.segment.ids import load_table, save_table, seed_table

SHAPE = (20_000, 50_000)  # 10**9 pixels


def _ids_of(table: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """IDs the assignment pass gives ``seeds`` (global linear indices), read from a whole-image window."""
    flat, ids = window_seeds(table, 0, 0, *SHAPE, SHAPE)
    return ids[np.searchsorted(flat, seeds)]


def test_ids_are_dense_ranks_whatever_the_split(tmp_path) -> None:
    rng = np.random.default_rng(0)
    seeds = rng.choice(10**9, 500, replace=False)
    parts_a = np.array_split(rng.permutation(seeds), 7)
    parts_b = np.array_split(np.sort(seeds), 3)
    ta = seed_table([np.sort(p) for p in parts_a])
    tb = seed_table(parts_b)
    assert np.array_equal(ta, tb) and np.array_equal(ta, np.sort(seeds))
    ids = _ids_of(ta, seeds)
    assert np.array_equal(np.sort(ids), np.arange(1, 501))
    assert np.all(np.diff(ids[np.argsort(seeds)].astype(np.int64)) == 1)
    save_table(tmp_path / "t.npy", ta)
    assert np.array_equal(_ids_of(load_table(tmp_path / "t.npy"), seeds), ids)


def test_a_seed_owned_twice_is_an_error() -> None:
    with pytest.raises(ValueError, match="owned by two blocks"):
        seed_table([np.array([1, 5]), np.array([5, 9])])
