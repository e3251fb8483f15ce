"""Manifests of stage outputs: built from real zarr stores and files, damage found by size or checksum."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from nclsm_scale.manifest import build_manifest, check_manifest, source_identity


@pytest.fixture
def outputs(tmp_path):
    """A sharded zarr array with one chunk left at the fill value, a skipped sub-folder and a table file."""
    arr = zarr.create_array(str(tmp_path / "store" / "a"), shape=(64, 64), chunks=(16, 16), shards=(32, 32),
                            dtype="uint16", fill_value=0)
    data = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    data[32:, 32:] = 0  # one shard of fill value: not written
    arr[:] = data
    (tmp_path / "store" / "labels").mkdir()
    (tmp_path / "store" / "labels" / "other.bin").write_bytes(b"owned by a later stage")
    (tmp_path / "table.parquet").write_bytes(b"x" * 100)
    manifest = build_manifest(tmp_path, [tmp_path / "store", tmp_path / "table.parquet"],
                              skip=[tmp_path / "store" / "labels"])
    return tmp_path, manifest


def test_manifest_lists_files_with_sizes_checksums_and_arrays(outputs):
    root, manifest = outputs
    files = manifest["files"]
    assert "table.parquet" in files and files["table.parquet"][0] == 100 and len(files["table.parquet"][1]) == 64
    assert not any(f.startswith("store/labels") for f in files)
    assert sum(f.startswith("store/a/c/") for f in files) == 3  # 4 shards, one never written
    assert manifest["arrays"] == {"store/a": {"shape": [64, 64], "dtype": "uint16", "chunks": [32, 32]}}
    assert check_manifest(root, manifest) == [] and check_manifest(root, manifest, deep=True) == []


def test_missing_truncated_altered_and_new_chunks_are_named(outputs):
    root, manifest = outputs
    shards = sorted(f for f in manifest["files"] if f.startswith("store/a/c/"))
    (root / shards[0]).unlink()
    path = root / shards[1]
    path.write_bytes(path.read_bytes()[:-3])
    altered = root / "table.parquet"
    altered.write_bytes(b"y" * 100)
    zarr.open_array(str(root / "store" / "a"), mode="r+")[40, 40] = 7  # writes the missing shard
    cheap = {str(d) for d in check_manifest(root, manifest)}
    assert cheap == {f"{shards[0]}: missing", f"{shards[1]}: {path.stat().st_size} bytes, "
                     f"{path.stat().st_size + 3} written", "store/a/c/1/1: not written by the stage"}
    deep = {str(d) for d in check_manifest(root, manifest, deep=True)}
    assert deep == cheap | {"table.parquet: content differs (sha256)"}


def test_source_identity_follows_content_not_time(tmp_path):
    f = tmp_path / "s.tif"
    f.write_bytes(b"a" * (3 << 20))
    first = source_identity(f)
    f.write_bytes(b"a" * (3 << 20))  # rewritten, same bytes: same identity
    assert source_identity(f) == first
    f.write_bytes(b"a" * ((3 << 20) - 1) + b"b")  # the last byte changed
    assert source_identity(f) != first
    d = tmp_path / "in.ome.zarr"
    d.mkdir()
    (d / "zarr.json").write_text("{}")
    before = source_identity(d)
    (d / "c").write_bytes(b"1")
    assert source_identity(d) != before
