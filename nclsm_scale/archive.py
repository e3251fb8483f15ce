"""The archive a run reads: slides found in a folder, or listed by a manifest.

A folder is searched recursively for files whose names end in one of
``cfg.extensions`` (``.ome.zarr`` folders count as one slide; hidden entries and
names matching ``cfg.exclude`` are skipped). A manifest is a CSV or Parquet table
with a ``path`` column plus metadata columns (subject, diagnosis, muscle, ...).
Relative paths resolve against the manifest's folder, and every path must stay
inside that folder (after following links) unless ``cfg.allow_absolute_paths``:
a manifest cannot make the tool read elsewhere. Slide names come from the file
names (:func:`~nclsm_scale.convert.slide_id_of`) and must be unique, because each
slide's outputs are named after it.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nclsm_scale.config import ArchiveConfig
from nclsm_scale.errors import ValidationError

__all__ = ["ArchiveSlide", "discover", "manifest_frame", "read_archive_manifest", "scan_folder"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArchiveSlide:
    """One slide of the archive: its name, source path and metadata."""

    name: str
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)


def _is_slide_name(name: str, cfg: ArchiveConfig) -> bool:
    low = name.lower()
    if name.startswith(".") or any(fnmatch.fnmatch(low, p.lower()) for p in cfg.exclude):
        return False
    return any(low.endswith(ext.lower()) for ext in cfg.extensions)


def scan_folder(folder: str | Path, cfg: ArchiveConfig) -> list[Path]:
    """Slide files under ``folder`` (recursive, sorted)."""
    root = Path(folder)
    if not root.is_dir():
        raise ValidationError(f"{root}: the archive folder does not exist (or is not a folder).")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        keep = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            if d.lower().endswith(".zarr"):
                if _is_slide_name(d, cfg):
                    found.append(Path(dirpath) / d)
                continue  # never descend into a zarr store
            keep.append(d)
        dirnames[:] = keep
        found.extend(Path(dirpath) / f for f in filenames if _is_slide_name(f, cfg))
    return sorted(found)


def _safe_path(raw: Any, base: Path, cfg: ArchiveConfig, row: int) -> Path:
    text = "" if raw is None else str(raw).strip()
    if not text or text.lower() == "nan":
        raise ValidationError(f"manifest row {row}: empty 'path'.")
    path = Path(text).expanduser()
    if path.is_absolute() and not cfg.allow_absolute_paths:
        raise ValidationError(
            f"manifest row {row}: absolute path {text!r} is not allowed; give it relative to the manifest's "
            "folder or set archive.allow_absolute_paths=true."
        )
    resolved = (base / path).resolve()
    if not cfg.allow_absolute_paths and not resolved.is_relative_to(base):
        raise ValidationError(
            f"manifest row {row}: {text!r} leads outside the manifest's folder {base}; "
            "set archive.allow_absolute_paths=true to allow that."
        )
    return resolved


def read_archive_manifest(manifest: str | Path, cfg: ArchiveConfig) -> list[ArchiveSlide]:
    """Slides listed by a CSV or Parquet manifest, with their metadata columns (paths validated)."""
    import pandas as pd

    path = Path(manifest)
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ValidationError(f"{path}: cannot read the manifest: {exc}") from None
    if "path" not in df.columns:
        raise ValidationError(f"{path}: the manifest needs a 'path' column, has {list(df.columns)}")
    base = path.resolve().parent
    meta_cols = [c for c in df.columns if c not in ("path", "slide", "slide_id")]
    slides = []
    for i, row in enumerate(df.to_dict("records"), start=2 if path.suffix.lower() == ".csv" else 0):
        source = _safe_path(row["path"], base, cfg, i)
        slides.append(ArchiveSlide(_name(source), source, {c: row[c] for c in meta_cols}))
    return slides


def _name(path: Path) -> str:
    from nclsm_scale.convert import slide_id_of

    return slide_id_of(path)


def discover(archive: str | Path, cfg: ArchiveConfig) -> list[ArchiveSlide]:
    """The slides of a run: ``cfg.manifest`` if set, else ``archive`` if it is a manifest file, else its folder.

    Raises
    ------
    ValidationError
        No slides, an unreadable manifest, a path outside the allowed places, or two slides with one name.
    """
    archive = Path(archive)
    if cfg.manifest is not None:
        slides = read_archive_manifest(cfg.manifest, cfg)
    elif archive.is_file() and archive.suffix.lower() in (".csv", ".parquet", ".pq"):
        slides = read_archive_manifest(archive, cfg)
    else:
        slides = [ArchiveSlide(_name(p), p.resolve()) for p in scan_folder(archive, cfg)]
    if not slides:
        raise ValidationError(f"{archive}: no slides found (endings {', '.join(cfg.extensions)}).")
    seen: dict[str, Path] = {}
    for s in slides:
        if s.name in seen:
            raise ValidationError(
                f"two slides are both named {s.name!r} ({seen[s.name]} and {s.path}); outputs are named after "
                "the slide, so rename one."
            )
        seen[s.name] = s.path
    logger.info("archive %s: %d slide(s)", archive, len(slides))
    return slides


def manifest_frame(slides: list[ArchiveSlide]) -> Any:
    """Slide metadata as a DataFrame with a ``slide`` column, or None when no slide has metadata."""
    import pandas as pd

    if not any(s.meta for s in slides):
        return None
    return pd.DataFrame([{"slide": s.name, **s.meta} for s in slides])
