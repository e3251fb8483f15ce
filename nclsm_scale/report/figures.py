"""Report figures: class-coloured slide thumbnails and matplotlib plots, as PNG bytes.

Every function returns PNG bytes (the HTML embeds them as base64; the report
also writes them beside ``index.html``). Plots use the Agg backend and never
open a window.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from nclsm_scale.overlay import composite_rgb
from nclsm_scale.slide import open_slide
from nclsm_scale.tables import FOLD, FibreClass

__all__ = [
    "class_breakdown_png",
    "class_thumbnail",
    "histogram_png",
    "png_bytes",
    "thumbnail_level",
]

#: Outline colour of fold regions on thumbnails.
FOLD_RGB = (255, 255, 255)


def png_bytes(rgb: np.ndarray) -> bytes:
    """PNG encoding of an RGB ``uint8`` ``(y, x, 3)`` array."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def thumbnail_level(slide: Any, seg_level: int, max_px: int) -> int:
    """The finest level at or below ``seg_level`` in resolution whose longer side is at most ``max_px``."""
    for i in range(seg_level, len(slide.levels)):
        if max(slide.levels[i].shape[1:]) <= max_px:
            return i
    return len(slide.levels) - 1


def class_thumbnail(slide_path: str, table: pd.DataFrame, meta: Mapping[str, Any], max_px: int) -> np.ndarray:
    """RGB thumbnail of a slide with each fibre filled in its class colour and folds outlined."""
    from skimage.segmentation import find_boundaries

    slide = open_slide(slide_path)
    level = thumbnail_level(slide, int(meta.get("level", 0)), max_px)
    _, ny, nx = slide.levels[level].shape
    rgb = composite_rgb(slide.read(level, 0, 0, ny, nx), slide.roles).astype(np.float32)
    labels = np.asarray(slide.label_array("fibres", level)[0])
    lut = np.zeros((int(max(labels.max(), table["fibre_id"].to_numpy(np.int64).max(initial=0))) + 1, 3), np.float32)
    has = np.zeros(lut.shape[0], bool)
    for cls in FibreClass:
        ids = table["fibre_id"].to_numpy(np.int64)[table["curation_class"].astype(str).to_numpy() == cls]
        lut[ids] = cls.rgb
        has[ids] = True
    fill = has[labels]
    rgb[fill] = 0.45 * rgb[fill] + 0.55 * lut[labels[fill]]
    rgb[find_boundaries(labels, mode="inner") & fill] *= 0.5
    if "folds" in slide.labels:
        folds = np.asarray(slide.label_array("folds", level)[0])
        edge = find_boundaries(folds == FOLD, mode="inner")
        rgb[edge] = FOLD_RGB
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _fig_png(fig: Any, dpi: int) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _bin_labels(lo: np.ndarray, hi: np.ndarray) -> list[str]:
    return [f"{a:g}-{b:g}" if np.isfinite(b) else f">={a:g}" for a, b in zip(lo, hi, strict=True)]


def histogram_png(hist: Any, name: str, xlabel: str, dpi: int) -> bytes:
    """Grouped bars of ``<name>_count`` per slide over the bins of an aggregate histogram Dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(hist[f"{name}_count"].values)
    slides = [str(s) for s in hist["slide"].values]
    labels = _bin_labels(np.asarray(hist[f"{name}_lo"].values), np.asarray(hist[f"{name}_hi"].values))
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    x = np.arange(len(labels))
    width = 0.8 / max(1, len(slides))
    for i, (slide, row) in enumerate(zip(slides, counts, strict=True)):
        ax.bar(x + (i - (len(slides) - 1) / 2) * width, row, width, label=slide)
    ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("analysable fibres")
    if len(slides) > 1:
        ax.legend(fontsize=8, ncols=min(4, len(slides)))
    ax.spines[["top", "right"]].set_visible(False)
    return _fig_png(fig, dpi)


def class_breakdown_png(slides: pd.DataFrame, dpi: int) -> bytes:
    """Stacked horizontal bars of the fibre count per class, one bar per slide."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 0.6 + 0.45 * len(slides)))
    left = np.zeros(len(slides))
    names = slides["slide"].astype(str).tolist()
    for cls in FibreClass:
        n = slides[f"n_{cls}"].to_numpy(np.float64)
        ax.barh(names, n, left=left, color=np.asarray(cls.rgb) / 255.0, label=cls.value)
        left += n
    ax.set_xlabel("fibres")
    ax.invert_yaxis()
    ax.legend(fontsize=8, ncols=6, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return _fig_png(fig, dpi)
