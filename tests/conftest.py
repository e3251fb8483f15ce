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
