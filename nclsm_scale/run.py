"""``run``: a whole archive through every stage, resumable and fault-isolated.

Per slide, in order: convert -> segment -> measure -> curate (slides run
concurrently, ``archive.max_concurrent_slides`` threads submitting to one shared
client); then aggregate + report for the archive. Each stage's status lives in
``RUN/state.sqlite`` (:class:`~nclsm_scale.state.StateStore`) and is marked done
only after the stage function returned, i.e. its output is complete. A rerun
skips stages recorded done with the same configuration fingerprint whose output
still exists, and redoes the rest (the stage functions also skip finished work
themselves). A slide that fails is recorded with a one-line reason (traceback in
``RUN/logs/run.log``) and the others go on. ``RUN/run.json`` holds the resolved
config, package versions, the model's sha256, per-slide normalisation constants
and start/end times. ``RUN/run.lock`` keeps a second run out while one is active.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nclsm_scale.archive import ArchiveSlide, discover, manifest_frame
from nclsm_scale.config import RunConfig
from nclsm_scale.errors import NclsmError
from nclsm_scale.layout import RunLayout
from nclsm_scale.metrics import register_metrics, report_slide
from nclsm_scale.state import RunLock, StateStore
from nclsm_scale.versions import package_versions

__all__ = ["ARCHIVE_KEY", "STAGES", "RunResult", "SlideOutcome", "config_fingerprint", "run_archive"]

logger = logging.getLogger(__name__)

#: Per-slide stages, in order.
STAGES = ("convert", "segment", "measure", "curate")
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


@dataclass
class RunResult:
    """The run: one outcome per slide, the report (None if not made) and its error, if any."""

    run_dir: Path
    slides: list[SlideOutcome]
    report: Path | None
    report_error: str = ""
    seconds: float = 0.0

    @property
    def failed(self) -> list[SlideOutcome]:
        """Slides that failed."""
        return [s for s in self.slides if s.status == "failed"]

    @property
    def ok(self) -> bool:
        """True when every slide and the report succeeded."""
        return not self.failed and not self.report_error

    def summary(self) -> str:
        """Counts, then one line per failed slide."""
        lines = [f"{len(self.slides) - len(self.failed)} of {len(self.slides)} slide(s) done, "
                 f"{len(self.failed)} failed ({self.seconds:.0f} s); run directory {self.run_dir}"]
        lines += [f"FAILED {s.name} at {s.stage}: {s.error}" for s in self.failed]
        if self.report_error:
            lines.append(f"FAILED report: {self.report_error}")
        elif self.report is not None:
            lines.append(f"report: {self.report}")
        lines.append(f"state: {self.run_dir / 'state.sqlite'}; tracebacks: {self.run_dir / 'logs' / 'run.log'}")
        return "\n".join(lines)


def config_fingerprint(cfg: RunConfig) -> str:
    """sha256 of the configuration that shapes results (cluster, synth, train and scheduling left out)."""
    data = cfg.model_dump(mode="json", exclude={"cluster": True, "synth": True, "train": True,
                                                "archive": {"max_concurrent_slides", "retries"}})
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return text if isinstance(exc, NclsmError) else f"{type(exc).__name__}: {text}"


def _model_record(cfg: RunConfig) -> dict[str, Any]:
    from nclsm_scale.model.weights import BUNDLED_WEIGHTS, read_card, sha256_of

    path = Path(cfg.model.weights) if cfg.model.weights else BUNDLED_WEIGHTS
    if not path.is_file():
        return {"weights": str(path), "sha256": None}
    sha = read_card(path).get("sha256") or sha256_of(path)
    used = not cfg.archive.maps_from_gt and cfg.segment.maps is None
    return {"weights": str(path), "sha256": sha, "used": used}


class _Run:
    """One run's shared state: layout, config, state store, run.json and progress."""

    def __init__(self, run_dir: Path, cfg: RunConfig, client: Any, slides: list[ArchiveSlide]) -> None:
        self.layout = RunLayout(run_dir)
        self.cfg, self.client, self.slides = cfg, client, slides
        self.state = StateStore(run_dir / "state.sqlite")
        self.fingerprint = config_fingerprint(cfg)
        self.lock = threading.Lock()
        self.norm: dict[str, Any] = {}
        self.current: dict[str, str] = {}
        self.bar: Any = None

    def _output_exists(self, name: str, stage: str) -> bool:
        store = self.layout.slide(name)
        if stage == "convert":
            return store.is_dir()
        if stage == "segment":
            return (store / "labels" / "fibres").is_dir()
        return self.layout.fibre_table(name).is_file()

    def is_done(self, name: str, stage: str) -> bool:
        rec = self.state.get(name, stage)
        return (rec is not None and rec.status == "done" and rec.fingerprint == self.fingerprint
                and (name == ARCHIVE_KEY or self._output_exists(name, stage)))

    def _progress(self, name: str, stage: str | None) -> None:
        with self.lock:
            if stage is None:
                self.current.pop(name, None)
                if self.bar is not None:
                    self.bar.update(1)
            else:
                self.current[name] = stage
            if self.bar is not None:
                self.bar.set_postfix_str(", ".join(f"{k}:{v}" for k, v in sorted(self.current.items())))

    def _stage(self, slide: ArchiveSlide, stage: str) -> None:
        from nclsm_scale.convert import convert_slide
        from nclsm_scale.curate.driver import curate_slide
        from nclsm_scale.measure.driver import measure_slide
        from nclsm_scale.segment import segment_slide

        store = self.layout.slide(slide.name)
        if stage == "convert":
            res = convert_slide(slide.path, self.layout.slides, self.cfg.convert, self.client)
            if res.status == "failed":
                raise NclsmError(res.message)
            self._record_norm(slide.name, store)
        elif stage == "segment":
            cfg = self.cfg
            if cfg.archive.maps_from_gt:
                maps = _maps_from_gt(slide, store, self.layout.root / "maps", cfg)
                cfg = cfg.model_copy(update={"segment": cfg.segment.model_copy(update={"maps": maps})})
            segment_slide(store, cfg, self.client)
        elif stage == "measure":
            measure_slide(store, self.cfg, self.client, out_dir=self.layout.fibres)
        else:
            curate_slide(store, self.cfg, self.client, table_path=self.layout.fibre_table(slide.name))

    def _record_norm(self, name: str, store: Path) -> None:
        from nclsm_scale.normalise import slide_norm
        from nclsm_scale.slide import open_slide

        stats = slide_norm(open_slide(store)).model_dump(mode="json")
        with self.lock:
            self.norm[name] = stats

    def process(self, slide: ArchiveSlide) -> SlideOutcome:
        """Every stage of one slide not yet done; a failure stops this slide only."""
        out = SlideOutcome(slide.name, str(slide.path), "done")
        for stage in STAGES:
            if self.is_done(slide.name, stage):
                continue
            self._progress(slide.name, stage)
            for attempt in range(self.cfg.archive.retries + 1):
                self.state.start(slide.name, stage, self.fingerprint)
                t0 = time.perf_counter()
                try:
                    self._stage(slide, stage)
                except Exception as exc:  # any failure of one slide must leave the others running
                    seconds = time.perf_counter() - t0
                    logger.error("%s: %s failed (attempt %d):\n%s", slide.name, stage, attempt + 1,
                                 traceback.format_exc())
                    self.state.fail(slide.name, stage, seconds, _one_line(exc))
                    if isinstance(exc, NclsmError) or attempt == self.cfg.archive.retries:
                        out.status, out.stage, out.error = "failed", stage, _one_line(exc)
                        break
                else:
                    self.state.finish(slide.name, stage, time.perf_counter() - t0)
                    out.ran.append(stage)
                    logger.info("%s: %s done in %.1f s", slide.name, stage, time.perf_counter() - t0)
                    break
            if out.status == "failed":
                break
        self._progress(slide.name, None)
        # metrics never raise
        report_slide(self.client, out, self.state, self.layout.fibre_table(slide.name))
        return out

    def finish_archive(self, outcomes: list[SlideOutcome]) -> tuple[Path | None, str]:
        """Aggregate + report over the slides done (skipped when nothing changed since the last report)."""
        from nclsm_scale.report import build_report

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
            path = Path(build_report(self.layout.root, self.cfg, self.client, manifest=manifest_frame(done)))
        except Exception as exc:  # the slides' results stay valid; say what went wrong
            logger.error("aggregate/report failed:\n%s", traceback.format_exc())
            self.state.fail(ARCHIVE_KEY, "report", time.perf_counter() - t0, _one_line(exc))
            return None, _one_line(exc)
        self.state.finish(ARCHIVE_KEY, "report", time.perf_counter() - t0)
        return path, ""


