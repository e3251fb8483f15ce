"""Manifests of stage outputs: what a stage wrote, checked cheaply or deeply before a rerun trusts it.

A manifest lists every file a stage wrote for one slide (paths relative to the run
directory) with its size and sha256, and every Zarr array among them with its
shape, dtype and chunk shape. :func:`check_manifest` compares the files on disk
with it: missing, truncated or extended files and, for arrays, chunk files that
appeared, always (one ``stat`` per file and a directory walk); with ``deep`` also
each file's sha256, which catches a file altered in place.

Checksums are sha256 from :mod:`hashlib` (about 1.7 GB/s on the development
machine), computed by a few threads (hashlib releases the GIL).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Damage", "build_manifest", "check_manifest", "file_sha256", "source_identity"]

#: Bytes read at each end of a source file for its identity.
_IDENTITY_BYTES = 1 << 20
_THREADS = 4


@dataclass(frozen=True)
class Damage:
    """One output file that does not match its manifest (``path`` relative to the run directory)."""

    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 8 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def _files(root: Path, outputs: Iterable[Path], skip: Sequence[Path]) -> list[Path]:
    """Every file under ``outputs`` (files or folders), leaving out ``skip`` and what lies under it."""
    skipped = {p.resolve() for p in skip}
    found: list[Path] = []
    for top in outputs:
        if top.is_file():
            found.append(top)
            continue
        for d, dirs, names in os.walk(top):
            here = Path(d)
            dirs[:] = sorted(n for n in dirs if (here / n).resolve() not in skipped)
            found += [here / n for n in sorted(names) if (here / n).resolve() not in skipped]
    return found


def _array(meta_file: Path) -> dict[str, Any] | None:
    """Shape, dtype and chunk shape of the Zarr v3 array whose ``zarr.json`` is ``meta_file`` (None: a group)."""
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError):
        return None
    if meta.get("node_type") != "array":
        return None
    grid = meta.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape")
    return {"shape": meta.get("shape"), "dtype": meta.get("data_type"), "chunks": grid}


def build_manifest(root: Path, outputs: Iterable[Path], skip: Sequence[Path] = ()) -> dict[str, Any]:
    """The manifest of the files under ``outputs`` (minus ``skip``), paths relative to ``root``.

    Returns ``{"files": {rel: [size, sha256]}, "arrays": {rel folder: {shape, dtype, chunks}}}``.
    """
    files = _files(root, outputs, skip)
    with ThreadPoolExecutor(_THREADS) as pool:
        sums = list(pool.map(file_sha256, files))
    entries = {p.relative_to(root).as_posix(): [p.stat().st_size, s] for p, s in zip(files, sums, strict=True)}
    arrays = {}
    for p in files:
        if p.name == "zarr.json" and (info := _array(p)) is not None:
            arrays[p.parent.relative_to(root).as_posix()] = info
    return {"files": entries, "arrays": arrays}


def check_manifest(root: Path, manifest: Mapping[str, Any], *, deep: bool = False) -> list[Damage]:
    """What differs between the files under ``root`` and ``manifest`` (empty: all present and whole).

    Cheap (``deep=False``): every listed file exists with its size, and no chunk file
    appeared in a listed array. ``deep``: also every file's sha256.
    """
    listed: dict[str, list[Any]] = manifest.get("files", {})
    damage: list[Damage] = []
    present: list[tuple[str, Path]] = []
    for rel, (size, _) in listed.items():
        p = root / rel
        try:
            actual = p.stat().st_size
        except FileNotFoundError:
            damage.append(Damage(rel, "missing"))
            continue
        if actual != size:
            damage.append(Damage(rel, f"{actual} bytes, {size} written"))
        else:
            present.append((rel, p))
    for folder in manifest.get("arrays", {}):
        top = root / folder
        if top.is_dir():
            damage += [Damage(rel, "not written by the stage")
                       for p in _files(root, [top], []) if (rel := p.relative_to(root).as_posix()) not in listed]
    if deep:
        with ThreadPoolExecutor(_THREADS) as pool:
            sums = list(pool.map(file_sha256, [p for _, p in present]))
        damage += [Damage(rel, "content differs (sha256)")
                   for (rel, _), s in zip(present, sums, strict=True) if s != listed[rel][1]]
    return sorted(damage, key=lambda d: d.path)


def source_identity(path: Path) -> dict[str, Any]:
    """What identifies a source slide's content cheaply: name, size and sha256 of its first and last MiB.

    A folder (an OME-Zarr input) is identified by its files' relative names and sizes.
    """
    if path.is_dir():
        files = sorted(_files(path, [path], []))
        listing = [[p.relative_to(path).as_posix(), p.stat().st_size] for p in files]
        return {"name": path.name, "files": hashlib.sha256(json.dumps(listing).encode()).hexdigest()}
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(_IDENTITY_BYTES))
        if size > _IDENTITY_BYTES:
            f.seek(max(size - _IDENTITY_BYTES, _IDENTITY_BYTES))
            h.update(f.read())
    return {"name": path.name, "size": size, "ends_sha256": h.hexdigest()}
