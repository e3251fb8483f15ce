"""nclsm-scale: whole-archive myofibre segmentation, measurement and curation on Dask."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nclsm-scale")
except PackageNotFoundError:  # running from a checkout without installing
    __version__ = "0+unknown"

__all__ = ["__version__"]
