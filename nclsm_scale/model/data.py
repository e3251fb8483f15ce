"""Training and held-out data: (normalised image, instance labels) pairs.

Sources (``TrainConfig.data`` / ``nclsm-scale train --data``):

- ``synth``: sections from :func:`nclsm_scale.synth.generate_section` with varied
  fibre sizes, gaps, touching shares, pathology and folds.
- ``ncl-sm`` or a folder of ``*_fibres.tif(f)`` masks (NCL-SM style): images
  rendered from the real masks with :func:`nclsm_scale.synth.render_from_mask`.
  The bottom ``holdout_fraction`` of every mask's rows is held out: it is never
  rendered for training and is what :func:`heldout_samples` returns. The last
  ``clean_renders`` of each mask's renders are drawn clean (:data:`CLEAN_LOOK`).
- an OME-Zarr store with a labels group (``fibres`` or the first label image),
  read at the level nearest the training pixel size.
- a folder of ``<name>.tif(f)`` images with ``<name>_mask.tif(f)`` (or
  ``_labels``) instance masks, assumed to be at the training pixel size.

Every image is normalised with global percentile constants of the whole image,
as inference normalises a whole slide.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nclsm_scale.config import SynthConfig, TrainConfig
from nclsm_scale.errors import ConfigError
from nclsm_scale.normalise import apply_norm, compute_norm

__all__ = ["Sample", "heldout_samples", "load_sources", "ncl_sm_masks", "split_holdout"]

log = logging.getLogger(__name__)


@dataclass
class Sample:
    """One training or evaluation image: normalised ``(2, y, x)`` float32 and labels ``(y, x)``."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    pixel_size_um: float


def _normalised(name: str, image: np.ndarray, labels: np.ndarray, pixel_size_um: float) -> Sample:
    image = np.asarray(image)[:2]
    return Sample(
        name, apply_norm(image, compute_norm(image)), np.asarray(labels, np.uint32), pixel_size_um
    )


