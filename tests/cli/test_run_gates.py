"""``nclsm-scale run`` as a careless user meets it: the real command in a subprocess.

Implausible pixel sizes and a 10 x 10 slide are refused with one line naming the file
and no retries; noise and blank slides are flagged by slide QC and yield no
analysable fibre; bad config values, a missing archive, a held lock and an
unwritable run folder are refused in one line before any Dask cluster starts.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from nclsm_scale.state import StateStore

#: Small chunks and pyramid (the regions level reaches 8 um/px), small blocks: a quick run.
FAST = ("--set", "convert.chunk_px=256", "--set", "convert.min_level_px=64", "--set", "grid.block_px=256",
        "--set", "report.thumbnail_px=300", "--workers", "2")


def _ome_tiff(path: Path, image: np.ndarray, pixel_size_um: float) -> Path:
    meta = {"axes": "CYX", "Channel": {"Name": ["dystrophin", "VDAC"]}, "PhysicalSizeX": pixel_size_um,
            "PhysicalSizeY": pixel_size_um}
    tifffile.imwrite(path, image, metadata=meta, ome=True)
    return path


@pytest.fixture(scope="module")
def careless_archive(tmp_path_factory) -> Path:
    """Slides a careless user might hand over: wrong pixel sizes, a 10 x 10 crop, noise and a blank image."""
    from nclsm_scale.config import SynthConfig
    from nclsm_scale.synth import generate_section

    root = tmp_path_factory.mktemp("careless")
    section = generate_section(SynthConfig(size_px=(512, 512), pixel_size_um=1.0, seed=5, folds=0)).image
    _ome_tiff(root / "far.ome.tiff", section, 1000.0)
    _ome_tiff(root / "near.ome.tiff", section, 0.001)
    rng = np.random.default_rng(1)
    _ome_tiff(root / "tiny.ome.tiff", rng.normal(1000, 100, (2, 10, 10)).astype(np.uint16), 0.5)
    _ome_tiff(root / "noise.ome.tiff", rng.normal(1000, 100, (2, 512, 512)).clip(0).astype(np.uint16), 1.0)
    _ome_tiff(root / "blank.ome.tiff", np.full((2, 512, 512), 100, np.uint16), 1.0)
    return root


@pytest.fixture(scope="module")
def careless_run(careless_archive, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("careless-run") / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "nclsm_scale", "run", str(careless_archive), "--out", str(run_dir),
                           *FAST], capture_output=True, text=True, timeout=600, env=env)
    return run_dir, proc


def test_implausible_slides_are_refused_in_one_line_naming_the_file_without_retries(careless_archive, careless_run):
    run_dir, proc = careless_run
    assert proc.returncode == 1, proc.stderr
    console = proc.stdout + proc.stderr
    assert "Traceback" not in console and "Compute Failed" not in console
    records = {(r.slide, r.stage): r for r in StateStore(run_dir / "state.sqlite").records()}
    causes = {"far": "the file says 1000 um/px, outside the plausible 0.05-20 um/px",
              "near": "the file says 0.001 um/px, outside the plausible 0.05-20 um/px",
              "tiny": "10 x 10 px at 0.5 um/px is 5 x 5 um, under convert.min_slide_um = 100 um"}
    for name, cause in causes.items():
        source = careless_archive / f"{name}.ome.tiff"
        failed = [line for line in proc.stdout.splitlines() if line.startswith(f"FAILED {name} ")]
        assert len(failed) == 1 and failed[0].startswith(f"FAILED {name} at convert: {source}: {cause}"), failed
        logged = [line for line in proc.stderr.splitlines() if f"{name}: convert failed" in line]
        assert len(logged) == 1 and f"(attempt 1): {source}: {cause}" in logged[0], logged
        rec = records[(name, "convert")]
        assert (rec.status, rec.attempts) == ("failed", 1) and rec.seconds < 5  # no retry, refused at once
        assert not (run_dir / "slides" / f"{name}.ome.zarr").exists()


def test_noise_and_blank_slides_are_flagged_and_yield_no_analysable_fibre(careless_run):
    run_dir, proc = careless_run
    assert "2 of 5 slide(s) done, 3 failed, 2 flagged by slide QC" in proc.stdout
    assert "FLAGGED noise: slide QC failed (no_membrane_contrast)" in proc.stdout
    assert "FLAGGED blank: slide QC failed (no_tissue;no_fibres)" in proc.stdout
    slides = pd.read_parquet(run_dir / "tables" / "slides.parquet").set_index("slide")
    assert slides.loc["noise", "qc_flag"] == "no_membrane_contrast"
    assert abs(slides.loc["noise", "qc_membrane_contrast"]) < 0.1
    assert slides.loc["blank", "qc_flag"] == "no_tissue;no_fibres" and slides.loc["blank", "qc_tissue_fraction"] == 0
    assert (slides["n_analysable"] == 0).all() and (slides["n_QC"] == slides["n_fibres"]).all()
    noise = pd.read_parquet(run_dir / "tables" / "fibres" / "noise.parquet")
    assert len(noise) and (noise["curation_class"] == "QC").all() and noise["reasons"].str.startswith("QC").all()
    records = StateStore(run_dir / "state.sqlite").records()
    assert all(r.attempts == 1 for r in records if r.slide in ("noise", "blank"))
    html = (run_dir / "report" / "index.html").read_text()
    assert "Failed slide QC, so none of their fibres is analysable (class QC): blank (no_tissue;no_fibres), " \
           "noise (no_membrane_contrast)." in html


def _refused(run_cli, *args: str, code: int = 1) -> tuple[str, float]:
    """Run a command that must be refused; return its one stderr line and its duration."""
    t0 = time.monotonic()
    proc = run_cli(*args, timeout=120)
    seconds = time.monotonic() - t0
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and "Dask dashboard" not in proc.stderr  # no cluster was started
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0], seconds


def test_empty_and_infinite_config_values_are_refused(run_cli, careless_archive, tmp_path):
    line, _ = _refused(run_cli, "run", str(careless_archive), "--out", str(tmp_path / "r"),
                       "--set", "grid.block_px=", code=2)
    assert line.startswith("error: --set 'grid.block_px=': no value given for 'grid.block_px'")
    line, _ = _refused(run_cli, "run", str(careless_archive), "--out", str(tmp_path / "r"),
                       "--set", "segment.target_pixel_size_um=inf", code=2)
    assert "key 'segment.target_pixel_size_um': Input should be a finite number (got 'inf')" in line
    assert not (tmp_path / "r").exists()


def test_a_missing_archive_is_refused_before_a_cluster_starts(run_cli, tmp_path):
    line, seconds = _refused(run_cli, "run", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r"))
    assert line == f"error: {tmp_path / 'nowhere'}: the archive folder does not exist (or is not a folder)."
    assert seconds < 10  # about 2 s here (imports); starting a local cluster took 5-18 s more


def test_a_held_run_lock_is_refused_before_a_cluster_starts(run_cli, careless_archive, tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (run_dir / "run.lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname()}))
        line, seconds = _refused(run_cli, "run", str(careless_archive), "--out", str(run_dir))
    finally:
        holder.kill()
        holder.wait()
    assert line == f"error: {run_dir}: another run is active (pid {holder.pid} on {socket.gethostname()}); " \
                   "wait for it to end."
    assert seconds < 10 and sorted(p.name for p in run_dir.iterdir()) == ["run.lock"]


@pytest.fixture()
def read_only_dir(tmp_path):
    """A folder nobody may write into: mode 0555, or immutable (chattr +i) when running as root."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = False
    if os.access(folder, os.W_OK):  # root ignores modes
        chattr = shutil.which("chattr")
        immutable = chattr is not None and subprocess.run([chattr, "+i", str(folder)]).returncode == 0
        if not immutable:
            pytest.skip("cannot make a read-only folder here")
    yield folder
    if immutable:
        subprocess.run([shutil.which("chattr") or "chattr", "-i", str(folder)], check=True)
    folder.chmod(0o755)


