"""Global percentile normalisation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from nclsm_scale.normalise import NormStats, apply_norm, compute_norm


def test_percentiles_map_to_zero_and_one():
    rng = np.random.default_rng(0)
    image = np.stack([rng.uniform(100, 200, (64, 64)), rng.uniform(0, 10, (64, 64))]).astype(
        np.uint16
    )
    stats = compute_norm(image, lo_percentile=0, hi_percentile=100, level=2)
    out = apply_norm(image, stats)
    assert out.dtype == np.float32
    assert np.allclose(out.min(axis=(1, 2)), 0) and np.allclose(out.max(axis=(1, 2)), 1)
    assert stats.level == 2


def test_flat_channel_does_not_divide_by_zero():
    image = np.zeros((2, 8, 8), np.float32)
    image[1] = 5
    stats = compute_norm(image)
    assert stats.hi == [1.0, 6.0]
    assert np.all(np.isfinite(apply_norm(image, stats)))


def test_stats_round_trip_through_json():
    stats = NormStats(lo=[1.5, 2.0], hi=[100.0, 50.0], level=3)
    again = NormStats.model_validate(json.loads(stats.model_dump_json()))
    assert again == stats


def test_invalid_stats_are_rejected():
    with pytest.raises(ValidationError):
        NormStats(lo=[1.0], hi=[1.0])
    with pytest.raises(ValidationError):
        NormStats(lo=[1.0, 2.0], hi=[3.0])


def test_channel_subset_and_block_independence():
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 1000, (3, 40, 40)).astype(np.float32)
    stats = compute_norm(image)
    whole = apply_norm(image[[2, 0]], stats, channels=[2, 0])
    part = apply_norm(image[[2, 0], 5:17, 9:30], stats, channels=[2, 0])
    assert np.array_equal(part, whole[:, 5:17, 9:30])


def test_slide_norm_uses_a_low_resolution_level_once(tmp_path):
    import zarr

    from nclsm_scale.io.ome_zarr import create_image
    from nclsm_scale.normalise import compute_slide_norm, slide_norm
    from nclsm_scale.slide import open_slide

    rng = np.random.default_rng(2)
    level0 = rng.integers(0, 4000, (2, 256, 256)).astype(np.uint16)
    arrays = create_image(
        tmp_path / "s.ome.zarr",
        level0.shape,
        np.uint16,
        pixel_size_um=0.5,
        channel_names=["dystrophin", "VDAC"],
        chunk_px=64,
        min_level_px=64,
    )
    assert len(arrays) >= 2
    level = level0
    for arr in arrays:
        arr[...] = level
        level = level[:, ::2, ::2]
    slide = open_slide(tmp_path / "s.ome.zarr")
    stats = compute_slide_norm(slide, max_side_px=128)
    assert stats.level == 1
    expected = compute_norm(np.asarray(arrays[1][...]), level=1)
    assert stats == expected
    assert slide_norm(slide) == compute_slide_norm(slide)  # a store without stored constants: computed
    group = zarr.open_group(str(tmp_path / "s.ome.zarr"), mode="r+")
    group.attrs["nclsm"] = {**dict(group.attrs["nclsm"]), "norm": stats.model_dump(mode="json")}
    assert slide_norm(open_slide(tmp_path / "s.ome.zarr")) == stats  # stored (as convert does): read back