def _maps_from_gt(slide: ArchiveSlide, store: Path, maps_dir: Path, cfg: RunConfig) -> str:
    """Stored maps of the segmentation level made of the ground-truth mask beside the source."""
    import numpy as np
    import tifffile

    from nclsm_scale.errors import SlideReadError
    from nclsm_scale.io.pyramid import downsample_labels
    from nclsm_scale.segment import maps_from_labels, write_maps
    from nclsm_scale.slide import open_slide
    from nclsm_scale.synth.write import output_paths

    gt_path = output_paths(slide.path)["fibres"]
    if not gt_path.is_file():
        raise SlideReadError(f"{slide.path}: --maps-from-gt needs the ground-truth mask {gt_path}")
    sl = open_slide(store)
    level = cfg.segment.level if cfg.segment.level is not None else sl.level_nearest(cfg.segment.target_pixel_size_um)
    h, w = (int(v) for v in sl.levels[level].shape[1:])
    gt = tifffile.imread(gt_path)
    factor = round(gt.shape[0] / h)
    if factor > 1:
        gt = downsample_labels(gt, factor)
    padded = np.zeros((h, w), gt.dtype)
    padded[: min(h, gt.shape[0]), : min(w, gt.shape[1])] = gt[:h, :w]
    maps_dir.mkdir(parents=True, exist_ok=True)
    return write_maps(str(maps_dir / f"{slide.name}.zarr"), maps_from_labels(padded, seed=1, noise=0.02),
                      chunk_px=cfg.segment.block_px).path


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat(timespec="seconds")


