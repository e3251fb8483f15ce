"""Archive discovery: folders, manifests, and paths a manifest may not lead to."""

from __future__ import annotations

import pandas as pd
import pytest

from nclsm_scale.archive import discover, manifest_frame, scan_folder, slide_keys
from nclsm_scale.config import ArchiveConfig
from nclsm_scale.errors import ValidationError


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_folder_discovery_is_recursive_and_skips_sidecars_hidden_and_other_files(tmp_path):
    a = _touch(tmp_path / "p1" / "A.ome.tiff")
    b = _touch(tmp_path / "p2" / "deep" / "B.SVS")
    _touch(tmp_path / "p1" / "A.fibres.ome.tiff")
    _touch(tmp_path / "p1" / "A.regions.ome.tiff")
    _touch(tmp_path / "notes.txt")
    _touch(tmp_path / ".hidden" / "H.tif")
    z = tmp_path / "C.ome.zarr"
    _touch(z / "0" / "inner.tif")  # inside a store: never a slide of its own
    found = scan_folder(tmp_path, ArchiveConfig())
    assert found == sorted([a, b, z])
    assert sorted(s.name for s in discover(tmp_path, ArchiveConfig())) == ["A", "B", "C"]


def test_object_keys_give_the_slides_a_folder_walk_gives(tmp_path):
    """Remote discovery (a flat list of object keys) follows the local folder rules."""
    for rel in ("p1/A.ome.tiff", "p1/A.fibres.ome.tiff", "p1/.A.tif", "p2/deep/B.SVS", "notes.txt",
                ".hidden/H.tif", "C.ome.zarr/zarr.json", "C.ome.zarr/0/inner.tif", "D.zarr/x.tif",
                "p3/E.OME.ZARR/.zattrs"):
        _touch(tmp_path / rel)
    keys = [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()]
    local = [p.relative_to(tmp_path).as_posix() for p in scan_folder(tmp_path, ArchiveConfig())]
    assert slide_keys(keys, ArchiveConfig()) == local == ["C.ome.zarr", "p1/A.ome.tiff", "p2/deep/B.SVS",
                                                          "p3/E.OME.ZARR"]


def test_missing_folder_and_empty_archive_are_errors(tmp_path):
    with pytest.raises(ValidationError, match="does not exist"):
        discover(tmp_path / "nope", ArchiveConfig())
    with pytest.raises(ValidationError, match="no slides"):
        discover(tmp_path, ArchiveConfig())


def test_duplicate_names_are_refused(tmp_path):
    _touch(tmp_path / "x" / "S.tif")
    _touch(tmp_path / "y" / "S.tif")
    with pytest.raises(ValidationError, match="both named 'S'"):
        discover(tmp_path, ArchiveConfig())


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_manifest_resolves_relative_paths_and_keeps_metadata(tmp_path, fmt):
    a = _touch(tmp_path / "img" / "A.ome.tiff")
    df = pd.DataFrame({"path": ["img/A.ome.tiff"], "subject": ["P1"], "diagnosis": ["control"],
                       "muscle": ["vastus lateralis"]})
    path = tmp_path / f"m.{fmt}"
    df.to_csv(path, index=False) if fmt == "csv" else df.to_parquet(path)
    (s,) = discover(path, ArchiveConfig())
    assert (s.name, s.path) == ("A", a.resolve())
    assert s.meta == {"subject": "P1", "diagnosis": "control", "muscle": "vastus lateralis"}
    frame = manifest_frame([s])
    assert frame.to_dict("records") == [{"slide": "A", **s.meta}]


def test_manifest_option_wins_over_the_archive_argument(tmp_path):
    _touch(tmp_path / "A.tif")
    _touch(tmp_path / "B.tif")
    (tmp_path / "m.csv").write_text("path\nB.tif\n")
    cfg = ArchiveConfig(manifest=str(tmp_path / "m.csv"))
    assert [s.name for s in discover(tmp_path, cfg)] == ["B"]


@pytest.mark.parametrize("entry", ["../outside.tif", "sub/../../outside.tif", "link/outside.tif"])
def test_manifest_cannot_lead_outside_its_folder(tmp_path, entry):
    outside = _touch(tmp_path / "outside.tif")
    folder = tmp_path / "archive"
    folder.mkdir()
    (folder / "link").symlink_to(tmp_path)
    (folder / "m.csv").write_text(f"path\n{entry}\n")
    with pytest.raises(ValidationError, match="outside the manifest's folder"):
        discover(folder / "m.csv", ArchiveConfig())
    (s,) = discover(folder / "m.csv", ArchiveConfig(allow_absolute_paths=True))
    assert s.path == outside.resolve()


def test_absolute_manifest_paths_need_permission(tmp_path):
    target = _touch(tmp_path / "A.tif")
    (tmp_path / "m.csv").write_text(f"path\n{target}\n")
    with pytest.raises(ValidationError, match="absolute path"):
        discover(tmp_path / "m.csv", ArchiveConfig())
    assert discover(tmp_path / "m.csv", ArchiveConfig(allow_absolute_paths=True))[0].path == target.resolve()


def test_manifest_without_path_column_or_with_empty_path(tmp_path):
    (tmp_path / "m.csv").write_text("file,subject\nA.tif,P1\n")
    with pytest.raises(ValidationError, match="'path' column"):
        discover(tmp_path / "m.csv", ArchiveConfig())
    (tmp_path / "m.csv").write_text("path,subject\n,P1\n")
    with pytest.raises(ValidationError, match="row 2: empty"):
        discover(tmp_path / "m.csv", ArchiveConfig())
