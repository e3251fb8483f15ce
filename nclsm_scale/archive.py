"""The archive a run reads: slides found in a folder, or listed by a manifest.

A folder is searched recursively for files whose names end in one of
``cfg.extensions`` (``.ome.zarr`` folders count as one slide; hidden entries and
names matching ``cfg.exclude`` are skipped). A manifest is a CSV or Parquet table
with a ``path`` column plus metadata columns (subject, diagnosis, muscle, ...).
Relative paths resolve against the manifest's folder, and every path must stay
inside that folder (after following links) unless ``cfg.allow_absolute_paths``:
a manifest cannot make the tool read elsewhere. Slide names come from the file
names (:func:`~nclsm_scale.layout.slide_id_of`) and must be unique, because each
slide's outputs are named after it.

The archive (or manifest) may also be an fsspec URL (``s3://bucket/prefix``): the
prefix is listed remotely with the same rules (:func:`slide_keys`), a remote
manifest's paths resolve against its own prefix and must stay under it, and
each slide gets a ``url`` plus the local ``path`` a run downloads it to
(``inputs_dir/<file name>``).
"""

from __future__ import annotations

import fnmatch
import io
import logging
import os
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nclsm_scale.config import ArchiveConfig
from nclsm_scale.errors import SlideReadError, ValidationError
from nclsm_scale.layout import slide_id_of
from nclsm_scale.storage import (
    is_remote,
    join_url,
    list_files,
    local_path,
    read_bytes,
    remote_parent,
)

__all__ = ["ArchiveSlide", "discover", "manifest_frame", "read_archive_manifest", "scan_folder", "slide_keys"]

_MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArchiveSlide:
    """One slide of the archive: its name, local source path, metadata and, for a remote slide, its URL.

    A remote slide's ``path`` is where a run downloads it before converting it.
    """

    name: str
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)
    url: str | None = None

    @property
    def source(self) -> str:
        """Where the slide comes from: its URL, else its path."""
        return self.url or str(self.path)


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


def slide_keys(keys: Iterable[str], cfg: ArchiveConfig) -> list[str]:
    """Slides among the object paths (POSIX, relative to a remote folder), by :func:`scan_folder`'s rules.

    Hidden entries are skipped, a ``.zarr`` folder is one slide (never looked into),
    other files count by their endings.
    """
    found = set()
    for key in keys:
        parts = key.strip("/").split("/")
        for i, part in enumerate(parts):
            if part.startswith("."):
                break
            if i == len(parts) - 1:
                if _is_slide_name(part, cfg):
                    found.add("/".join(parts))
            elif part.lower().endswith(".zarr"):
                if _is_slide_name(part, cfg):
                    found.add("/".join(parts[: i + 1]))
                break
    return sorted(found)


def _entry(raw: Any, row: int) -> str:
    text = "" if raw is None else str(raw).strip()
    if not text or text.lower() == "nan":
        raise ValidationError(f"manifest row {row}: empty 'path'.")
    return text


def _absolute_refused(text: str, row: int) -> ValidationError:
    return ValidationError(
        f"manifest row {row}: absolute path {text!r} is not allowed; give it relative to the manifest's "
        "folder or set archive.allow_absolute_paths=true."
    )


def _safe_url(raw: Any, base: str, cfg: ArchiveConfig, row: int) -> str:
    """A remote manifest's entry as a URL under ``base`` (its folder), or anywhere when allowed."""
    from fsspec.core import split_protocol

    text = _entry(raw, row)
    if is_remote(text) or text.startswith("/"):
        if not cfg.allow_absolute_paths:
            raise _absolute_refused(text, row)
        if not is_remote(text):
            raise ValidationError(f"manifest row {row}: {text!r}: an absolute entry of a remote manifest must "
                                  "be a URL (s3://bucket/key).")
        return text
    protocol, base_key = split_protocol(base)
    key = posixpath.normpath(posixpath.join(base_key, text))
    if not cfg.allow_absolute_paths and not key.startswith(f"{base_key.rstrip('/')}/"):
        raise ValidationError(
            f"manifest row {row}: {text!r} leads outside the manifest's folder {base}; "
            "set archive.allow_absolute_paths=true to allow that."
        )
    return f"{protocol}://{key}"


def _safe_path(raw: Any, base: Path, cfg: ArchiveConfig, row: int) -> Path | str:
    text = _entry(raw, row)
    if is_remote(text):  # a URL in a local manifest: absolute by nature
        if not cfg.allow_absolute_paths:
            raise _absolute_refused(text, row)
        return text
    path = Path(text).expanduser()
    if path.is_absolute() and not cfg.allow_absolute_paths:
        raise _absolute_refused(text, row)
    resolved = (base / path).resolve()
    if not cfg.allow_absolute_paths and not resolved.is_relative_to(base):
        raise ValidationError(
            f"manifest row {row}: {text!r} leads outside the manifest's folder {base}; "
            "set archive.allow_absolute_paths=true to allow that."
        )
    return resolved