def _write_run_json(run: _Run, started: float, ended: float | None) -> None:
    path = run.layout.run_json
    old = json.loads(path.read_text()) if path.is_file() else {}
    norm = {**old.get("normalisation", {}), **run.norm}
    record = {
        "started": _iso(started),
        "ended": _iso(ended) if ended is not None else None,
        "config": run.cfg.model_dump(mode="json"),
        "config_fingerprint": run.fingerprint,
        "versions": package_versions(),
        "model": _model_record(run.cfg),
        "slides": {s.name: {"source": str(s.path), **s.meta} for s in run.slides},
        "normalisation": norm,
    }
    tmp = path.with_name(".run.json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    tmp.replace(path)


def run_archive(
    archive: str | Path, run_dir: str | Path, cfg: RunConfig, client: Any, *, progress: bool | None = None
) -> RunResult:
    """Take every slide of ``archive`` through convert, segment, measure and curate; then aggregate and report.

    Parameters
    ----------
    archive : a folder of slides, or a manifest (CSV / Parquet with a ``path`` column).
    run_dir : the run directory; everything is written inside it.
    cfg : RunConfig
        Every stage's section, and ``cfg.archive`` (discovery, manifest, retries, concurrency).
    client : distributed.Client
        The one client every stage submits to.
    progress : bool, optional
        Show a slide progress bar; ``None`` only on a terminal.

    Raises
    ------
    ValidationError
        The archive or manifest is unusable (nothing has run).
    StageError
        Another run holds the run directory.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    root = Path(run_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    (root / "logs").mkdir(exist_ok=True)
    handler = logging.FileHandler(root / "logs" / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    pkg_logger = logging.getLogger("nclsm_scale")
    with RunLock(root / "run.lock"):
        pkg_logger.addHandler(handler)
        try:
            slides = discover(archive, cfg.archive)
            run = _Run(root, cfg, client, slides)
            register_metrics(client)  # idempotent; never raises
            if n := run.state.reset_running():
                logger.warning("%d stage(s) were interrupted by an earlier run; redoing them", n)
            for s in slides:
                run.state.register(s.name, str(s.path), STAGES, s.meta)
            started = time.time()
            _write_run_json(run, started, None)
            with tqdm(total=len(slides), desc="slides", unit="slide", disable=None if progress is None else not progress) as bar:
                run.bar = bar
                with ThreadPoolExecutor(cfg.archive.max_concurrent_slides, thread_name_prefix="slide") as pool:
                    outcomes = list(pool.map(run.process, slides))
            report, report_error = run.finish_archive(outcomes)
            _write_run_json(run, started, time.time())
            result = RunResult(root, outcomes, report, report_error, time.perf_counter() - t0)
            logger.info("%s", result.summary())
            return result
        finally:
            pkg_logger.removeHandler(handler)
            handler.close()
