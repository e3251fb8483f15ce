"""RGB composites of slides and label outlines over them, for previews, the demo and reports."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from nclsm_scale.errors import SlideWriteError

#: Display colour (RGB channel index) of each channel role, NCL-SM style: membrane red, mito green.
ROLE_RGB = {"membrane": 0, "mito": 1}


def composite_rgb(
    image: np.ndarray, roles: Mapping[str, int], *, percentiles: tuple[float, float] = (0.5, 99.8)
) -> np.ndarray:
    """Stretch each role's channel of a ``(c, y, x)`` image into an RGB ``uint8`` ``(y, x, 3)`` image.

    >>> composite_rgb(np.arange(8, dtype=np.uint16).reshape(2, 2, 2), {"membrane": 0}).shape
    (2, 2, 3)
    """
    rgb = np.zeros((*image.shape[-2:], 3), np.uint8)
    for role, channel in roles.items():
        if role not in ROLE_RGB or channel >= image.shape[0]:
            continue
        data = image[channel].astype(np.float32)
        lo, hi = np.percentile(data, percentiles)
        scaled = (data - lo) / max(float(hi - lo), 1e-6) * 255.0
        rgb[..., ROLE_RGB[role]] = np.clip(scaled, 0, 255).astype(np.uint8)
    return rgb


def draw_outlines(
    rgb: np.ndarray, labels: np.ndarray, color: tuple[int, int, int] = (0, 255, 255)
) -> np.ndarray:
    """Return a copy of ``rgb`` with the inner boundary pixels of every label painted ``color``."""
    from skimage.segmentation import find_boundaries

    out = rgb.copy()
    out[find_boundaries(labels, mode="inner") & (labels > 0)] = color
    return out


def save_png(rgb: np.ndarray, path: str | Path) -> Path:
    """Write an RGB ``uint8`` array as PNG; a clear error if the file cannot be written."""
    from PIL import Image

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(path)
    except OSError as exc:
        raise SlideWriteError(f"cannot write {path}: {exc}") from exc
    return path
