"""``run``: a whole archive through every stage, resumable and fault-isolated.

Per slide, in order, the stages of :data:`STAGES` (convert -> segment -> measure
-> curate; slides run concurrently, ``archive.max_concurrent_slides`` threads
submitting to one shared client); then aggregate + report for the archive. This
module and the command line are the only places that know the order of stages.
Each stage's status lives in ``RUN/state.sqlite``
(:class:`~nclsm_scale.state.StateStore`) and is marked done only after the stage
function returned, i.e. its output is complete. A rerun skips stages recorded done
with the same configuration fingerprint whose outputs
(:meth:`~nclsm_scale.layout.RunLayout.stage_outputs`) still exist, and redoes the
rest (the stage functions also skip finished work themselves). A slide that fails
is recorded with a one-line reason (traceback in ``RUN/logs/run.log``) and the
others go on; a write that cannot succeed (read-only, no permission, disk full)
fails its slide without retries, naming the path. Slides that fail curate's slide
quality control are listed in the summary (``RunResult.flagged``). ``RUN/run.json`` holds the resolved
config, package versions, the model's sha256, per-slide normalisation constants
and start/end times. ``RUN/run.lock`` keeps a second run out while one is active. The
lock and the archive are checked before the Dask cluster starts when
:func:`run_archive` is given a function that opens the client.

The archive and the run directory may be fsspec URLs (``s3://bucket/prefix``,
see :mod:`nclsm_scale.storage`). A remote slide is downloaded to ``inputs/`` for
its convert stage and removed after it. A remote run directory is staged in a
local work directory (``archive.work_dir``): pulled from the remote run when the
work directory has no state store yet, then pushed after every stage marked
done, after the report and at the end (a failed push fails that stage). The
run lock stays in the work directory, i.e. it guards one machine or volume.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nclsm_scale.aggregate import aggregate_run
from nclsm_scale.archive import ArchiveSlide, discover, manifest_frame
from nclsm_scale.config import RunConfig
from nclsm_scale.convert import convert_slide
from nclsm_scale.curate import curate_slide
from nclsm_scale.errors import WRITE_ERRNOS, NclsmError, StageError, one_line, write_error
from nclsm_scale.layout import RunLayout, read_table_meta
from nclsm_scale.measure.driver import measure_slide
from nclsm_scale.metrics import register_metrics, report_slide
from nclsm_scale.model.card import weights_record
from nclsm_scale.normalise import slide_norm
from nclsm_scale.progress import RunProgress
from nclsm_scale.progress import current as progress_var
from nclsm_scale.report import build_report
from nclsm_scale.segment import segment_slide
from nclsm_scale.slide import open_slide
from nclsm_scale.state import RunLock, StateStore
from nclsm_scale.storage import (
    RunSync,
    fetch,
    is_remote,
    join_url,
    local_path,
    redact_options,
    remove_local,
    work_dir_for,
)
from nclsm_scale.versions import package_versions

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "ARCHIVE_KEY", "STAGES", "RunResult", "SlideJob", "SlideOutcome", "Stage", "config_fingerprint", "run_archive",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlideJob:
    """One slide of a run: its name, its source file (a local path) and the run directory."""

    name: str
    source: Path
    layout: RunLayout

    @property
    def store(self) -> Path:
        """The slide's converted store in the run."""
        return self.layout.slide(self.name)


#: A per-slide stage: does its work for one slide; returns the fibres it found (``segment``) or None.
Stage = Callable[[SlideJob, RunConfig, "Client"], "int | None"]


def _convert(job: SlideJob, cfg: RunConfig, client: Client) -> int | None:
    res = convert_slide(job.source, job.layout.slides, cfg.convert, client)
    if res.status == "failed":
        raise NclsmError(res.message)
    return None


def _segment(job: SlideJob, cfg: RunConfig, client: Client) -> int | None:
    return segment_slide(job.store, cfg, client).n_fibres


def _measure(job: SlideJob, cfg: RunConfig, client: Client) -> int | None:
    measure_slide(job.store, cfg, client, out_dir=job.layout.measure_tables)
    return None


def _curate(job: SlideJob, cfg: RunConfig, client: Client) -> int | None:
    curate_slide(job.store, cfg, client, layout=job.layout)
    return None


