"""The demo: synthetic slides through the pipeline on a Dask cluster, with a look at the result.

``nclsm-scale demo --out DIR`` writes synthetic sections with exact ground truth
(``DIR/synth``), converts them to OME-Zarr (``DIR/slides``), segments them with the
bundled network, scores the fibres against the ground truth and renders a PNG
overlay of a region of each slide (``DIR/overlay_<slide>.png``), then measures and
curates every fibre (``DIR/tables/fibres/<slide>.parquet``), aggregates the slides
(``DIR/tables/slides.parquet``) and writes the report (``DIR/report/index.html``):
``DIR`` is a run directory (:class:`~nclsm_scale.layout.RunLayout`). A summary goes
to ``DIR/demo.json``. Conversion and segmentation resume: a second run reuses them.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from nclsm_scale.config import RunConfig
from nclsm_scale.errors import StageError

logger = logging.getLogger(__name__)

#: Edge of the overlay crop at the segmentation level, in pixels.
OVERLAY_PX = 768


@dataclass
class DemoSlide:
    """What the demo did with one synthetic slide."""

    slide_id: str
    store: str
    n_fibres: int = 0
    n_gt_fibres: int = 0
    f1_iou50: float = 0.0
    mean_matched_iou: float = 0.0
    overlay_png: str = ""
    class_counts: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _synthesize(out_dir: Path, cfg: RunConfig, n_slides: int) -> list[Path]:
    from nclsm_scale.synth import write_section

    paths = []
    for i in range(n_slides):
        path = out_dir / "synth" / f"demo{i + 1}.ome.tiff"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_section(path, cfg.synth.model_copy(update={"seed": cfg.synth.seed + i}))
        paths.append(path)
    return paths


def _score(store: str, level: int, gt_tiff: Path) -> tuple[np.ndarray, Any]:
    """Predicted labels at the segmentation level and their metrics against the ground truth."""
    from nclsm_scale.evaluate import evaluate_instances
    from nclsm_scale.io.pyramid import downsample_labels
    from nclsm_scale.slide import open_slide

    slide = open_slide(store)
    pred = slide.label_array("fibres", level)[0]
    gt = tifffile.imread(gt_tiff)
    factor = round(gt.shape[0] / pred.shape[0])
    if factor > 1:
        gt = downsample_labels(gt, factor)
    gt = gt[: pred.shape[0], : pred.shape[1]]
    return pred, evaluate_instances(pred, gt)


def _overlay(store: str, level: int, pred: np.ndarray, png: Path) -> Path:
    from nclsm_scale.overlay import composite_rgb, draw_outlines, save_png
    from nclsm_scale.slide import open_slide

    slide = open_slide(store)
    h, w = pred.shape
    y0, x0 = max(0, (h - OVERLAY_PX) // 2), max(0, (w - OVERLAY_PX) // 2)
    y1, x1 = min(h, y0 + OVERLAY_PX), min(w, x0 + OVERLAY_PX)
    rgb = composite_rgb(slide.read(level, y0, x0, y1, x1), slide.roles)
    return save_png(draw_outlines(rgb, pred[y0:y1, x0:x1]), png)


@dataclass
class DemoRun:
    """Everything the demo made: per-slide results and the report page."""

    slides: list[DemoSlide]
    report: Path
    seconds: float


def run_demo(out_dir: str | Path, cfg: RunConfig, client: Any, *, n_slides: int = 2) -> DemoRun:
    """Synthesize, convert, segment, score, measure, curate and report ``n_slides`` slides under ``out_dir``.

    Raises
    ------
    StageError
        When a demo slide fails to convert (the demo's inputs are generated, so
        this is a bug or a full disk, not bad input).
    """
    from nclsm_scale.convert import convert
    from nclsm_scale.curate.driver import curate_slide
    from nclsm_scale.measure.driver import measure_slide
    from nclsm_scale.report import build_report
    from nclsm_scale.segment import segment_slide

    out = Path(out_dir)
    t0 = time.perf_counter()
    sources = _synthesize(out, cfg, n_slides)
    t_synth = time.perf_counter() - t0
    converted = convert(sources, out / "slides", cfg.convert, client)
    failed = [r for r in converted if r.status == "failed"]
    if failed:
        raise StageError("demo conversion failed: " + "; ".join(r.message for r in failed))
    slides = []
    for source, conv in zip(sources, converted, strict=True):
        item = DemoSlide(slide_id=Path(conv.store).name.removesuffix(".ome.zarr"), store=conv.store)
        item.seconds = {"synth": round(t_synth / n_slides, 2), "convert": round(conv.seconds, 2)}
        seg = segment_slide(conv.store, cfg, client)
        item.seconds["segment"] = round(seg.seconds, 2)
        item.n_fibres = seg.n_fibres
        gt_tiff = source.with_name(source.name.replace(".ome.tiff", ".fibres.ome.tiff"))
        pred, metrics = _score(conv.store, seg.level, gt_tiff)
        item.n_gt_fibres = metrics.n_gt
        item.f1_iou50 = round(metrics.f1["0.5"], 4)
        item.mean_matched_iou = round(metrics.mean_matched_iou, 4)
        item.overlay_png = str(_overlay(conv.store, seg.level, pred, out / f"overlay_{item.slide_id}.png"))
        t1 = time.perf_counter()
        measure_slide(conv.store, cfg, client)
        item.seconds["measure"] = round(time.perf_counter() - t1, 2)
        cur = curate_slide(conv.store, cfg, client)
        item.seconds["curate"] = round(cur.seconds, 2)
        item.class_counts = cur.class_counts
        slides.append(item)
        logger.info("demo %s: %d fibres (ground truth %d), F1@0.5 %.3f",
                    item.slide_id, item.n_fibres, item.n_gt_fibres, item.f1_iou50)
    t1 = time.perf_counter()
    report = build_report(out, cfg, client)
    result = DemoRun(slides, Path(report), round(time.perf_counter() - t0, 1))
    summary = {"slides": [asdict(s) for s in slides], "report": str(report),
               "report_seconds": round(time.perf_counter() - t1, 2), "seconds": result.seconds}
    (out / "demo.json").write_text(json.dumps(summary, indent=2) + "\n")
    return result