def test_an_unwritable_run_folder_is_one_line_naming_it(run_cli, careless_archive, read_only_dir):
    line, _ = _refused(run_cli, "run", str(careless_archive), "--out", str(read_only_dir / "run"))
    assert line.startswith(f"error: {read_only_dir / 'run'}: cannot write: ")
    assert line.endswith(("Permission denied", "Operation not permitted", "Read-only file system"))


@pytest.fixture()
def full_disk(tmp_path):
    """A 2 MiB tmpfs (needs the right to mount: skipped elsewhere)."""
    mount = tmp_path / "full"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small file system here")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_fails_in_one_line_naming_the_path(run_cli, tmp_path, full_disk):
    from nclsm_scale.config import SynthConfig
    from nclsm_scale.synth import generate_section

    archive = tmp_path / "archive"
    archive.mkdir()
    image = generate_section(SynthConfig(size_px=(1024, 1024), pixel_size_um=1.0, seed=6, folds=0)).image
    _ome_tiff(archive / "S1.ome.tiff", image, 1.0)
    proc = run_cli("run", str(archive), "--out", str(full_disk / "run"), *FAST, timeout=300)
    assert proc.returncode == 1
    console = proc.stdout + proc.stderr
    assert "Traceback" not in console and "Logging error" not in console and "Compute Failed" not in console
    assert "No space left on device" in console or "disk is full" in console
    errors = [line for line in console.splitlines() if "ERROR" in line or line.startswith(("error:", "FAILED"))]
    assert errors and all(str(full_disk / "run") in line for line in errors), errors
