"""Global IDs: dense, ranked by global position, independent of how seeds were split into blocks."""

from __future__ import annotations

import numpy as np
import pytest

from nclsm_scale.segment.ids import load_table, lookup_ids, save_table, seed_table


def test_ids_are_dense_ranks_whatever_the_split(tmp_path) -> None:
    rng = np.random.default_rng(0)
    seeds = rng.choice(10**9, 500, replace=False)
    parts_a = np.array_split(rng.permutation(seeds), 7)
    parts_b = np.array_split(np.sort(seeds), 3)
    ta = seed_table([np.sort(p) for p in parts_a])
    tb = seed_table(parts_b)
    assert np.array_equal(ta, tb) and np.array_equal(ta, np.sort(seeds))
    ids = lookup_ids(ta, seeds)
    assert ids.dtype == np.uint32
    assert np.array_equal(np.sort(ids), np.arange(1, 501))
    assert np.all(np.diff(ids[np.argsort(seeds)].astype(np.int64)) == 1)
    save_table(tmp_path / "t.npy", ta)
    assert np.array_equal(lookup_ids(load_table(tmp_path / "t.npy"), seeds), ids)


def test_a_seed_owned_twice_or_missing_is_an_error() -> None:
    with pytest.raises(ValueError, match="owned by two blocks"):
        seed_table([np.array([1, 5]), np.array([5, 9])])
    with pytest.raises(RuntimeError, match="not in the seed table"):
        lookup_ids(np.array([1, 5, 9]), np.array([5, 6]))
