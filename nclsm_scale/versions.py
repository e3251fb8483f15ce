"""Installed versions of the packages a run depends on (``info``, ``run.json``, reports)."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable

#: Packages whose versions are reported.
PACKAGES = (
    "nclsm-scale", "numpy", "scipy", "numba", "dask", "distributed", "zarr", "ome-zarr", "tifffile",
    "imagecodecs", "scikit-image", "torch", "pandas", "pyarrow", "xarray", "pydantic", "matplotlib",
    "bokeh", "prometheus-client", "dask-jobqueue", "dask-kubernetes",
)


def version_of(name: str) -> str:
    """Installed version of ``name``, or ``"not installed"``."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str]:
    """Versions of ``names`` (default :data:`PACKAGES`)."""
    return {name: version_of(name) for name in names}
