"""Object storage for ``run``: archives and run directories at fsspec URLs (``s3://bucket/prefix``, ...).

The stages read and write local paths (the Dask workers open them), so remote
data is *staged* through a local folder:

- a remote archive is listed remotely, and each slide is downloaded by
  :func:`fetch` into the run's ``inputs/`` folder for its convert stage (then
  removed unless ``archive.keep_inputs``);
- a remote run directory lives in a local work directory
  (:func:`work_dir_for`) mirrored by :class:`RunSync`: pulled once into an empty
  work directory (so a restarted pod resumes), then pushed incrementally.

URLs open with :func:`fsspec.core.url_to_fs` and ``archive.storage_options``;
s3fs also honours the usual environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ``AWS_PROFILE``, ...).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import shutil
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from nclsm_scale.errors import ConfigError, SlideReadError, SlideWriteError, ValidationError, one_line

__all__ = [
    "LOCAL_ONLY",
    "RunSync",
    "fetch",
    "filesystem",
    "is_remote",
    "join_url",
    "list_files",
    "local_path",
    "read_bytes",
    "redact_options",
    "remote_identity",
    "remote_parent",
    "remove_local",
    "work_dir_for",
]

logger = logging.getLogger(__name__)

#: Top-level entries of a run directory that stay local: the run lock, staged inputs, the sync record.
LOCAL_ONLY = ("run.lock", "inputs", ".nclsm-sync")
#: Endings of files never synced: partial writes and SQLite's side files.
_TRANSIENT = (".tmp", ".part", "-wal", "-shm", "-journal")
_SECRET_WORDS = ("key", "secret", "token", "password", "credential")


def is_remote(url: str | Path) -> bool:
    """True for a URL with a protocol other than ``file://`` (``s3://``, ``gs://``, ``memory://``, ...)."""
    if isinstance(url, Path):
        return False
    from fsspec.core import split_protocol

    return split_protocol(str(url))[0] not in (None, "file", "local")


def local_path(path: str | Path) -> Path:
    """A local path from a path or a ``file://`` URL."""
    if isinstance(path, Path):
        return path
    from fsspec.core import split_protocol

    return Path(split_protocol(path)[1])


def join_url(url: str, rel: str) -> str:
    """``url/rel`` with one slash between them."""
    return f"{url.rstrip('/')}/{rel.lstrip('/')}"


def remote_parent(url: str) -> str:
    """The URL of the folder holding ``url``."""
    return posixpath.dirname(url.rstrip("/"))


def redact_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with the values of secret-looking keys (key, secret, token, ...) replaced by ``***``."""
    return {k: "***" if any(w in k.lower() for w in _SECRET_WORDS)
            else redact_options(v) if isinstance(v, Mapping) else v for k, v in options.items()}


def filesystem(url: str, options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path inside it (no trailing slash).

    Raises
    ------
    ConfigError
        No filesystem for the protocol (e.g. s3fs not installed) or bad storage options.
    """
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url, **dict(options or {}))
    except ImportError as exc:
        raise ConfigError(f"{url}: {exc} (for s3:// install the 's3' extra: pip install 'nclsm-scale[s3]')") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{url}: cannot open this URL with archive.storage_options "
                          f"{redact_options(options or {})}: {exc}") from None
    return fs, path.rstrip("/")


