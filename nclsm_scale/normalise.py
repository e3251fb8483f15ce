"""Global per-channel intensity normalisation.

Percentile constants are computed once per slide from a low-resolution pyramid
level (:func:`compute_slide_norm`, by ``convert``, which stores them in the slide's
``nclsm.norm`` attributes) and passed explicitly to every block, so normalisation
never depends on how a slide is cut into blocks (per-block percentiles would).
:func:`slide_norm` returns the stored constants (computing them only for a store
that has none). ``apply_norm`` maps ``lo -> 0`` and ``hi -> 1`` per channel,
without clipping.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from nclsm_scale.slide import Slide

__all__ = ["MYOSIN_ROLES", "NormStats", "apply_norm", "compute_norm", "compute_slide_norm", "cytoplasm_signal",
           "slide_norm"]

log = logging.getLogger(__name__)

#: Channel roles of the myosin heavy-chain isoforms (fibre-type stains): MyHC I, IIa, IIx.
MYOSIN_ROLES = ("myh1", "myh2a", "myh2x")
#: Defaults: low and high percentiles, and the largest side of the level used.
LO_PERCENTILE = 1.0
HI_PERCENTILE = 99.5
MAX_SIDE_PX = 4096


class NormStats(BaseModel):
    """Per-channel low/high intensities (JSON-serialisable for the run manifest)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lo: list[float] = Field(..., description="Per-channel value mapped to 0.")
    hi: list[float] = Field(..., description="Per-channel value mapped to 1 (> lo).")
    lo_percentile: float = Field(LO_PERCENTILE, ge=0.0, le=100.0)
    hi_percentile: float = Field(HI_PERCENTILE, ge=0.0, le=100.0)
    level: int | None = Field(None, ge=0, description="Pyramid level the percentiles came from.")

    @model_validator(mode="after")
    def _check(self) -> NormStats:
        if len(self.lo) != len(self.hi):
            raise ValueError(f"lo has {len(self.lo)} channels, hi has {len(self.hi)}")
        if any(h <= lo for lo, h in zip(self.lo, self.hi, strict=True)):
            raise ValueError(f"every hi must exceed its lo (lo={self.lo}, hi={self.hi})")
        return self


def compute_norm(
    image: np.ndarray,
    *,
    lo_percentile: float = LO_PERCENTILE,
    hi_percentile: float = HI_PERCENTILE,
    level: int | None = None,
) -> NormStats:
    """Percentile constants of a ``(c, y, x)`` image (typically a low-resolution level).

    A channel whose percentiles coincide (a flat channel) gets ``hi = lo + 1``.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"expected a (c, y, x) image, got shape {image.shape}")
    flat = image.reshape(image.shape[0], -1).astype(np.float64)
    lo = np.percentile(flat, lo_percentile, axis=1)
    hi = np.percentile(flat, hi_percentile, axis=1)
    hi = np.where(hi > lo, hi, lo + 1.0)
    return NormStats(
        lo=[float(v) for v in lo],
        hi=[float(v) for v in hi],
        lo_percentile=lo_percentile,
        hi_percentile=hi_percentile,
        level=level,
    )


def apply_norm(
    block: np.ndarray, stats: NormStats, channels: list[int] | None = None
) -> np.ndarray:
    """Normalised float32 copy of a ``(c, y, x)`` block: ``(block - lo) / (hi - lo)``.

    ``channels`` picks which of ``stats``' channels the block's channels are
    (default: all, in order).
    """
    idx = list(range(len(stats.lo))) if channels is None else list(channels)
    if block.shape[0] != len(idx):
        raise ValueError(f"block has {block.shape[0]} channels, stats describe {len(idx)}")
    lo = np.asarray(stats.lo, dtype=np.float32)[idx][:, None, None]
    scale = (1.0 / (np.asarray(stats.hi, dtype=np.float64) - np.asarray(stats.lo)))[idx]
    return (block.astype(np.float32) - lo) * scale.astype(np.float32)[:, None, None]


def slide_norm(slide: Slide) -> NormStats:
    """The slide's normalisation constants: those ``convert`` stored, else :func:`compute_slide_norm`."""
    if slide.norm is not None:
        return NormStats.model_validate(slide.norm)
    return compute_slide_norm(slide)


def compute_slide_norm(
    slide: Slide,
    *,
    max_side_px: int = MAX_SIDE_PX,
    lo_percentile: float = LO_PERCENTILE,
    hi_percentile: float = HI_PERCENTILE,
) -> NormStats:
    """Percentile constants of a slide from its finest level with both sides <= ``max_side_px``.

    Falls back to the coarsest level when every level is larger.
    """
    level = len(slide.levels) - 1
    for i, lv in enumerate(slide.levels):
        if max(lv.shape[1:]) <= max_side_px:
            level = i
            break
    _, ny, nx = slide.levels[level].shape
    image = slide.read(level, 0, 0, ny, nx)
    stats = compute_norm(
        image, lo_percentile=lo_percentile, hi_percentile=hi_percentile, level=level
    )
    log.info(
        "%s: normalisation from level %d (%dx%d): lo=%s hi=%s",
        slide.path,
        level,
        ny,
        nx,
        stats.lo,
        stats.hi,
    )
    return stats


def cytoplasm_signal(
    image: np.ndarray, roles: Mapping[str, int], background: Sequence[float], scale: Sequence[float]
) -> np.ndarray | None:
    """The cytoplasm signal of a ``(c, y, x)`` window, float32, as a share of each channel's range.

    The mito channel when there is one, else the brightest myosin heavy-chain channel
    pixel by pixel (every fibre expresses at least one isoform, so the brightest is
    its cytoplasm; interstitium and holes are dark in all); each channel minus its
    background and divided by its ``scale``. None without any of them.
    """
    def norm(c: int) -> np.ndarray:
        return (image[c].astype(np.float32) - np.float32(background[c])) / np.float32(scale[c])

    if "mito" in roles:
        return norm(roles["mito"])
    myosin = [roles[r] for r in MYOSIN_ROLES if r in roles]
    if not myosin:
        return None
    return np.max(np.stack([norm(c) for c in myosin]), axis=0)
