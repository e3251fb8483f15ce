"""Direct shard writer: what zarr reads back, replaced and removed units, alignment, fallback."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
import zarr.codecs

from nclsm_scale.errors import GridError
from nclsm_scale.io.ome_zarr import create_image, regions, write_unit_px
from nclsm_scale.io.shards import write_block

RNG = np.random.default_rng(3)


def _data(dtype, shape=(2, 1100, 900)) -> np.ndarray:
    data = (RNG.random(shape) * 200).astype(dtype)
    data[:, :128, :128] = 0  # one empty 128 px chunk
    data[0, 600:, 600:] = 0
    return data


def _fill(arr: zarr.Array, data: np.ndarray) -> None:
    for y0, x0, y1, x1 in regions(arr.shape[-2:], write_unit_px(arr)):
        write_block(arr, data[:, y0:y1, x0:x1], (0, y0, x0))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_sharded_and_plain_levels_read_back_by_zarr(tmp_path, dtype):
    path = tmp_path / "a.ome.zarr"
    arrays = create_image(path, (2, 1100, 900), dtype, pixel_size_um=None, channel_names=["a", "b"],
                          chunk_px=128, shard_px=512, min_level_px=128)
    assert arrays[0].shards and arrays[2].shards is None
    for level in (0, 2):
        arr = arrays[level]
        data = _data(dtype, arr.shape)
        _fill(arr, data)
        np.testing.assert_array_equal(zarr.open_array(str(path), path=str(level), mode="r")[:], data)
    assert not (path / "2" / "c" / "0" / "0" / "0").exists()  # an all-zero chunk is not stored
    assert (path / "0" / "c" / "0" / "0" / "0").exists()  # a shard with some data is


def test_rewrite_replaces_torn_units_and_removes_emptied_ones(tmp_path):
    path = tmp_path / "b.ome.zarr"
    (arr, *_) = create_image(path, (2, 1024, 1024), np.uint16, pixel_size_um=None, channel_names=["a", "b"],
                             chunk_px=128, shard_px=512, min_level_px=1024)
    data = _data(np.uint16, (2, 1024, 1024))
    _fill(arr, data)
    shard = path / "0" / "c" / "0" / "1" / "1"
    shard.write_bytes(shard.read_bytes()[:1000])  # a task killed mid-write
    write_block(arr, data[:, 512:, 512:], (0, 512, 512))
    np.testing.assert_array_equal(arr[:], data)
    write_block(arr, np.zeros((2, 512, 512), np.uint16), (0, 512, 512))
    assert not shard.exists()
    assert not arr[:, 512:, 512:].any()


def test_block_must_cover_whole_units(tmp_path):
    (arr, *_) = create_image(tmp_path / "c.ome.zarr", (1, 1000, 1000), np.uint8, pixel_size_um=None,
                             channel_names=["a"], chunk_px=128, shard_px=512, min_level_px=1000)
    with pytest.raises(GridError, match="whole"):
        write_block(arr, np.ones((1, 256, 512), np.uint8), (0, 0, 0))
    with pytest.raises(GridError, match="whole"):
        write_block(arr, np.ones((1, 512, 512), np.uint8), (0, 128, 0))
    write_block(arr, np.ones((1, 488, 488), np.uint8), (0, 512, 512))  # ends at the array edge
    assert arr[:, 512:, 512:].all() and not arr[:, :512].any()


def test_other_codecs_are_written_by_zarr(tmp_path):
    arr = zarr.create_array(str(tmp_path / "d.zarr"), shape=(1, 700, 600), dtype=np.uint16, chunks=(1, 128, 128),
                            shards=(1, 256, 256), compressors=[zarr.codecs.BloscCodec(cname="lz4")], fill_value=0)
    data = _data(np.uint16, (1, 700, 600))
    _fill(arr, data)
    torn = tmp_path / "d.zarr" / "c" / "0" / "2" / "2"
    torn.write_bytes(b"\x00" * 10)
    write_block(arr, data[:, 512:, 512:], (0, 512, 512))  # the torn edge shard is not merged into
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "d.zarr"), mode="r")[:], data)