def remote_identity(url: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What identifies a remote object's content without downloading it: name, size and ETag or mtime.

    Raises
    ------
    SlideReadError
        The object cannot be listed.
    """
    fs, path = filesystem(url, options)
    try:
        info = fs.info(path)
    except Exception as exc:  # botocore and friends raise their own types
        raise SlideReadError(f"{url}: cannot read it: {one_line(exc)}") from None
    version = info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime")
    return {"name": path.rsplit("/", 1)[-1], "size": int(info.get("size") or 0), "version": str(version)}


def work_dir_for(url: str, work_dir: str | None) -> Path:
    """Local folder staging the run at ``url``: ``<work_dir or ~/.cache/nclsm-scale/runs>/<sha256(url)[:16]>``."""
    base = Path(work_dir).expanduser() if work_dir else Path.home() / ".cache" / "nclsm-scale" / "runs"
    return (base / hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]).resolve()


def list_files(url: str, options: Mapping[str, Any] | None = None) -> list[str]:
    """Paths (POSIX, relative to ``url``) of every object under the prefix ``url``, sorted.

    Raises
    ------
    ValidationError
        The prefix cannot be listed (no such bucket, no access, no connection).
    """
    fs, root = filesystem(url, options)
    try:
        found = fs.find(root)
    except Exception as exc:  # botocore and friends raise their own types
        raise ValidationError(f"{url}: cannot list the archive: {one_line(exc)}") from None
    return sorted(p[len(root) + 1:] for p in found if p.startswith(f"{root}/"))


def read_bytes(url: str, options: Mapping[str, Any] | None = None) -> bytes:
    """The content of the object at ``url``.

    Raises
    ------
    SlideReadError
        Missing or unreadable.
    """
    fs, path = filesystem(url, options)
    try:
        return fs.cat_file(path)
    except Exception as exc:  # botocore and friends raise their own types
        raise SlideReadError(f"{url}: cannot read: {one_line(exc)}") from None


def remove_local(path: Path) -> None:
    """Delete a file or folder if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def fetch(url: str, dest: Path, options: Mapping[str, Any] | None = None, *, missing_ok: bool = False) -> bool:
    """Download the object (or folder, e.g. an ``.ome.zarr``) at ``url`` to ``dest``, replacing it.

    The download goes to a ``.part`` name renamed at the end, so ``dest`` is never
    half written. Returns False when the object is missing and ``missing_ok``.

    Raises
    ------
    SlideReadError
        Missing (unless ``missing_ok``) or unreadable, naming the URL.
    """
    fs, path = filesystem(url, options)
    tmp = dest.with_name(f".{dest.name}.part")
    remove_local(tmp)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        if fs.isdir(path):
            fs.get(f"{path}/", str(tmp), recursive=True)
        else:
            fs.get_file(path, str(tmp))
    except FileNotFoundError:
        remove_local(tmp)
        if missing_ok:
            return False
        raise SlideReadError(f"{url}: no such object") from None
    except Exception as exc:  # botocore and friends raise their own types
        remove_local(tmp)
        raise SlideReadError(f"{url}: cannot download to {dest}: {one_line(exc)}") from None
    remove_local(dest)
    tmp.rename(dest)
    logger.info("downloaded %s to %s", url, dest)
    return True


def _synced(rel: str) -> bool:
    return rel.split("/", 1)[0] not in LOCAL_ONLY and not rel.endswith(_TRANSIENT)


class RunSync:
    """A local run directory mirrored at a remote URL: :meth:`pull` it once, :meth:`push` what changed.

    A file is uploaded when its remote copy is missing or differs in size, or when
    the local file changed (size or mtime) since it was last pushed or pulled here
    (recorded in ``.nclsm-sync/pushed.json``). SQLite files (``*.sqlite``) go up as
    consistent snapshots on every push, after the other files, so a remote state
    store never claims outputs that are not there yet. Remote files are never
    deleted; ``run.lock`` and ``inputs/`` stay local. Pushes are serialised (threads
    may share one instance).
    """

    def __init__(self, url: str, local: str | Path, options: Mapping[str, Any] | None = None) -> None:
        self.url = url.rstrip("/")
        self.local = Path(local)
        self.fs, self.root = filesystem(self.url, options)
        self._lock = threading.Lock()
        self._record_path = self.local / ".nclsm-sync" / "pushed.json"
        self._pushed: dict[str, list[int]] = (
            json.loads(self._record_path.read_text()) if self._record_path.is_file() else {})

    def exists(self, rel: str) -> bool:
        """True when the remote run holds ``rel``."""
        try:
            return bool(self.fs.exists(f"{self.root}/{rel}"))
        except Exception as exc:  # botocore and friends raise their own types
            raise SlideReadError(f"{join_url(self.url, rel)}: cannot check it: {one_line(exc)}") from None

    def _remote_sizes(self, scopes: Iterable[str] | None) -> dict[str, int]:
        out: dict[str, int] = {}
        for scope in [None] if scopes is None else scopes:
            base = self.root if scope is None else f"{self.root}/{scope}"
            for name, info in self.fs.find(base, detail=True).items():
                rel = name[len(self.root) + 1:]
                if name.startswith(f"{self.root}/") and (scope is None or rel == scope or rel.startswith(f"{scope}/")):
                    out[rel] = int(info["size"])
        return out

    def _local_files(self, scopes: Iterable[str] | None) -> dict[str, tuple[int, int]]:
        tops = [self.local] if scopes is None else [self.local / s for s in scopes]
        paths: list[Path] = []
        for top in tops:
            if top.is_file():
                paths.append(top)
            elif top.is_dir():
                paths += [Path(d) / f for d, _, files in os.walk(top) for f in files]
        out = {}
        for p in paths:
            rel = p.relative_to(self.local).as_posix()
            if _synced(rel):
                try:
                    st = p.stat()
                except FileNotFoundError:  # a temporary file renamed meanwhile
                    continue
                out[rel] = (st.st_size, st.st_mtime_ns)
        return out

    def _snapshot(self, rel: str) -> Path:
        """A consistent copy of the SQLite database ``rel`` (its WAL folded in)."""
        dest = self.local / ".nclsm-sync" / "snapshots" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.unlink(missing_ok=True)
        src, dst = sqlite3.connect(self.local / rel), sqlite3.connect(dest)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            src.close()
            dst.close()
        return dest

    def _save(self) -> None:
        self._record_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._record_path.with_name("pushed.json.tmp")
        tmp.write_text(json.dumps(self._pushed, sort_keys=True))
        tmp.replace(self._record_path)

    def push(self, scopes: Iterable[str] | None = None) -> list[str]:
        """Upload what changed under ``scopes`` (paths relative to the run; None: everything); return them.

        Raises
        ------
        SlideWriteError
            A listing or upload failed, naming the remote run.
        """
        scopes = None if scopes is None else list(scopes)
        with self._lock:
            local = self._local_files(scopes)
            files = sorted(r for r in local if not r.endswith(".sqlite"))
            databases = sorted(r for r in local if r.endswith(".sqlite"))
            try:
                remote = self._remote_sizes(scopes)
                todo = [r for r in files if remote.get(r) != local[r][0] or self._pushed.get(r) != list(local[r])]
                if todo:
                    self.fs.put([str(self.local / r) for r in todo], [f"{self.root}/{r}" for r in todo])
                for r in databases:
                    self.fs.put_file(str(self._snapshot(r)), f"{self.root}/{r}")
            except Exception as exc:  # botocore and friends raise their own types
                raise SlideWriteError(f"cannot upload the run {self.local} to {self.url}: {one_line(exc)}") from None
            self._pushed.update({r: list(local[r]) for r in todo})
            self._save()
        if todo:
            logger.info("pushed %d file(s) to %s", len(todo) + len(databases), self.url)
        return todo + databases

    def pull(self) -> list[str]:
        """Download the whole remote run into the local folder (SQLite files last); return what came.

        Raises
        ------
        SlideReadError
            A listing or download failed, naming the remote run.
        """
        with self._lock:
            try:
                rels = sorted((r for r in self._remote_sizes(None) if _synced(r)),
                              key=lambda r: (r.endswith(".sqlite"), r))
                for r in rels:
                    (self.local / r).parent.mkdir(parents=True, exist_ok=True)
                if rels:
                    self.fs.get([f"{self.root}/{r}" for r in rels], [str(self.local / r) for r in rels])
            except Exception as exc:  # botocore and friends raise their own types
                raise SlideReadError(f"cannot download the run {self.url} into {self.local}: "
                                     f"{one_line(exc)}") from None
            for r in rels:
                if not r.endswith(".sqlite"):
                    st = (self.local / r).stat()
                    self._pushed[r] = [st.st_size, st.st_mtime_ns]
            self._save()
        logger.info("pulled %d file(s) of %s into %s", len(rels), self.url, self.local)
        return rels