#: The per-slide stages, in order: the one place their order is written.
STAGES: dict[str, Stage] = {"convert": _convert, "segment": _segment, "measure": _measure, "curate": _curate}
#: State-store slide key of the archive-level stages (aggregate + report).
ARCHIVE_KEY = "*archive*"


@dataclass
class SlideOutcome:
    """What the run did to one slide: ``status`` done or failed; ``ran`` lists the stages computed now."""

    name: str
    source: str
    status: str
    stage: str = ""
    error: str = ""
    ran: list[str] = field(default_factory=list)
    fibres: int = 0


@dataclass
class RunResult:
    """The run: one outcome per slide, the report (None if not made) and its error, if any.

    For a remote run, ``remote`` is its URL, ``run_dir`` the local work directory
    staging it and ``sync_error`` what went wrong with the final upload, if anything.
    ``flagged`` maps the slides that failed slide QC to its flag (their fibres are class QC).
    """

    run_dir: Path
    slides: list[SlideOutcome]
    report: Path | None
    report_error: str = ""
    seconds: float = 0.0
    remote: str = ""
    sync_error: str = ""
    flagged: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> list[SlideOutcome]:
        """Slides that failed."""
        return [s for s in self.slides if s.status == "failed"]

    @property
    def ok(self) -> bool:
        """True when every slide, the report and the upload succeeded."""
        return not self.failed and not self.report_error and not self.sync_error

    def _where(self, rel: str) -> str:
        return join_url(self.remote, rel) if self.remote else str(self.run_dir / rel)

    def summary(self) -> str:
        """Counts, then one line per failed slide (name, source, stage, cause) and per slide flagged by QC."""
        where = f"{self.remote} (staged in {self.run_dir})" if self.remote else str(self.run_dir)
        lines = [f"{len(self.slides) - len(self.failed)} of {len(self.slides)} slide(s) done, "
                 f"{len(self.failed)} failed, {len(self.flagged)} flagged by slide QC ({self.seconds:.0f} s); "
                 f"run directory {where}"]
        lines += [f"FAILED {s.name}{'' if s.source in s.error else f' ({s.source})'} at {s.stage}: {s.error}"
                  for s in self.failed]
        lines += [f"FLAGGED {name}: slide QC failed ({flag}); none of its fibres is analysable"
                  for name, flag in self.flagged.items()]
        if self.report_error:
            lines.append(f"FAILED report: {self.report_error}")
        elif self.report is not None:
            lines.append(f"report: {self._where('report/index.html') if self.remote else self.report}")
        if self.sync_error:
            lines.append(f"FAILED upload: {self.sync_error}")
        lines.append(f"state: {self._where('state.sqlite')}; tracebacks: {self._where('logs/run.log')}")
        return "\n".join(lines)


def config_fingerprint(cfg: RunConfig) -> str:
    """sha256 of the configuration that shapes results (cluster, synth, train, scheduling, storage left out)."""
    data = cfg.model_dump(mode="json", exclude={"cluster": True, "synth": True, "train": True,
                                                "archive": {"max_concurrent_slides", "retries", "storage_options",
                                                            "work_dir", "keep_inputs"}})
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _model_record(cfg: RunConfig) -> dict[str, Any]:
    return {**weights_record(cfg.model), "used": cfg.segment.maps is None}