def read_archive_manifest(
    manifest: str | Path, cfg: ArchiveConfig, *, inputs_dir: Path | None = None
) -> list[ArchiveSlide]:
    """Slides listed by a CSV or Parquet manifest (a path or URL), with their metadata columns (paths validated).

    ``inputs_dir`` is where a run stages remote slides (needed only when there are some).
    """
    import pandas as pd

    remote = is_remote(manifest)
    path = str(manifest) if remote else local_path(manifest)
    suffix = posixpath.splitext(str(path).rstrip("/"))[1].lower()
    try:
        data = io.BytesIO(read_bytes(str(path), cfg.storage_options)) if remote else path
        if suffix in (".parquet", ".pq"):
            df = pd.read_parquet(data)
        else:
            df = pd.read_csv(data, dtype=str, keep_default_na=False)
    except SlideReadError as exc:
        raise ValidationError(f"cannot read the manifest: {exc}") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ValidationError(f"{path}: cannot read the manifest: {exc}") from None
    if "path" not in df.columns:
        raise ValidationError(f"{path}: the manifest needs a 'path' column, has {list(df.columns)}")
    meta_cols = [c for c in df.columns if c not in ("path", "slide", "slide_id")]
    slides = []
    for i, row in enumerate(df.to_dict("records"), start=2 if suffix == ".csv" else 0):
        meta = {c: row[c] for c in meta_cols}
        source: str | Path
        if remote:
            source = _safe_url(row["path"], remote_parent(str(path)), cfg, i)
        else:
            source = _safe_path(row["path"], Path(path).resolve().parent, cfg, i)
        if isinstance(source, str):
            slides.append(_remote_slide(source, inputs_dir, meta))
        else:
            slides.append(ArchiveSlide(slide_id_of(source), source, meta))
    return slides


def _remote_slide(url: str, inputs_dir: Path | None, meta: dict[str, Any] | None = None) -> ArchiveSlide:
    if inputs_dir is None:
        raise ValidationError(f"{url}: a remote slide needs a local folder to be downloaded to (inputs_dir).")
    file_name = url.rstrip("/").rsplit("/", 1)[-1]
    return ArchiveSlide(slide_id_of(file_name), inputs_dir / file_name, meta or {}, url=url)


def discover(archive: str | Path, cfg: ArchiveConfig, *, inputs_dir: Path | None = None) -> list[ArchiveSlide]:
    """The slides of a run: ``cfg.manifest`` if set, else ``archive`` if it is a manifest file, else its folder.

    ``archive`` and ``cfg.manifest`` may be paths or URLs; remote slides get
    ``path = inputs_dir / <file name>`` (``inputs_dir`` is needed only for them).

    Raises
    ------
    ValidationError
        No slides, an unreadable manifest or folder, a path outside the allowed places, or two slides with
        one name.
    """
    remote = is_remote(archive)
    if cfg.manifest is not None:
        slides = read_archive_manifest(cfg.manifest, cfg, inputs_dir=inputs_dir)
    elif str(archive).rstrip("/").lower().endswith(_MANIFEST_SUFFIXES) and (
            remote or local_path(archive).is_file()):
        slides = read_archive_manifest(archive, cfg, inputs_dir=inputs_dir)
    elif remote:
        keys = slide_keys(list_files(str(archive), cfg.storage_options), cfg)
        slides = [_remote_slide(join_url(str(archive), k), inputs_dir) for k in keys]
    else:
        slides = [ArchiveSlide(slide_id_of(p), p.resolve()) for p in scan_folder(local_path(archive), cfg)]
    if not slides:
        raise ValidationError(f"{archive}: no slides found (endings {', '.join(cfg.extensions)}).")
    seen: dict[str, str] = {}
    for s in slides:
        if s.name in seen:
            raise ValidationError(
                f"two slides are both named {s.name!r} ({seen[s.name]} and {s.source}); outputs are named after "
                "the slide, so rename one."
            )
        seen[s.name] = s.source
    logger.info("archive %s: %d slide(s)", archive, len(slides))
    return slides


def manifest_frame(slides: list[ArchiveSlide]) -> Any:
    """Slide metadata as a DataFrame with a ``slide`` column, or None when no slide has metadata."""
    import pandas as pd

    if not any(s.meta for s in slides):
        return None
    return pd.DataFrame([{"slide": s.name, **s.meta} for s in slides])
