"""check_store and the validate command: valid stores pass, each kind of damage is reported."""

from __future__ import annotations

import json

import numpy as np
import zarr

from nclsm_scale.io.ome_zarr import create_image, create_labels
from nclsm_scale.validate import check_store


def _complete(path):
    create_image(path, (1, 600, 500), np.uint8, pixel_size_um=0.5, channel_names=["m"], chunk_px=128,
                 min_level_px=128)
    group = zarr.open_group(str(path), mode="r+")
    group.attrs.update({"nclsm": {**group.attrs["nclsm"], "complete": True}})
    return path


def test_valid_store_with_labels(tmp_path):
    path = _complete(tmp_path / "ok.ome.zarr")
    create_labels(path, "fibres")
    assert check_store(path) == []


def test_incomplete_conversion_reported(tmp_path):
    path = tmp_path / "x.ome.zarr"
    create_image(path, (1, 300, 300), np.uint8, pixel_size_um=0.5, channel_names=["m"], min_level_px=100)
    assert any("incomplete" in p for p in check_store(path))


def test_pyramid_problems_reported(tmp_path):
    path = _complete(tmp_path / "p.ome.zarr")
    meta_path = path / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["ome"]["multiscales"][0]["datasets"][1]["coordinateTransformations"][0]["scale"] = [1, 3, 3]
    meta_path.write_text(json.dumps(meta))
    group = zarr.open_group(str(path), mode="r+")
    group.create_array("2", shape=(1, 150, 120), dtype=np.uint16, chunks=(1, 64, 64), overwrite=True,
                       dimension_names=("c", "y", "x"))
    problems = check_store(path)
    assert any("level 1 scale" in p for p in problems)
    assert any("level 2 has shape (1, 150, 120), expected (1, 150, 125)" in p for p in problems)
    assert any("level 2 dtype uint16" in p for p in problems)


def test_label_problems_reported(tmp_path):
    path = _complete(tmp_path / "l.ome.zarr")
    create_labels(path, "fibres")
    meta_path = path / "labels" / "fibres" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["ome"]["multiscales"][0]["datasets"].pop()
    meta_path.write_text(json.dumps(meta))
    problems = check_store(path)
    assert any("not valid OME-Zarr" in p for p in problems)
    assert any("labels/fibres: 3 levels, the image has 4" in p for p in problems)


def test_validate_cli_exit_codes(tmp_path, run_cli):
    good = _complete(tmp_path / "good.ome.zarr")
    ok = run_cli("validate", str(good))
    assert ok.returncode == 0 and "valid" in ok.stdout
    (tmp_path / "junk.ome.zarr").mkdir()
    bad = run_cli("validate", str(good), str(tmp_path / "junk.ome.zarr"))
    assert bad.returncode == 1 and "junk.ome.zarr: INVALID" in bad.stdout and "1 of 2 stores invalid" in bad.stderr