class _Run:
    """One run's shared state: layout, config, state store, run.json, progress and the remote mirror, if any."""

    def __init__(
        self, run_dir: Path, cfg: RunConfig, client: Client, slides: list[ArchiveSlide], progress: RunProgress,
        sync: RunSync | None = None,
    ) -> None:
        self.layout = RunLayout(run_dir)
        self.cfg, self.client, self.slides, self.sync = cfg, client, slides, sync
        self.state = StateStore(run_dir / "state.sqlite")
        self.fingerprint = config_fingerprint(cfg)
        self.lock = threading.Lock()
        self.norm: dict[str, Any] = {}
        self.progress = progress
        self.stop = threading.Event()  # set when the run is interrupted

    def is_done(self, name: str, stage: str) -> bool:
        rec = self.state.get(name, stage)
        return (rec is not None and rec.status == "done" and rec.fingerprint == self.fingerprint
                and (name == ARCHIVE_KEY or all(p.exists() for p in self.layout.stage_outputs(name, stage))))

    @contextlib.contextmanager
    def _staged(self, path: Path, url: str | None, *, missing_ok: bool = False) -> Iterator[None]:
        """Download ``url`` (if any) to ``path`` for the block; remove it after unless ``archive.keep_inputs``.

        Errors raised in the block name the URL instead of the local copy.
        """
        if url is None:
            yield
            return
        fetch(url, path, self.cfg.archive.storage_options, missing_ok=missing_ok)
        try:
            yield
        except NclsmError as exc:
            raise type(exc)(str(exc).replace(str(path), url)) from exc
        finally:
            if not self.cfg.archive.keep_inputs:
                remove_local(path)

    def _stage(self, slide: ArchiveSlide, stage: str) -> int | None:
        """Run one stage of one slide; the segment stage returns its fibre count.

        A write that cannot succeed (read-only, no permission, disk full) becomes a
        :class:`~nclsm_scale.errors.SlideWriteError` naming the file, or the run directory when the error names none.
        """
        job = SlideJob(slide.name, slide.path, self.layout)
        try:
            if stage != "convert":
                return STAGES[stage](job, self.cfg, self.client)
            with self._staged(slide.path, slide.url):
                STAGES[stage](job, self.cfg, self.client)
            self._record_norm(slide.name, job.store)
        except OSError as exc:
            if isinstance(exc, NclsmError) or exc.errno not in WRITE_ERRNOS:
                raise
            raise write_error(exc, self.layout.root) from exc
        return None

    def _record_norm(self, name: str, store: Path) -> None:
        stats = slide_norm(open_slide(store)).model_dump(mode="json")
        with self.lock:
            self.norm[name] = stats

    def process(self, slide: ArchiveSlide) -> SlideOutcome:
        """Every stage of one slide not yet done; a failure stops this slide only."""
        progress_token = progress_var.set((self.progress, slide.name))  # for fan_out()
        out = SlideOutcome(slide.name, slide.source, "done")
        try:
            for i, stage in enumerate(STAGES):
                if self.stop.is_set():
                    raise StageError("the run was interrupted")
                if not self.is_done(slide.name, stage):
                    self._attempt(slide, stage, out)
                if out.status == "failed":
                    self.progress.stage_finished(slide.name, len(STAGES) - i)
                    break
                self.progress.stage_finished(slide.name)
        finally:
            progress_var.reset(progress_token)
        table = self.layout.measure_table(slide.name)
        if out.status == "done" and "segment" not in out.ran and table.is_file():
            import pyarrow.parquet as pq

            out.fibres = pq.read_metadata(table).num_rows  # segmented by an earlier run
            self.progress.fibres_found(out.fibres)
        self.progress.slide_finished(out.status == "failed")
        report_slide(self.client, out, self.state)  # metrics never raise
        return out

    def _attempt(self, slide: ArchiveSlide, stage: str, out: SlideOutcome) -> None:
        """Run ``stage`` with up to ``archive.retries`` retries of unexpected errors; record it in ``out``."""
        for attempt in range(self.cfg.archive.retries + 1):
            self.state.start(slide.name, stage, self.fingerprint)
            t0 = time.perf_counter()
            try:
                fibres = self._stage(slide, stage)
                self.state.finish(slide.name, stage, time.perf_counter() - t0)
                self.push(self._slide_outputs(slide.name))  # a failed upload fails the stage
            except Exception as exc:  # any failure of one slide must leave the others running
                if self.stop.is_set():  # the client is going away: the stage stays 'running' for the rerun
                    raise
                seconds = time.perf_counter() - t0
                logger.error("%s: %s failed (attempt %d): %s", slide.name, stage, attempt + 1, one_line(exc),
                             exc_info=True)  # the traceback goes to run.log only (the CLI's console drops it)
                self.state.fail(slide.name, stage, seconds, one_line(exc))
                if isinstance(exc, NclsmError) or attempt == self.cfg.archive.retries:
                    out.status, out.stage, out.error = "failed", stage, one_line(exc)
                    return
            else:
                out.ran.append(stage)
                if fibres is not None:
                    out.fibres = fibres
                    self.progress.fibres_found(fibres)
                logger.info("%s: %s done in %.1f s", slide.name, stage, time.perf_counter() - t0)
                return

    def _slide_outputs(self, name: str) -> list[str]:
        """What a slide's stages write, relative to the run directory, plus the run's own records."""
        paths = [p for stage in STAGES for p in self.layout.stage_outputs(name, stage)]
        paths.append(self.layout.overrides(name))
        return [p.relative_to(self.layout.root).as_posix() for p in paths] + ["run.json", "logs", "state.sqlite"]

    def push(self, paths: Iterable[str] | None) -> None:
        """Upload what changed under ``paths`` (None: everything) to the remote run, if there is one."""
        if self.sync is not None:
            self.sync.push(paths)

    def finish_archive(self, outcomes: list[SlideOutcome]) -> tuple[Path | None, str]:
        """Aggregate + report over the slides done (skipped when nothing changed since the last report)."""
        index = self.layout.report / "index.html"
        done = [s for s, o in zip(self.slides, outcomes, strict=True) if o.status == "done"]
        if not done:
            return None, ""
        if not any(o.ran for o in outcomes) and self.is_done(ARCHIVE_KEY, "report") and index.is_file():
            return index, ""
        self.state.register(ARCHIVE_KEY, "", ("report",))
        self.state.start(ARCHIVE_KEY, "report", self.fingerprint)
        t0 = time.perf_counter()
        try:
            aggregate_run(self.layout.root, self.cfg.aggregate, manifest_frame(done), slides=[s.name for s in done])
            path = Path(build_report(self.layout.root, self.cfg, self.client))
            self.state.finish(ARCHIVE_KEY, "report", time.perf_counter() - t0)
            self.push(["report", "tables", "run.json", "logs", "state.sqlite"])
        except Exception as exc:  # the slides' results stay valid; say what went wrong
            logger.error("aggregate/report failed: %s", one_line(exc), exc_info=True)
            self.state.fail(ARCHIVE_KEY, "report", time.perf_counter() - t0, one_line(exc))
            return None, one_line(exc)
        return path, ""


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat(timespec="seconds")