def split_holdout(labels: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) parts of a mask: the held-out part is the bottom ``fraction`` of rows."""
    cut = int(round(labels.shape[0] * (1.0 - fraction)))
    return labels[:cut], labels[cut:]


def ncl_sm_masks(folder: str | Path) -> list[Path]:
    """NCL-SM style masks ``*_fibres.tif(f)`` in ``folder``, sorted."""
    masks = sorted(p for p in Path(folder).glob("*_fibres.tif*"))
    if not masks:
        raise ConfigError(f"{folder}: no NCL-SM style masks (*_fibres.tiff) found.")
    return masks


def _read_mask(path: Path) -> np.ndarray:
    import tifffile

    return np.squeeze(tifffile.imread(str(path)))


#: Appearance overrides of a clean render: what a well-stained, well-cut section lacks.
CLEAN_LOOK: dict[str, Any] = {
    "connective": 0.0,
    "interstitium": 0.0,
    "unstained_share": 0.0,
    "tear_width": 0.0,
    "speckle_density": 0.0,
    "nerve_share": 0.0,
    "site_spacing_px": 0.0,  # no vessel or nerve sites
    "capillary_level": 0.0,
    "defocus_share": 0.0,
    "ring_breaks": 0.0,
    "width_variation": 0.0,
}


def _render(
    name: str, labels: np.ndarray, cfg: TrainConfig, seed: int, *, clean: bool = False
) -> Sample:
    from nclsm_scale.synth import render_from_mask

    sec = render_from_mask(
        labels,
        seed=seed,
        mask_pixel_size_um=cfg.mask_pixel_size_um,
        pixel_size_um=cfg.pixel_size_um,
        **(CLEAN_LOOK if clean else {}),
    )
    return _normalised(name, sec.image, sec.fibres, sec.pixel_size_um)


def _ncl_sm_train(folder: Path, cfg: TrainConfig) -> list[Sample]:
    out = []
    for mi, path in enumerate(ncl_sm_masks(folder)):
        train_part, _ = split_holdout(_read_mask(path), cfg.holdout_fraction)
        for r in range(cfg.renders_per_mask):
            seed = cfg.seed * 1000 + mi * 100 + r
            clean = r >= cfg.renders_per_mask - cfg.clean_renders
            name = f"{path.stem}[train]#{r}" + (" clean" if clean else "")
            out.append(_render(name, train_part, cfg, seed, clean=clean))
            log.info("rendered %s (%s)", out[-1].name, out[-1].labels.shape)
    return out


def heldout_samples(
    folder: str | Path, cfg: TrainConfig, *, seed: int = 12345, clean: bool = False
) -> list[Sample]:
    """Images rendered from the held-out bottom part of every NCL-SM mask in ``folder``.

    ``clean`` draws them with :data:`CLEAN_LOOK` (well-stained sections).
    """
    out = []
    for mi, path in enumerate(ncl_sm_masks(folder)):
        _, test_part = split_holdout(_read_mask(path), cfg.holdout_fraction)
        out.append(_render(f"{path.stem}[held-out]", test_part, cfg, seed + mi, clean=clean))
    return out


def _synth(cfg: TrainConfig) -> list[Sample]:
    from nclsm_scale.synth import generate_section

    rng = np.random.default_rng(cfg.seed)
    out = []
    for i in range(cfg.synth_sections):
        scfg = SynthConfig(
            size_px=(cfg.synth_size_px, cfg.synth_size_px),
            seed=cfg.seed * 1000 + i,
            pixel_size_um=cfg.pixel_size_um,
            mean_csa_um2=float(np.exp(rng.uniform(np.log(1500), np.log(9000)))),
            csa_cv=float(rng.uniform(0.15, 0.5)),
            gap_um=float(rng.uniform(0.5, 4.0)),
            touching_fraction=float(rng.uniform(0.0, 0.6)),
            atrophic_fraction=float(rng.uniform(0.0, 0.2)),
            hypertrophic_fraction=float(rng.uniform(0.0, 0.1)),
            ntm_fraction=float(rng.uniform(0.0, 0.4)),
            fam_fraction=float(rng.uniform(0.0, 0.08)),
            folds=int(rng.integers(0, 2)),
        )
        sec = generate_section(scfg)
        out.append(_normalised(f"synth#{i}", sec.image, sec.fibres, sec.pixel_size_um))
        log.info("generated %s (%s)", out[-1].name, out[-1].labels.shape)
    return out


def _ome_zarr(path: Path, cfg: TrainConfig) -> list[Sample]:
    from nclsm_scale.slide import open_slide

    slide = open_slide(path)
    if not slide.labels:
        raise ConfigError(f"{path}: the OME-Zarr store has no labels group to train on.")
    level = slide.level_nearest(cfg.pixel_size_um) if slide.pixel_size_known else 0
    _, ny, nx = slide.levels[level].shape
    image = slide.read(level, 0, 0, ny, nx)
    channels = [slide.roles.get("membrane", 0), slide.roles.get("mito", 1)]
    name = "fibres" if "fibres" in slide.labels else slide.labels[0]
    labels = np.asarray(slide.label_array(name, level)[...]).reshape(ny, nx)
    size = slide.levels[level].pixel_size_um
    return [
        _normalised(
            f"{path.name}:{name}", image[channels], labels, size[0] if size else cfg.pixel_size_um
        )
    ]


def _tiff_pairs(folder: Path, cfg: TrainConfig) -> list[Sample]:
    import tifffile

    out = []
    for mask in sorted(folder.glob("*_mask.tif*")) + sorted(folder.glob("*_labels.tif*")):
        stem = mask.name.split("_mask.tif")[0].split("_labels.tif")[0]
        images = [p for p in folder.glob(f"{stem}.tif*")]
        if not images:
            raise ConfigError(f"{mask}: no image {stem}.tif(f) beside the mask.")
        image = np.squeeze(tifffile.imread(str(images[0])))
        labels = np.squeeze(tifffile.imread(str(mask)))
        if image.ndim == 3 and image.shape[-1] in (2, 3, 4) and image.shape[:2] == labels.shape:
            image = np.moveaxis(image, -1, 0)
        if image.ndim != 3 or image.shape[1:] != labels.shape or image.shape[0] < 2:
            raise ConfigError(
                f"{images[0]}: expected a (c>=2, y, x) or (y, x, c) image matching the mask "
                f"{labels.shape}, found {image.shape}."
            )
        out.append(_normalised(stem, image, labels, cfg.pixel_size_um))
    if not out:
        raise ConfigError(
            f"{folder}: no <name>_mask.tif(f) / <name>_labels.tif(f) files to train on."
        )
    return out


def load_sources(sources: list[str], cfg: TrainConfig) -> list[Sample]:
    """Load every training source (see the module docstring)."""
    samples: list[Sample] = []
    for source in sources:
        if source == "synth":
            samples += _synth(cfg)
            continue
        if source == "ncl-sm":
            if cfg.ncl_sm_dir is None:
                raise ConfigError(
                    "--data ncl-sm needs train.ncl_sm_dir (the folder with *_fibres.tiff)."
                )
            source = cfg.ncl_sm_dir
        path = Path(source)
        if not path.exists():
            raise ConfigError(
                f"training data {source!r}: no such file or folder (or use synth / ncl-sm)."
            )
        if path.suffix == ".zarr" or (path / "zarr.json").is_file() or (path / ".zattrs").is_file():
            samples += _ome_zarr(path, cfg)
        elif path.is_dir() and any(path.glob("*_fibres.tif*")):
            samples += _ncl_sm_train(path, cfg)
        elif path.is_dir():
            samples += _tiff_pairs(path, cfg)
        else:
            raise ConfigError(f"training data {source}: expected an OME-Zarr store or a folder.")
    return samples
