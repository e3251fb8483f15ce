"""nclsm-scale: whole-archive myofibre segmentation, measurement and curation on Dask.

>>> import nclsm_scale
>>> fibres = nclsm_scale.read_fibres("run")  # every slide's fibres, one DataFrame  # doctest: +SKIP
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nclsm_scale.layout import read_fibres

try:
    __version__ = version("nclsm-scale")
except PackageNotFoundError:  # running from a checkout without installing
    __version__ = "0+unknown"

__all__ = ["__version__", "read_fibres"]


def __getattr__(name: str) -> Any:
    """``read_fibres`` on first use, so importing the package (and the command line) stays free of pandas."""
    if name == "read_fibres":
        from nclsm_scale.layout import read_fibres

        return read_fibres
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
