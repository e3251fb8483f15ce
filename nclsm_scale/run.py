"""``run``: a whole archive through every stage, resumable and fault-isolated.

Per slide, in order, the stages of :data:`STAGES` (convert -> segment -> measure
-> curate; slides run concurrently, ``archive.max_concurrent_slides`` threads
submitting to one shared client); then aggregate + report for the archive. This
module and the command line are the only places that know the order of stages.
Each stage's status lives in ``RUN/state.sqlite``
(:class:`~nclsm_scale.state.StateStore`) and is marked done only after the stage
function returned, i.e. its output is complete, together with the manifest of
what it wrote (:mod:`nclsm_scale.manifest`: every file's size and sha256). A
rerun skips a stage only when it is recorded done with the same fingerprint
(:func:`stage_fingerprints`: the settings and inputs that shape its outputs, and
its upstream stage's fingerprint) and its outputs match the manifest (sizes; with
``verify``, checksums). Otherwise the stage's outputs are removed and it runs
again, and so does every later stage of the slide; a damaged output is named in
the log and the summary. A stage interrupted or failed under the same
fingerprint resumes from what it left (the stage functions skip finished work).
A slide that fails is recorded with a one-line reason (traceback in
``RUN/logs/run.log``) and the others go on; a write that cannot succeed (read-only,
no permission, disk full) fails its slide without retries, naming the path. Slides
that fail curate's slide quality control are listed in the summary
(``RunResult.flagged``). ``RUN/run.json`` holds the resolved
config, package versions, the model's sha256, per-slide normalisation constants,
start/end times and the scheduler's dashboard and Prometheus ``/metrics`` URLs
(``monitoring``). The run reports to the scheduler's metrics
(:mod:`nclsm_scale.metrics`) as slides start and end and as each stage ends or is
skipped. ``RUN/run.lock`` keeps a second run out while one is active. The
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
import shutil
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
from nclsm_scale.cluster import monitoring_urls
from nclsm_scale.config import RunConfig
from nclsm_scale.convert import convert_slide
from nclsm_scale.curate import curate_slide
from nclsm_scale.errors import NclsmError, SlideReadError, StageError, naming_write_errors, one_line, write_error
from nclsm_scale.layout import RunLayout, read_table_meta, work_dir
from nclsm_scale.manifest import Damage, build_manifest, check_manifest, file_sha256, source_identity
from nclsm_scale.measure.driver import measure_slide
from nclsm_scale.metrics import notify, register_metrics, report_slide
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
    remote_identity,
    remove_local,
    work_dir_for,
)
from nclsm_scale.tables import SCHEMA_VERSION
from nclsm_scale.versions import package_versions

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "ARCHIVE_KEY", "STAGES", "RunResult", "SlideJob", "SlideOutcome", "Stage", "run_archive", "stage_fingerprints",
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
    """What the run did to one slide: ``status`` done or failed; ``ran`` lists the stages computed now.

    ``damaged`` names the outputs of stages recorded done that did not match their
    manifest (each stage then ran again).
    """

    name: str
    source: str
    status: str
    stage: str = ""
    error: str = ""
    ran: list[str] = field(default_factory=list)
    fibres: int = 0
    damaged: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    """The run: one outcome per slide, the report (None if not made) and its error, if any.

    For a remote run, ``remote`` is its URL, ``run_dir`` the local work directory
    staging it and ``sync_error`` what went wrong with the final upload, if anything.
    ``damaged`` names archive-level outputs (tables, report) that did not match
    their manifest and were made again.
    ``flagged`` maps the slides that failed slide QC to its flag (their fibres are class QC).
    """

    run_dir: Path
    slides: list[SlideOutcome]
    report: Path | None
    report_error: str = ""
    seconds: float = 0.0
    remote: str = ""
    sync_error: str = ""
    damaged: list[str] = field(default_factory=list)
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
        lines += [f"REDONE {s.name}: {d}" for s in self.slides for d in s.damaged]
        lines += [f"REDONE archive: {d}" for d in self.damaged]
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


#: Per stage, the config sections whose settings shape its outputs, each with the keys left out.
#: ``grid`` only cuts the work into blocks (labels and tables are identical for any grid, tested bit
#: for bit); ``cluster`` and ``model.device`` say where it runs (``model.batch_size`` stays in: the
#: fused CPU paths may pick other kernels for another batch size, so the maps can differ in the last bits);
#: ``model.weights`` enters as the file's sha256, so a moved copy of the same weights is the same;
#: the plausibility gates (pixel size range, minimum extent, memory budget) refuse work, they do not shape it.
_SHAPED_BY: dict[str, dict[str, set[str]]] = {
    "convert": {"convert": {"overwrite", "task_px", "min_pixel_size_um", "max_pixel_size_um", "min_slide_um"}},
    "segment": {"segment": {"overwrite", "max_memory_gib"}, "model": {"weights", "device"}},
    "measure": {"measure": set()},
    "curate": {"curate": set()},
}


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stage_fingerprints(
    cfg: RunConfig, inputs: dict[str, Any], fixed: dict[str, str] | None = None
) -> dict[str, str]:
    """Each stage's fingerprint: its settings (:data:`_SHAPED_BY`), its ``inputs`` and its upstream's fingerprint.

    ``inputs`` per stage: ``convert`` the source's identity, ``segment`` the weights'
    sha256, ``measure`` the tables' schema version, ``curate`` the remembered
    overrides' sha256 (absent: none). A change in
    one stage's fingerprint changes every later stage's. ``fixed`` gives stages whose
    fingerprint is taken as recorded (their inputs cannot be read again).
    """
    out: dict[str, str] = {}
    upstream = ""
    for stage in STAGES:
        settings = {section: getattr(cfg, section).model_dump(mode="json", exclude=skip)
                    for section, skip in _SHAPED_BY[stage].items()}
        out[stage] = upstream = (fixed or {}).get(stage) or _digest(
            {"upstream": upstream, "settings": settings, "inputs": inputs.get(stage)})
    return out


def _model_record(cfg: RunConfig) -> dict[str, Any]:
    return {**weights_record(cfg.model), "used": cfg.segment.maps is None}


class _Run:
    """One run's shared state: layout, config, state store, run.json, progress and the remote mirror, if any."""

    def __init__(
        self, run_dir: Path, cfg: RunConfig, client: Client, slides: list[ArchiveSlide], progress: RunProgress,
        sync: RunSync | None = None, verify: bool = False,
    ) -> None:
        self.layout = RunLayout(run_dir)
        self.cfg, self.client, self.slides, self.sync, self.verify = cfg, client, slides, sync, verify
        self.state = StateStore(run_dir / "state.sqlite")
        self.weights_sha256 = _model_record(cfg)["sha256"] if cfg.segment.maps is None else None
        self.lock = threading.Lock()
        self.norm: dict[str, Any] = {}
        self.progress = progress
        self.stop = threading.Event()  # set when the run is interrupted
        self.final: dict[str, str] = {}  # each slide's last stage fingerprint, for the archive's
        self.monitoring = monitoring_urls(client)  # dashboard and /metrics URLs, for run.json
        self.damaged: list[str] = []  # damaged archive-level outputs found

    def fingerprints(self, slide: ArchiveSlide) -> dict[str, str]:
        """The fingerprint of each stage of ``slide`` under this run's settings and inputs.

        A source that can no longer be read (moved away after the run converted it)
        keeps the fingerprint convert recorded, with a warning.

        Raises
        ------
        SlideReadError
            The source cannot be read and was never converted.
        """
        fixed: dict[str, str] = {}
        try:
            source = (remote_identity(slide.url, self.cfg.archive.storage_options) if slide.url
                      else source_identity(slide.path))
        except (OSError, NclsmError) as exc:
            rec = self.state.get(slide.name, "convert")
            if rec is None or rec.status != "done" or rec.fingerprint is None:
                raise SlideReadError(f"{slide.source}: cannot read it: {one_line(exc)}") from None
            logger.warning("%s: cannot read %s (%s); keeping its converted store", slide.name, slide.source,
                           one_line(exc))
            source, fixed = None, {"convert": rec.fingerprint}
        overrides = self.layout.overrides(slide.name)
        inputs = {"convert": source, "segment": self.weights_sha256, "measure": SCHEMA_VERSION,
                  "curate": file_sha256(overrides) if overrides.is_file() else None}
        fingerprints = stage_fingerprints(self.cfg, inputs, fixed)
        with self.lock:
            self.final[slide.name] = fingerprints[list(STAGES)[-1]]
        return fingerprints

    def _outputs(self, name: str, stage: str) -> tuple[list[Path], list[Path]]:
        if name == ARCHIVE_KEY:
            return self.layout.archive_outputs(), []
        return self.layout.stage_outputs(name, stage), self.layout.stage_skip(name, stage)

    def manifest(self, name: str, stage: str) -> dict[str, Any]:
        """The manifest of what ``stage`` wrote for slide ``name`` (or the archive) as it is now."""
        outputs, skip = self._outputs(name, stage)
        return build_manifest(self.layout.root, [p for p in outputs if p.exists()], skip)

    def why_redo(self, name: str, stage: str, fingerprint: str) -> tuple[str, list[Damage]] | None:
        """Why ``stage`` must (re)run with its outputs cleared, or None when it is done or may resume.

        Returns None for a stage done under ``fingerprint`` whose outputs match its
        manifest, and for one that never finished under the same fingerprint (it
        resumes). Otherwise the reason and the damaged outputs, if that is the reason.
        """
        rec = self.state.get(name, stage)
        if rec is None or rec.fingerprint is None:
            return None
        if rec.fingerprint != fingerprint:
            return "its settings or inputs changed", []
        if rec.status != "done":
            return None
        manifest = self.state.manifest(name, stage)
        if manifest is None:
            return "no record of what it wrote", []
        damage = check_manifest(self.layout.root, manifest, deep=self.verify)
        if stage == "segment" and not self._segment_marked(name):  # its metadata is outside the manifest
            meta = self.layout.slide(name) / "labels" / "fibres" / "zarr.json"
            damage.append(Damage(meta.relative_to(self.layout.root).as_posix(), "no completion mark"))
        return ("an output is damaged", damage) if damage else None

    def _segment_marked(self, name: str) -> bool:
        """Whether ``labels/fibres`` of slide ``name`` carries segment's completion mark."""
        try:
            return bool(open_slide(self.layout.slide(name)).label_attrs("fibres").get("segment", {}).get("complete"))
        except NclsmError:
            return False

    def clear(self, name: str, stage: str) -> None:
        """Remove what ``stage`` wrote for slide ``name`` (and its intermediate state), so it starts afresh."""
        outputs, _ = self._outputs(name, stage)  # convert's store goes whole: later stages run again too
        work = [] if name == ARCHIVE_KEY else [work_dir(self.layout.slide(name), stage)]
        for p in [*outputs, *work]:
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()

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
        with naming_write_errors(self.layout.root):
            if stage != "convert":
                return STAGES[stage](job, self.cfg, self.client)
            with self._staged(slide.path, slide.url):
                STAGES[stage](job, self.cfg, self.client)
            self._record_norm(slide.name, job.store)
        return None

    def _record_norm(self, name: str, store: Path) -> None:
        stats = slide_norm(open_slide(store)).model_dump(mode="json")
        with self.lock:
            self.norm[name] = stats

    def process(self, slide: ArchiveSlide) -> SlideOutcome:
        """Every stage of one slide not yet done; a failure stops this slide only."""
        progress_token = progress_var.set((self.progress, slide.name))  # for fan_out()
        notify(self.client, "slide_started", slide=slide.name)
        out = SlideOutcome(slide.name, slide.source, "done")
        try:
            fingerprints = self.fingerprints(slide)
        except NclsmError as exc:
            out.status, out.stage, out.error = "failed", "convert", one_line(exc)
            fingerprints = {}
        try:
            for i, stage in enumerate(fingerprints):
                if self.stop.is_set():
                    raise StageError("the run was interrupted")
                self._run_stage(slide, stage, fingerprints[stage], out)
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
        report_slide(self.client, out)  # metrics never raise
        return out

    def _run_stage(self, slide: ArchiveSlide, stage: str, fingerprint: str, out: SlideOutcome) -> None:
        """Run ``stage`` unless it is done and intact, clearing its outputs first when they cannot be resumed."""
        why = ("an earlier stage ran again", []) if out.ran else self.why_redo(slide.name, stage, fingerprint)
        rec = self.state.get(slide.name, stage)
        if why is None and rec is not None and rec.status == "done":
            notify(self.client, "stage_skipped", stage=stage)
            return
        if why is not None:
            reason, damage = why
            for d in damage[:5]:
                out.damaged.append(f"{stage}: {d}")
            if damage:
                logger.warning("%s: %s: %d output(s) do not match what it wrote (%s%s); running it again",
                               slide.name, stage, len(damage), "; ".join(map(str, damage[:5])),
                               ", ..." if len(damage) > 5 else "")
            elif rec is not None and rec.status == "done":
                logger.info("%s: %s: %s; running it again", slide.name, stage, reason)
            self.clear(slide.name, stage)
        self._attempt(slide, stage, fingerprint, out)

    def _attempt(self, slide: ArchiveSlide, stage: str, fingerprint: str, out: SlideOutcome) -> None:
        """Run ``stage`` with up to ``archive.retries`` retries of unexpected errors; record it in ``out``."""
        for attempt in range(self.cfg.archive.retries + 1):
            self.state.start(slide.name, stage, fingerprint)
            t0 = time.perf_counter()
            try:
                fibres = self._stage(slide, stage)
                self.state.finish(slide.name, stage, time.perf_counter() - t0, self.manifest(slide.name, stage))
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
                seconds = time.perf_counter() - t0
                notify(self.client, "stage", stage=stage, seconds=seconds)  # observed as the stage ends
                out.ran.append(stage)
                if fibres is not None:
                    out.fibres = fibres
                    self.progress.fibres_found(fibres)
                logger.info("%s: %s done in %.1f s", slide.name, stage, seconds)
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
        fingerprint = _digest({
            "settings": {s: getattr(self.cfg, s).model_dump(mode="json") for s in ("aggregate", "report")},
            "slides": [[s.name, self.final[s.name], s.meta] for s in done],
        })
        why = self.why_redo(ARCHIVE_KEY, "report", fingerprint)
        rec = self.state.get(ARCHIVE_KEY, "report")
        if not any(o.ran for o in outcomes) and why is None and rec is not None and rec.status == "done":
            return index, ""
        if why is not None and why[1]:
            self.damaged = [f"report: {d}" for d in why[1][:5]]
            logger.warning("aggregate/report: %d output(s) do not match what it wrote (%s); running it again",
                           len(why[1]), "; ".join(self.damaged))
        self.state.register(ARCHIVE_KEY, "", ("report",))
        self.state.start(ARCHIVE_KEY, "report", fingerprint)
        t0 = time.perf_counter()
        try:
            aggregate_run(self.layout.root, self.cfg.aggregate, manifest_frame(done), slides=[s.name for s in done])
            path = Path(build_report(self.layout.root, self.cfg, self.client))
            self.state.finish(ARCHIVE_KEY, "report", time.perf_counter() - t0, self.manifest(ARCHIVE_KEY, "report"))
            self.push(["report", "tables", "run.json", "logs", "state.sqlite"])
            notify(self.client, "stage", stage="report", seconds=time.perf_counter() - t0)
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
        "fingerprints": dict(sorted(run.final.items())),
        "versions": package_versions(),
        "model": _model_record(run.cfg),
        "slides": {s.name: {"source": s.source, **s.meta} for s in run.slides},
        "normalisation": norm,
        "monitoring": run.monitoring,
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
    """Turn a write that cannot succeed (read-only, no permission, disk full; the state store's too) into one line."""
    try:
        with naming_write_errors(root):
            yield
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
    verify: bool = False,
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
    verify : bool
        Check every finished output against its manifest's checksums before trusting it
        (default: sizes only).

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
                run = _Run(root, cfg, client, slides, bar, sync, verify)
                register_metrics(client)  # idempotent; never raises
                notify(client, "run_started", slides=len(slides))
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
                               damaged=run.damaged, flagged=_flagged(run.layout, outcomes))
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
