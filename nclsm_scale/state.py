"""Run state: each slide's stage status in SQLite, and the lock that keeps a run directory to one run.

:class:`StateStore` keeps one row per (slide, stage) in ``RUN/state.sqlite`` with
its status (``pending``, ``running``, ``done``, ``failed``), start and end time,
seconds, attempts, the stage's fingerprint (settings and inputs it ran with) and a
one-line error, and for a stage done the manifest of what it wrote
(:mod:`nclsm_scale.manifest`), stored with its ``done`` status in one transaction.
Every call opens its own connection, so threads may share a store.

:class:`RunLock` is ``RUN/run.lock`` holding the PID and host of the active run;
it is created atomically. A lock left by a dead process on this host is taken
over with a warning; a live one (or one from another host) refuses the run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nclsm_scale.errors import StageError

__all__ = ["STATUSES", "RunLock", "StageRecord", "StateStore"]

logger = logging.getLogger(__name__)

#: Allowed stage statuses.
STATUSES = ("pending", "running", "done", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS stages (
    slide TEXT NOT NULL,
    stage TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    started REAL,
    finished REAL,
    seconds REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    fingerprint TEXT,
    error TEXT,
    PRIMARY KEY (slide, stage)
);
CREATE TABLE IF NOT EXISTS manifests (
    slide TEXT NOT NULL,
    stage TEXT NOT NULL,
    manifest TEXT NOT NULL,
    PRIMARY KEY (slide, stage)
);
CREATE TABLE IF NOT EXISTS slides (
    slide TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}'
);
"""


@dataclass(frozen=True)
class StageRecord:
    """One row of the state table."""

    slide: str
    stage: str
    status: str
    started: float | None
    finished: float | None
    seconds: float | None
    attempts: int
    fingerprint: str | None
    error: str | None


class StateStore:
    """Stage status of every slide of a run, in SQLite (``path`` is created on first use)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            # the rollback journal, not WAL: run directories may sit on network file systems
            # (shared volumes of a cluster), where SQLite documents WAL as unsafe
            db.execute("PRAGMA journal_mode=DELETE")
            db.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30.0)
        try:
            with db:  # commit on success, roll back on error
                yield db
        finally:
            db.close()

    def register(self, slide: str, source: str, stages: tuple[str, ...], meta: dict | None = None) -> None:
        """Record a slide and a ``pending`` row for each of its stages not yet recorded."""
        with self._db() as db:
            db.execute(
                "INSERT INTO slides (slide, source, meta) VALUES (?, ?, ?) "
                "ON CONFLICT(slide) DO UPDATE SET source = excluded.source, meta = excluded.meta",
                (slide, source, json.dumps(meta or {}, default=str)),
            )
            db.executemany(
                "INSERT OR IGNORE INTO stages (slide, stage, status) VALUES (?, ?, 'pending')",
                [(slide, s) for s in stages],
            )

    def get(self, slide: str, stage: str) -> StageRecord | None:
        """The record of one stage, or None."""
        with self._db() as db:
            row = db.execute(
                "SELECT slide, stage, status, started, finished, seconds, attempts, fingerprint, error "
                "FROM stages WHERE slide = ? AND stage = ?", (slide, stage)).fetchone()
        return StageRecord(*row) if row else None

    def records(self) -> list[StageRecord]:
        """Every record, by slide then insertion order of stages."""
        with self._db() as db:
            rows = db.execute(
                "SELECT slide, stage, status, started, finished, seconds, attempts, fingerprint, error "
                "FROM stages ORDER BY slide, rowid").fetchall()
        return [StageRecord(*r) for r in rows]

    def start(self, slide: str, stage: str, fingerprint: str) -> None:
        """Mark a stage ``running`` (one more attempt)."""
        with self._db() as db:
            db.execute(
                "INSERT INTO stages (slide, stage, status, started, attempts, fingerprint) "
                "VALUES (?, ?, 'running', ?, 1, ?) ON CONFLICT(slide, stage) DO UPDATE SET status = 'running', "
                "started = excluded.started, finished = NULL, seconds = NULL, attempts = attempts + 1, "
                "fingerprint = excluded.fingerprint, error = NULL",
                (slide, stage, time.time(), fingerprint),
            )

    def finish(self, slide: str, stage: str, seconds: float, manifest: dict[str, Any] | None = None) -> None:
        """Mark a stage ``done`` (call only once its output is complete), with the manifest of its outputs."""
        with self._db() as db:
            self._end(db, slide, stage, "done", seconds, None)
            db.execute("DELETE FROM manifests WHERE slide = ? AND stage = ?", (slide, stage))
            if manifest is not None:
                db.execute("INSERT INTO manifests (slide, stage, manifest) VALUES (?, ?, ?)",
                           (slide, stage, json.dumps(manifest, separators=(",", ":"))))

    def manifest(self, slide: str, stage: str) -> dict[str, Any] | None:
        """The manifest recorded when the stage was last done, or None."""
        with self._db() as db:
            row = db.execute("SELECT manifest FROM manifests WHERE slide = ? AND stage = ?", (slide, stage)).fetchone()
        return json.loads(row[0]) if row else None

    def manifests(self, slide: str) -> dict[str, dict[str, Any]]:
        """Every manifest recorded for ``slide``, by stage."""
        with self._db() as db:
            rows = db.execute("SELECT stage, manifest FROM manifests WHERE slide = ?", (slide,)).fetchall()
        return {stage: json.loads(m) for stage, m in rows}

    def fail(self, slide: str, stage: str, seconds: float, error: str) -> None:
        """Mark a stage ``failed`` with a one-line ``error``."""
        with self._db() as db:
            self._end(db, slide, stage, "failed", seconds, " ".join(error.split()))

    @staticmethod
    def _end(db: sqlite3.Connection, slide: str, stage: str, status: str, seconds: float, error: str | None) -> None:
        db.execute(
            "UPDATE stages SET status = ?, finished = ?, seconds = ?, error = ? WHERE slide = ? AND stage = ?",
            (status, time.time(), round(seconds, 3), error, slide, stage),
        )

    def reset_running(self) -> int:
        """Turn ``running`` rows left by an interrupted run back into ``pending``; return how many."""
        with self._db() as db:
            return db.execute("UPDATE stages SET status = 'pending' WHERE status = 'running'").rowcount


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """``RUN/run.lock``: at most one active run per run directory (a context manager)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.owner = {"pid": os.getpid(), "host": socket.gethostname()}

    def acquire(self) -> None:
        """Create the lock, or take over a stale one; raise :class:`StageError` when a run holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._check_stale()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({**self.owner, "started": time.time()}, f)
            return
        raise StageError(f"{self.path}: could not take the run lock (another run raced for it).")

    def _check_stale(self) -> None:
        try:
            held = json.loads(self.path.read_text())
            pid, host = int(held["pid"]), str(held["host"])
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError):
            raise StageError(f"{self.path}: unreadable run lock; if no run is active, delete it.") from None
        if host != self.owner["host"]:
            raise StageError(
                f"{self.path}: a run on host {host} (pid {pid}) holds this directory; if it is dead, delete the lock."
            )
        if _pid_alive(pid) and pid != self.owner["pid"]:
            raise StageError(f"{self.path.parent}: another run is active (pid {pid} on {host}); wait for it to end.")
        logger.warning("%s: taking over a stale lock of pid %d on %s (no longer running)", self.path, pid, host)
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock if this process holds it."""
        try:
            held = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        if held.get("pid") == self.owner["pid"] and held.get("host") == self.owner["host"]:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
