"""Report figures: class-coloured slide thumbnails and matplotlib plots, as PNG bytes.

Every function returns PNG bytes (the HTML embeds them as base64; the report
also writes them beside ``index.html``). Plots use the Agg backend and never
open a window.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from nclsm_scale.overlay import composite_rgb
from nclsm_scale.slide import open_slide
from nclsm_scale.tables import FOLD, FibreClass

__all__ = [
    "DensityBars",
    "class_breakdown_png",
    "class_outlines",
    "class_thumbnail",
    "density_bars",
    "draw_scale_bar",
    "group_histograms",
    "histogram_png",
    "nice_length",
    "outline_width",
    "png_bytes",
    "thumbnail_level",
]

#: Outline colour of fold regions on thumbnails.
FOLD_RGB = (255, 255, 255)
#: Colours of the slides' series in the histograms (Okabe-Ito, colour-blind safe).
_SERIES = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


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


def nice_length(target: float) -> float:
    """The largest 1, 2 or 5 times a power of ten at most ``target`` (a scale bar's length).

    >>> nice_length(180.0), nice_length(7.0)
    (100.0, 5.0)
    """
    power = 10.0 ** np.floor(np.log10(target))
    return float(max(m * power for m in (1.0, 2.0, 5.0) if m * power <= target))


def draw_scale_bar(rgb: np.ndarray, pixel_um: float) -> tuple[float, int]:
    """Draw a white scale bar with its length in µm at the bottom left of ``rgb`` (in place).

    The bar is a :func:`nice_length` of about a fifth of the image width.
    Returns the bar's length in µm and in pixels.
    """
    from PIL import Image, ImageDraw, ImageFont

    ny, nx = rgb.shape[:2]
    length_um = nice_length(0.2 * nx * pixel_um)
    length_px = round(length_um / pixel_um)
    margin, height = max(6, nx // 60), max(3, nx // 150)
    y1 = ny - margin
    y0 = y1 - height
    img = Image.fromarray(rgb)
    draw = ImageDraw.Draw(img)
    from matplotlib import font_manager

    font = ImageFont.truetype(font_manager.findfont("DejaVu Sans"), max(11, nx // 45))  # has µ
    text = f"{length_um:g} µm"
    box = draw.textbbox((margin, y0 - 4), text, font=font, anchor="ls")
    draw.rectangle((margin - 4, box[1] - 4, max(box[2], margin + length_px) + 4, y1 + 4), fill=(0, 0, 0))
    draw.rectangle((margin, y0, margin + length_px - 1, y1 - 1), fill=(255, 255, 255))
    draw.text((margin, y0 - 4), text, font=font, fill=(255, 255, 255), anchor="ls")
    rgb[...] = np.asarray(img)
    return length_um, length_px


def class_outlines(labels: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` pixels inside a fibre's outline (bool, ``labels``' shape; background never)."""
    from scipy import ndimage

    size = 2 * width + 1
    edge = (ndimage.maximum_filter(labels, size) != labels) | (ndimage.minimum_filter(labels, size) != labels)
    return edge & (labels > 0)


def class_thumbnail(slide_path: str, table: pd.DataFrame, meta: Mapping[str, Any], max_px: int) -> np.ndarray:
    """RGB thumbnail of a slide: fibre outlines in their class colour, folds outlined, a scale bar.

    The outlines are drawn in the unblended class colours (:attr:`FibreClass.rgb`),
    :func:`outline_width` wide with a 1-px dark rim inside, over the slide's
    composite, so they match the legend whatever the signal under them.
    """
    from skimage.segmentation import find_boundaries

    slide = open_slide(slide_path)
    level = thumbnail_level(slide, int(meta.get("level", 0)), max_px)
    _, ny, nx = slide.levels[level].shape
    rgb = composite_rgb(slide.read(level, 0, 0, ny, nx), slide.roles)
    labels = np.asarray(slide.label_array("fibres", level)[0])
    lut = np.zeros((int(max(labels.max(), table["fibre_id"].to_numpy(np.int64).max(initial=0))) + 1, 3), np.uint8)
    has = np.zeros(lut.shape[0], bool)
    for cls in FibreClass:
        ids = table["fibre_id"].to_numpy(np.int64)[table["curation_class"].astype(str).to_numpy() == cls]
        lut[ids] = cls.rgb
        has[ids] = True
    width = outline_width(nx, ny)
    rgb[class_outlines(labels, width + 1) & has[labels]] = 0  # a dark rim inside sets the colour off the signal
    edge = class_outlines(labels, width) & has[labels]
    rgb[edge] = lut[labels[edge]]
    if "folds" in slide.labels:
        folds = np.asarray(slide.label_array("folds", level)[0])
        rgb[find_boundaries(folds == FOLD, mode="inner")] = FOLD_RGB
    pixel_um = meta.get("pixel_size_um")
    if pixel_um:
        draw_scale_bar(rgb, float(pixel_um) * slide.levels[0].shape[-1] / nx)
    return rgb


def outline_width(nx: int, ny: int) -> int:
    """Outline width (px) of the thumbnail's fibres: 1 px per 400 px of the longer side, at least 1."""
    return max(1, round(max(nx, ny) / 400))


def _fig_png(fig: Any, dpi: int) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


@dataclass(frozen=True)
class DensityBars:
    """Histogram bars of true width: ``left`` edges, ``width`` and ``height`` (share of fibres per unit).

    The last, open bin (``[open_from, inf)``) is not a bar: it has no width; its
    count and share of the fibres are given apart.
    """

    left: np.ndarray
    width: np.ndarray
    height: np.ndarray
    open_from: float
    open_count: int
    open_share: float


def density_bars(counts: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> DensityBars:
    """Bars of a histogram with bins ``[lo, hi)`` (the last open): ``count / (total x width)`` per unit.

    The closed bars' areas plus ``open_share`` sum to 1 (0 without fibres).

    >>> b = density_bars(np.array([2, 2, 4]), np.array([0.0, 1.0, 3.0]), np.array([1.0, 3.0, np.inf]))
    >>> b.width.tolist(), b.height.tolist(), b.open_count, b.open_share
    ([1.0, 2.0], [0.25, 0.125], 4, 0.5)
    """
    counts = np.asarray(counts, np.float64)
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    total = counts.sum()
    width = hi[:-1] - lo[:-1]
    height = counts[:-1] / (total * width) if total else np.zeros_like(width)
    return DensityBars(lo[:-1], width, height, float(lo[-1]), int(counts[-1]),
                       float(counts[-1] / total) if total else 0.0)


def group_histograms(hist: Any, slides: pd.DataFrame, keys: Sequence[str]) -> Any:
    """The histograms' counts summed over each group's slides: dimension ``group`` instead of ``slide``.

    A group is a combination of the slide table's ``keys`` columns (manifest
    metadata), labelled by their values joined with `` / ``.
    """
    import xarray as xr

    labels = slides.set_index(slides["slide"].astype(str))[list(keys)].astype(str).agg(" / ".join, axis=1)
    group = xr.DataArray(labels.reindex([str(s) for s in hist["slide"].values]).to_numpy(), dims="slide",
                         name="group")
    counts = hist[[v for v in hist.data_vars if str(v).endswith("_count")]]
    return counts.groupby(group).sum()


def histogram_png(hist: Any, name: str, quantity: str, unit: str, dpi: int, series: str = "slide") -> bytes:
    """Density histogram of ``<name>_count`` per slide (or other ``series``) with bars as wide as their bins.

    Bar heights are shares of the slide's fibres per ``unit`` (bar area = share
    of fibres); the open last bin is written as a count and share beside the
    axis. One slide: filled bars; several: one outline per slide.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(hist[f"{name}_count"].values)
    slides = [str(s) for s in hist[series].values]
    lo, hi = np.asarray(hist[f"{name}_lo"].values), np.asarray(hist[f"{name}_hi"].values)
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    opened = []
    for i, (slide, row) in enumerate(zip(slides, counts, strict=True)):
        bars = density_bars(row, lo, hi)
        colour = _SERIES[i % len(_SERIES)]
        if len(slides) == 1:
            ax.bar(bars.left, bars.height, bars.width, align="edge", color=colour, edgecolor="white", label=slide)
        else:
            ax.stairs(bars.height, np.append(bars.left, bars.left[-1] + bars.width[-1]), color=colour,
                      linewidth=1.5, label=slide)
        opened.append(f"{slide}: {bars.open_count} ({100 * bars.open_share:.1f} %)")
    per = f"per {unit}" if unit else "per unit"
    ax.set_xlabel(f"{quantity} ({unit})" if unit else quantity)
    ax.set_ylabel(f"share of fibres {per}")
    ax.set_xlim(lo[0], lo[-1])
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    edge = f"{lo[-1]:g} {unit}".strip()
    ax.set_title(f"≥ {edge} (open bin, not drawn): " + "; ".join(opened), fontsize=8, loc="right")
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
