"""Tiles of the viewer: pure numpy functions on one window of a pyramid level, and PNG encoding.

A tile ``(tx, ty)`` of a level with tile edge ``T`` covers the level's pixels
``[ty*T, (ty+1)*T) x [tx*T, (tx+1)*T)``, clipped to the level (the last row and
column of tiles are smaller), as OpenSeadragon expects. Three layers:

- the image: every shown channel normalised with the slide's constants
  (:func:`~nclsm_scale.normalise.apply_norm`, clipped to 0..1), times its display
  colour, summed and clipped (:func:`composite_tile`);
- the fibres: each fibre's boundary pixels (:func:`fibre_boundaries`) in its class
  colour, opaque, optionally its inside at a low alpha, the rest transparent (:func:`outline_tile`);
- the folds: the fold mask filled half-transparent, its boundary opaque (:func:`fold_tile`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nclsm_scale.normalise import NormStats, apply_norm

__all__ = ["composite_tile", "encode_jpeg", "encode_png", "fibre_boundaries", "fold_tile", "outline_tile",
           "tile_window"]


def tile_window(shape_yx: tuple[int, int], tile_px: int, tx: int, ty: int) -> tuple[int, int, int, int] | None:
    """Pixels ``(y0, x0, y1, x1)`` of tile ``(tx, ty)`` in a level of ``shape_yx``; None outside the level.

    >>> tile_window((1000, 700), 512, 1, 1)
    (512, 512, 1000, 700)
    >>> tile_window((1000, 700), 512, 2, 0) is None
    True
    """
    y0, x0 = ty * tile_px, tx * tile_px
    if tx < 0 or ty < 0 or y0 >= shape_yx[0] or x0 >= shape_yx[1]:
        return None
    return y0, x0, min(y0 + tile_px, shape_yx[0]), min(x0 + tile_px, shape_yx[1])


def composite_tile(
    block: np.ndarray, stats: NormStats, channels: Sequence[int], colors: Sequence[tuple[int, int, int]]
) -> np.ndarray:
    """RGB ``uint8`` ``(y, x, 3)`` composite of channels ``channels`` of a ``(c, y, x)`` block.

    Each channel is normalised with the slide's constants, clipped to 0..1, times
    its colour (``colors[i]`` for ``channels[i]``, 0..255); the sum is clipped and
    rounded.

    >>> stats = NormStats(lo=[0.0, 10.0], hi=[100.0, 20.0])
    >>> composite_tile(np.array([[[50]], [[30]]], np.uint16), stats, [0, 1], [(255, 0, 0), (0, 255, 0)]).tolist()
    [[[128, 255, 0]]]
    """
    rgb = np.zeros((*block.shape[-2:], 3), np.float32)
    for c, color in zip(channels, colors, strict=True):
        value = np.clip(apply_norm(block[c : c + 1], stats, [c])[0], 0.0, 1.0)
        rgb += value[..., None] * (np.asarray(color, np.float32) / np.float32(255.0))
    return np.rint(np.clip(rgb, 0.0, 1.0) * np.float32(255.0)).astype(np.uint8)


def fibre_boundaries(window: np.ndarray, width_px: int = 1) -> np.ndarray:
    """Boundary pixels of the labels in the core of ``window``: labelled, with another value within ``width_px``.

    A pixel is on the boundary when a pixel up to ``width_px`` away along its row or
    column has another value. ``window`` is ``(h + 2 w, w + 2 w)``: the tile and a
    halo of ``width_px`` pixels (zero outside the slide); the result is the ``(h, w)`` core.

    >>> fibre_boundaries(np.pad(np.array([[1, 1, 1], [1, 1, 1], [1, 1, 2]]), 1)).astype(int).tolist()
    [[1, 1, 1], [1, 0, 1], [1, 1, 1]]
    """
    k = width_px
    core = window[k:-k, k:-k]
    h, w = core.shape
    edge = np.zeros(core.shape, bool)
    for d in range(1, k + 1):
        for dy, dx in ((-d, 0), (d, 0), (0, -d), (0, d)):
            edge |= window[k + dy : k + dy + h, k + dx : k + dx + w] != core
    return edge & (core != 0)


def outline_tile(window: np.ndarray, lut: np.ndarray, fill_alpha: int = 0, width_px: int = 1) -> np.ndarray:
    """RGBA ``uint8`` ``(h, w, 4)``: boundary pixels of each fibre in ``lut[fibre_id]``, the rest transparent.

    ``window`` is the label window with its ``width_px`` halo (:func:`fibre_boundaries`);
    ``lut`` is ``(n, 4)`` ``uint8``, one colour per fibre ID (alpha 0: not drawn);
    IDs beyond it are not drawn. With ``fill_alpha`` > 0 the inside of each drawn
    fibre gets its colour at that alpha (its boundary stays opaque).
    """
    core = window[width_px:-width_px, width_px:-width_px]
    ids = np.where(core < lut.shape[0], core, 0).astype(np.intp)
    colors = lut[ids]
    drawn = (colors[..., 3] > 0) & (core < lut.shape[0])
    out = np.zeros((*core.shape, 4), np.uint8)
    if fill_alpha:
        out[drawn] = colors[drawn]
        out[drawn, 3] = fill_alpha
    edge = fibre_boundaries(window, width_px) & drawn
    out[edge] = colors[edge]
    return out


def fold_tile(window: np.ndarray, fold_value: int, rgba: tuple[int, int, int, int]) -> np.ndarray:
    """RGBA ``uint8`` ``(h, w, 4)`` of the fold mask: folds filled at half ``rgba``'s alpha, their edge at full.

    ``window`` is the ``labels/folds`` window with its one-pixel halo.
    """
    mask = (window == fold_value).astype(np.uint8)
    core = mask[1:-1, 1:-1].astype(bool)
    out = np.zeros((*core.shape, 4), np.uint8)
    out[core] = (*rgba[:3], rgba[3] // 2)
    out[fibre_boundaries(mask)] = (*rgba[:3], 255)
    return out


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG of an RGB or RGBA ``uint8`` ``(y, x, 3 | 4)`` array (lossless, fast zlib level)."""
    import imagecodecs

    return bytes(imagecodecs.png_encode(np.ascontiguousarray(pixels), level=1))


def encode_jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    """JPEG of an RGB ``uint8`` ``(y, x, 3)`` array (lossy; a tenth of the PNG's size for image tiles)."""
    import imagecodecs

    return bytes(imagecodecs.jpeg8_encode(np.ascontiguousarray(pixels), level=quality))
