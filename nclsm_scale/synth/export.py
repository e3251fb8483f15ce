"""Files for the ``synth`` command: mask-based sections on disk and RGB previews."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile
import zarr

from nclsm_scale.config import SynthConfig
from nclsm_scale.errors import ConfigError, SlideReadError, SlideWriteError
from nclsm_scale.synth.from_mask import render_from_mask
from nclsm_scale.synth.generate import SyntheticSection
from nclsm_scale.synth.stains import STAIN_COLOURS
from nclsm_scale.synth.write import (
    build_levels,
    level_shapes,
    output_paths,
    write_section,
    write_tiff,
)

log = logging.getLogger(__name__)

PREVIEW_MAX_PX = 2048


def write_arrays(
    path: str | Path, section: SyntheticSection, cfg: SynthConfig, uuid_tag: str
) -> dict[str, Path]:
    """Write an in-memory section in the same file layout as :func:`write_section`."""
    paths = output_paths(path)
    _, h, w = section.image.shape
    cfg = cfg.model_copy(update={"size_px": (h, w), "pixel_size_um": section.pixel_size_um})
    shapes = level_shapes((h, w), cfg.min_level_px)
    root = zarr.open_group(zarr.storage.MemoryStore(), mode="w")
    t = cfg.tile_px
    for name, data in (
        ("image", section.image),
        ("fibres", section.fibres),
        ("regions", section.regions),
    ):
        chunks = (1, t, t) if data.ndim == 3 else (t, t)
        arr = root.create_array(
            f"{name}/0", shape=data.shape, chunks=chunks, dtype=data.dtype, fill_value=0
        )
        arr[...] = data
        build_levels(root, name, shapes, cfg.chunk_px, "image" if name == "image" else "labels")
    try:
        write_tiff(paths["image"], root, "image", cfg, len(shapes), list(section.channel_names), uuid_tag)
        write_tiff(paths["fibres"], root, "fibres", cfg, len(shapes), ["fibres"], uuid_tag)
        write_tiff(paths["regions"], root, "regions", cfg, len(shapes), ["regions"], uuid_tag)
        section.table.to_csv(paths["csv"], index=False)
        section.table.to_parquet(paths["parquet"], index=False)
    except OSError as exc:
        raise SlideWriteError(f"cannot write {paths['image']}: {exc}") from exc
    return paths


def read_mask(path: Path) -> np.ndarray:
    """Read a 2-D integer instance mask from a TIFF."""
    try:
        labels = np.squeeze(tifffile.imread(path))
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise SlideReadError(f"cannot read the mask {path}: {exc}") from exc
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise SlideReadError(
            f"{path}: expected a 2-D integer label image, found {labels.dtype} "
            f"with shape {labels.shape}."
        )
    return labels


def composite(image: np.ndarray, stains: Sequence[str]) -> np.ndarray:
    """False-colour RGB uint8 of a ``(C, Y, X)`` image, each stain in its :data:`STAIN_COLOURS`."""
    acc = np.zeros((*image.shape[-2:], 3), np.float32)
    for c, stain in enumerate(stains):
        lo, hi = np.percentile(image[c], [0.5, 99.8])
        v = np.clip((image[c].astype(np.float32) - lo) / max(hi - lo, 1.0), 0.0, 1.0)
        acc += v[..., None] * np.asarray(STAIN_COLOURS[stain], np.float32)
    return (np.clip(acc, 0.0, 1.0) * 255.0).astype(np.uint8)


def write_preview(
    image_path: Path, png: Path, stains: Sequence[str], max_px: int = PREVIEW_MAX_PX
) -> Path:
    """False-colour PNG (:func:`composite`) of the largest pyramid level no bigger than ``max_px``."""
    from PIL import Image

    with tifffile.TiffFile(image_path) as tif:
        levels = tif.series[0].levels
        level = next((lv for lv in levels if max(lv.shape[-2:]) <= max_px), levels[-1])
        data = level.asarray()
    rgb = composite(data, stains)
    try:
        Image.fromarray(rgb).save(png)
    except OSError as exc:
        raise SlideWriteError(f"cannot write the preview {png}: {exc}") from exc
    return png


def synthesize(
    out: Path,
    cfg: SynthConfig,
    *,
    from_mask: Path | None = None,
    mask_pixel_size_um: float | None = None,
    preview: Path | None = None,
    progress: bool | None = None,
) -> dict[str, Path]:
    """Everything ``nclsm-scale synth`` does: procedural or mask-based section, optional preview."""
    if from_mask is not None:
        if mask_pixel_size_um is None:
            raise ConfigError(
                "--from-mask needs --mask-pixel-size (um): instance masks such as NCL-SM's "
                "carry no pixel size, e.g. --mask-pixel-size 0.25."
            )
        labels = read_mask(from_mask)
        section = render_from_mask(
            labels,
            seed=cfg.seed,
            mask_pixel_size_um=mask_pixel_size_um,
            pixel_size_um=cfg.pixel_size_um,
            stains=cfg.stains,
        )
        written = write_arrays(out, section, cfg, f"mask:{from_mask.name}:{mask_pixel_size_um}")
    else:
        written = write_section(out, cfg, progress=progress)
    if preview is not None:
        written["preview"] = write_preview(written["image"], preview, cfg.stains)
    return written
