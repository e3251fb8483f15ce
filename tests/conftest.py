"""Fixtures shared by the whole test suite (stage-specific ones live beside their tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data" / "ncl-sm"


@pytest.fixture(scope="session")
def ncl_sm_dir() -> Path:
    """Folder with the real NCL-SM masks (skips when the shared folder is absent)."""
    if not (SHARED_DATA / "S60_fibres.tiff").is_file():
        pytest.skip(f"real NCL-SM masks not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def client():
    """A real two-worker LocalCluster, shared by the tests that run stages on Dask."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cl:
        with Client(cl) as c:
            yield c


def _scrape(url: str) -> dict[str, float]:
    import re
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    samples = {"# TYPE " + m[1]: 0.0 for m in re.finditer(r"^# TYPE (\S+) ", text, re.M)}
    for line in text.splitlines():
        if m := re.fullmatch(r"([^#\s]\S*) (\S+)", line):
            samples[m[1]] = float(m[2])
    return samples


@pytest.fixture(scope="session")
def scrape():
    """GET a Prometheus ``/metrics`` URL for real; samples by ``name{labels}``, families as ``# TYPE name``."""
    return _scrape


@pytest.fixture()
def run_cli():
    """Run ``nclsm-scale ARGS`` in a fresh interpreter; return the CompletedProcess."""

    def _run(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        return subprocess.run(
            [sys.executable, "-m", "nclsm_scale", *args],
            capture_output=True,
            text=True,
            cwd=cwd,
            timeout=timeout,
            env=env,
        )

    return _run


@pytest.fixture(scope="session")
def write_section_store():
    """Write a generated synthetic section as a converted slide at ``path``: image pyramid + labels.

    The image is stored at 1 um/px in 256 px chunks; ``labels/fibres`` holds the
    ground-truth fibres and ``labels/regions`` the tissue (both with their pyramids).
    """
    import numpy as np
    import zarr

    from nclsm_scale.io.labels import fill_label_pyramid
    from nclsm_scale.io.ome_zarr import create_image, create_labels
    from nclsm_scale.io.readers import assign_roles

    def _write(path: Path, s) -> Path:
        names = list(s.channel_names)
        arrays = create_image(path, s.image.shape, s.image.dtype, pixel_size_um=1.0, channel_names=names,
                              chunk_px=256, shard_px=0, min_level_px=64, roles=assign_roles(names))
        for level, arr in enumerate(arrays):
            arr[...] = s.image[:, :: 2**level, :: 2**level][:, : arr.shape[1], : arr.shape[2]]
        for name, data, dtype in (("fibres", s.fibres, np.uint32), ("regions", s.regions > 0, np.uint8)):
            create_labels(path, name, dtype=dtype)
            zarr.open_array(str(path), path=f"labels/{name}/0", mode="r+")[0] = data
            fill_label_pyramid(path, name, 0)
        return path

    return _write


@pytest.fixture(scope="session")
def converted_with_truth_maps(client):
    """Render ``cfg.synth`` as ``<root>/synth/<name>.ome.tiff``, convert it into ``layout``, store maps of its truth.

    The maps are made from the ground-truth fibres at the segmentation level (1 um/px:
    level 1 of the 0.5 um/px section), so segment runs without the network. Returns
    the converted store, ``cfg`` with ``segment.maps`` pointing at the maps, those
    ground-truth labels and the paths ``write_section`` wrote.
    """
    import tifffile

    from nclsm_scale.convert import convert
    from nclsm_scale.io.pyramid import downsample_labels
    from nclsm_scale.segment import maps_from_labels, write_maps
    from nclsm_scale.synth import write_section

    def _convert(root: Path, layout, cfg, name: str):
        (root / "synth").mkdir()
        paths = write_section(root / "synth" / f"{name}.ome.tiff", cfg.synth)
        (conv,) = convert([paths["image"]], layout.slides, cfg.convert, client)
        assert conv.status != "failed", conv.message
        half_y, half_x = (n // 2 for n in cfg.synth.size_px)
        gt = downsample_labels(tifffile.imread(paths["fibres"]), 2)[:half_y, :half_x]
        maps = write_maps(str(root / "maps.zarr"), maps_from_labels(gt, seed=1, noise=0.02), chunk_px=256)
        cfg = cfg.model_copy(update={"segment": cfg.segment.model_copy(update={"maps": maps.path})})
        return conv.store, cfg, gt, paths

    return _convert


@pytest.fixture(scope="session")
def write_svs():
    """Write an Aperio-like SVS at ``path`` (the layout ``convert`` reads as SVS).

    A tiled 900 x 700 RGB baseline with ``MPP = 0.25`` in its description, a
    stripped thumbnail and, with ``level``, a half-size pyramid level.
    """
    import numpy as np
    import tifffile

    def _write(path: Path, compression: str = "jpeg", level: bool = True) -> Path:
        yy, xx = np.mgrid[0:700, 0:900]
        rgb = np.stack([(128 + 100 * np.sin(yy / 17)).astype(np.uint8), (128 + 100 * np.cos(xx / 23)).astype(np.uint8),
                        np.random.default_rng(5).integers(0, 255, (700, 900), dtype=np.uint8)], axis=-1)
        head = "Aperio Image Library v12.0.15\r\n"
        with tifffile.TiffWriter(path) as w:
            w.write(rgb, tile=(256, 256), compression=compression, photometric="rgb", metadata=None,
                    description=head + "900x700 [0,0 900x700] (256x256) JPEG/RGB Q=90|AppMag = 40|MPP = 0.2500")
            w.write(rgb[::8, ::8], photometric="rgb", metadata=None, description=head + "113x88 -> 113x88")
            if level:
                w.write(rgb[::2, ::2], tile=(256, 256), compression=compression, photometric="rgb", metadata=None,
                        description=head + "450x350 [0,0 900x700] (256x256) -> 450x350")
        return path

    return _write