def _recorded_config(cfg: RunConfig) -> dict[str, Any]:
    """The config as run.json records it: secret-looking storage options redacted."""
    data = cfg.model_dump(mode="json")
    data["archive"]["storage_options"] = redact_options(data["archive"]["storage_options"])
    return data


def _write_run_json(run: _Run, started: float, ended: float | None) -> None:
    path = run.layout.run_json
    old = json.loads(path.read_text()) if path.is_file() else {}
    norm = {**old.get("normalisation", {}), **run.norm}
    record = {
        "started": _iso(started),
        "ended": _iso(ended) if ended is not None else None,
        "config": _recorded_config(run.cfg),
        "config_fingerprint": run.fingerprint,
        "versions": package_versions(),
        "model": _model_record(run.cfg),
        "slides": {s.name: {"source": s.source, **s.meta} for s in run.slides},
        "normalisation": norm,
    }
    tmp = path.with_name(".run.json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    tmp.replace(path)


class _RunLog(logging.FileHandler):
    """``RUN/logs/run.log``. A record it cannot write (disk full) is dropped: the console has its own line of it."""

    def handleError(self, record: logging.LogRecord) -> None:
        """Drop the record instead of printing the write error's traceback."""


#: sqlite result codes of a state store that cannot be written (disk full, read-only).
_SQLITE_WRITE_ERRORS = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY})


