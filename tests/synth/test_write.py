"""OME-TIFF output, byte reproducibility and the ``synth`` command."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from nclsm_scale.config import SynthConfig
from nclsm_scale.synth import generate_section, write_section

CLI = str(Path(sys.executable).with_name("nclsm-scale"))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[SynthConfig, dict[str, Path]]:
    """Write a small slide with chunks that do not divide its size."""
    cfg = SynthConfig(
        size_px=(700, 900),
        seed=5,
        pixel_size_um=1.5,
        chunk_px=300,
        tile_px=128,
        min_level_px=200,
        folds=1,
    )
    out = tmp_path_factory.mktemp("w1") / "slide.ome.tiff"
    return cfg, write_section(out, cfg)


def test_files_equal_in_memory_section(written: tuple[SynthConfig, dict[str, Path]]) -> None:
    """Image, labels, regions and table on disk equal generate_section's (chunked == whole)."""
    cfg, paths = written
    ref = generate_section(cfg.model_copy(update={"chunk_px": 900}))
    np.testing.assert_array_equal(tifffile.imread(paths["image"]), ref.image)
    np.testing.assert_array_equal(tifffile.imread(paths["fibres"]), ref.fibres)
    np.testing.assert_array_equal(tifffile.imread(paths["regions"]), ref.regions)
    table = pd.read_parquet(paths["parquet"])
    assert table.equals(ref.table)
    csv = pd.read_csv(paths["csv"])
    assert csv["fibre_id"].tolist() == ref.table["fibre_id"].tolist()
    assert set(csv["gt_class"]) <= {"AM", "NTM", "FAM", "FR", "DEBRIS"}


def test_ome_tiff_structure(written: tuple[SynthConfig, dict[str, Path]]) -> None:
    """Pyramidal OME-TIFF: CYX axes, SubIFD levels, tiles, pixel size and channel names."""
    cfg, paths = written
    with tifffile.TiffFile(paths["image"]) as tif:
        assert tif.is_ome
        series = tif.series[0]
        assert series.axes == "CYX" and series.shape == (2, 700, 900)
        assert [lv.shape for lv in series.levels] == [
            (2, 700, 900),
            (2, 350, 450),
            (2, 175, 225),
            (2, 88, 113),
        ]
        assert tif.pages[0].is_tiled and tif.pages[0].tilewidth == 128
        assert len(tif.pages[0].subifds) == 3
        ome = tif.ome_metadata
        assert 'PhysicalSizeX="1.5"' in ome and 'PhysicalSizeXUnit="µm"' in ome
        assert 'Name="dystrophin"' in ome and 'Name="VDAC"' in ome
        level1 = series.levels[1].asarray()
    assert level1.dtype == np.uint16
    with tifffile.TiffFile(paths["fibres"]) as tif:
        assert tif.series[0].axes == "YX" and tif.series[0].dtype == np.uint32
        assert len(tif.series[0].levels) == 4


def test_same_seed_byte_identical_other_seed_differs(
    written: tuple[SynthConfig, dict[str, Path]], tmp_path: Path
) -> None:
    """Rewriting the same config gives byte-identical files; another seed does not."""
    cfg, paths = written
    again = write_section(tmp_path / "slide.ome.tiff", cfg)
    for kind in paths:
        assert _digest(again[kind]) == _digest(paths[kind]), kind
    other = write_section(tmp_path / "other.ome.tiff", cfg.model_copy(update={"seed": 6}))
    assert _digest(other["image"]) != _digest(paths["image"])
    assert _digest(other["fibres"]) != _digest(paths["fibres"])


def test_cli_writes_section(tmp_path: Path) -> None:
    """``nclsm-scale synth`` writes a readable pyramidal OME-TIFF plus ground truth and preview."""
    out = tmp_path / "out.ome.tiff"
    cmd = [
        CLI,
        "synth",
        str(out),
        "--size",
        "1024x1536",
        "--seed",
        "1",
        "--pixel-size",
        "1.0",
        "--preview",
        str(tmp_path / "p.png"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with tifffile.TiffFile(out) as tif:
        assert tif.series[0].axes == "CYX" and tif.series[0].shape == (2, 1024, 1536)
        assert len(tif.series[0].levels) == 2
    for name in (
        "out.fibres.ome.tiff",
        "out.regions.ome.tiff",
        "out.fibres.csv",
        "out.fibres.parquet",
        "p.png",
    ):
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.parametrize("size", ["12x", "0x100", "abc"])
def test_cli_bad_size_exit_2(tmp_path: Path, size: str) -> None:
    """A malformed --size is a one-paragraph error with exit status 2."""
    cmd = [CLI, "synth", str(tmp_path / "x.ome.tiff"), "--size", size]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "--size" in proc.stderr and "Traceback" not in proc.stderr