@contextlib.contextmanager
def _naming_write_errors(root: Path) -> Iterator[None]:
    """Turn a write that cannot succeed (read-only, no permission, disk full) into one line naming its path."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, NclsmError) or exc.errno not in WRITE_ERRNOS:
            raise
        raise write_error(exc, root) from exc
    except sqlite3.OperationalError as exc:
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF not in _SQLITE_WRITE_ERRORS:  # primary of extended codes
            raise
        raise write_error(OSError(None, str(exc)), root / "state.sqlite") from exc


def _flagged(layout: RunLayout, outcomes: list[SlideOutcome]) -> dict[str, str]:
    """The slides done whose curate table records a failed slide QC, with its flag."""
    flags = {}
    for o in outcomes:
        table = layout.curate_table(o.name)
        if o.status == "done" and table.is_file():
            flag = read_table_meta(table).get("qc", {}).get("qc_flag", "")
            if flag:
                flags[o.name] = str(flag)
    return flags


def run_archive(
    archive: str | Path, run_dir: str | Path, cfg: RunConfig,
    client: Client | Callable[[], AbstractContextManager[Client]], *, progress: bool | None = None,
) -> RunResult:
    """Take every slide of ``archive`` through convert, segment, measure and curate; then aggregate and report.

    Parameters
    ----------
    archive : a folder of slides, or a manifest (CSV / Parquet with a ``path`` column); a path or a URL.
    run_dir : the run directory, a path or a URL; everything is written inside it (for a URL, staged in
        ``archive.work_dir`` and uploaded as stages finish).
    cfg : RunConfig
        Every stage's section, and ``cfg.archive`` (discovery, manifest, retries, concurrency).
    client : distributed.Client, or a function returning a context manager that yields one
        The one client every stage submits to. A function (such as ``lambda: open_client(cfg.cluster)``)
        is called only once the run directory is locked and the archive's slides are found, so a
        refused run never starts a cluster; its client is closed before the lock is released.
    progress : bool, optional
        Show the run's progress bar (slides, block tasks, fibres, ETA); ``None`` only on a terminal.

    Raises
    ------
    ValidationError
        The archive or manifest is unusable (nothing has run).
    StageError
        Another run holds the (local or work) run directory.
    SlideWriteError
        The run directory cannot be created or written (read-only, no permission, disk full).
    SlideReadError, ConfigError
        A remote run cannot be pulled, or its URL cannot be opened (nothing has run).
    """
    t0 = time.perf_counter()
    remote = str(run_dir).rstrip("/") if is_remote(run_dir) else ""
    root = work_dir_for(remote, cfg.archive.work_dir) if remote else local_path(run_dir).resolve()
    sync = RunSync(remote, root, cfg.archive.storage_options) if remote else None
    pkg_logger = logging.getLogger("nclsm_scale")
    with contextlib.ExitStack() as stack:  # the lock, then the client (closed first)
        stack.enter_context(_naming_write_errors(root))
        root.mkdir(parents=True, exist_ok=True)
        stack.enter_context(RunLock(root / "run.lock"))
        if sync is not None and not (root / "state.sqlite").exists() and sync.exists("state.sqlite"):
            sync.pull()  # an empty work directory (a new pod) resumes the remote run
        (root / "logs").mkdir(exist_ok=True)
        handler = _RunLog(root / "logs" / "run.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        pkg_logger.addHandler(handler)
        try:
            slides = discover(archive, cfg.archive, inputs_dir=root / "inputs")
            if callable(client):
                client = stack.enter_context(client())
            bar = RunProgress(len(slides), len(STAGES), disable=None if progress is None else not progress)
            try:
                run = _Run(root, cfg, client, slides, bar, sync)
                register_metrics(client)  # idempotent; never raises
                if n := run.state.reset_running():
                    logger.warning("%d stage(s) were interrupted by an earlier run; redoing them", n)
                for s in slides:
                    run.state.register(s.name, s.source, tuple(STAGES), s.meta)
                started = time.time()
                _write_run_json(run, started, None)
                pool = ThreadPoolExecutor(cfg.archive.max_concurrent_slides, thread_name_prefix="slide")
                try:
                    outcomes = list(pool.map(run.process, slides))
                except BaseException:  # Ctrl-C / SIGTERM: start no new stage, leave the rest to the rerun
                    run.stop.set()
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
                pool.shutdown()
            finally:
                bar.close()
            report, report_error = run.finish_archive(outcomes)
            _write_run_json(run, started, time.time())
            result = RunResult(root, outcomes, report, report_error, time.perf_counter() - t0, remote,
                               flagged=_flagged(run.layout, outcomes))
            summary = logger.makeRecord(logger.name, logging.INFO, __file__, 0, "%s", (result.summary(),), None)
            handler.handle(summary)  # into run.log only: the caller prints the summary
            if sync is not None:
                try:
                    sync.push(None)  # everything else: failed slides' partial work, the final run.json and log
                except NclsmError as exc:
                    result.sync_error = str(exc)
                    logger.error("%s", exc)
            return result
        finally:
            pkg_logger.removeHandler(handler)
            handler.close()
