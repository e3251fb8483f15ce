"""The demo: synthetic slides through the pipeline on a Dask cluster, with a look at the result.

``nclsm-scale demo --out DIR`` writes synthetic sections with exact ground truth
(``DIR/synth``) and runs them as an archive (:func:`nclsm_scale.run.run_archive`,
the same stages in the same order as ``nclsm-scale run``): ``DIR`` becomes a run
directory with the converted slides, their labels, the fibre tables, the slide
statistics and the report. Then each slide's fibres are scored against the ground
truth at the segmentation level (whose level and pixel size are reported: ``nclsm-scale
evaluate`` scores level 0, so its IoUs differ), their curated classes are compared
with the classes the synthetic truth carries (AM / NTM / FAM / FR / DEBRIS) over the
fibres matched at IoU 0.5, and a PNG overlay of a region of each slide is rendered
(``DIR/overlay_<slide>.png``). A summary goes to ``DIR/demo.json``. The run
resumes: a second demo reuses everything already done.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tifffile

from nclsm_scale.config import RunConfig
from nclsm_scale.errors import StageError
from nclsm_scale.evaluate import InstanceMetrics, class_agreement, evaluate_instances
from nclsm_scale.io.pyramid import downsample_labels
from nclsm_scale.layout import read_table_meta
from nclsm_scale.overlay import composite_rgb, draw_outlines, save_png
from nclsm_scale.run import run_archive
from nclsm_scale.slide import open_slide
from nclsm_scale.state import StateStore
from nclsm_scale.synth.write import output_paths, write_section

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["DemoRun", "DemoSlide", "run_demo"]

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
    level: int = 0
    pixel_size_um: float = 0.0
    class_counts: dict[str, int] = field(default_factory=dict)
    class_agreement: float = 0.0
    n_class_scored: int = 0
    class_precision_recall: dict[str, list[float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _synthesize(out_dir: Path, cfg: RunConfig, n_slides: int) -> list[Path]:
    paths = []
    for i in range(n_slides):
        path = out_dir / "synth" / f"demo{i + 1}.ome.tiff"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_section(path, cfg.synth.model_copy(update={"seed": cfg.synth.seed + i}))
        paths.append(path)
    return paths


def _score(store: str, level: int, gt_tiff: Path) -> tuple[np.ndarray, np.ndarray, InstanceMetrics]:
    """Predicted and GT labels at the segmentation level, and the metrics of one against the other."""
    slide = open_slide(store)
    pred = slide.read_labels("fibres", level, 0, 0, *slide.levels[level].shape[1:])
    gt = tifffile.imread(gt_tiff)
    factor = round(gt.shape[0] / pred.shape[0])
    if factor > 1:
        gt = downsample_labels(gt, factor)
    gt = gt[: pred.shape[0], : pred.shape[1]]
    return pred, gt, evaluate_instances(pred, gt)


def _classes(item: DemoSlide, pred: np.ndarray, gt: np.ndarray, table: Path, truth: Path) -> None:
    """Fill ``item``'s class agreement: curated classes against the synthetic truth, fibres matched at IoU 0.5."""
    import pandas as pd

    ours = pd.read_parquet(table, columns=["fibre_id", "curation_class"]).set_index("fibre_id")["curation_class"]
    theirs = pd.read_parquet(truth, columns=["fibre_id", "gt_class"]).set_index("fibre_id")["gt_class"]
    r = class_agreement(pred, gt, ours, theirs)
    item.class_agreement, item.n_class_scored = round(r.agreement, 4), r.n_scored
    item.class_precision_recall = {c: [round(v["precision"], 3), round(v["recall"], 3)]
                                   for c, v in r.classes.items() if v["n_true"] or v["n_called"]}


def _overlay(store: str, level: int, pred: np.ndarray, png: Path) -> Path:
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


def run_demo(out_dir: str | Path, cfg: RunConfig, client: Client, *, n_slides: int = 2) -> DemoRun:
    """Synthesize ``n_slides`` slides under ``out_dir``, run them as an archive, score and show them.

    Raises
    ------
    StageError
        When a demo slide fails (the demo's inputs are generated, so this is a
        bug or a full disk, not bad input).
    """
    out = Path(out_dir)
    t0 = time.perf_counter()
    sources = _synthesize(out, cfg, n_slides)
    t_synth = time.perf_counter() - t0
    result = run_archive(out / "synth", out, cfg, client)
    if not result.ok or result.report is None:
        raise StageError("demo run failed: " + "; ".join(result.summary().splitlines()[1:]))
    records = StateStore(out / "state.sqlite").records()
    slides = []
    for source, outcome in zip(sources, sorted(result.slides, key=lambda o: o.name), strict=True):
        store = str(result.run_dir / "slides" / f"{outcome.name}.ome.zarr")
        meta = read_table_meta(result.run_dir / "tables" / "fibres" / f"{outcome.name}.parquet")
        item = DemoSlide(slide_id=outcome.name, store=store, n_fibres=outcome.fibres,
                         class_counts=dict(meta.get("class_counts", {})))
        item.seconds = {"synth": round(t_synth / n_slides, 2)}
        item.seconds.update({r.stage: round(r.seconds or 0.0, 2) for r in records if r.slide == outcome.name})
        item.level = int(meta["level"])
        item.pixel_size_um = open_slide(store).pixel_size_um(item.level)
        pred, gt, metrics = _score(store, item.level, output_paths(source)["fibres"])
        _classes(item, pred, gt, result.run_dir / "tables" / "fibres" / f"{outcome.name}.parquet",
                 output_paths(source)["parquet"])
        item.n_gt_fibres = metrics.n_gt
        item.f1_iou50 = round(metrics.f1["0.5"], 4)
        item.mean_matched_iou = round(metrics.mean_matched_iou, 4)
        item.overlay_png = str(_overlay(store, int(meta["level"]), pred, out / f"overlay_{item.slide_id}.png"))
        slides.append(item)
        logger.debug("demo %s: %d fibres (ground truth %d), F1@0.5 %.3f at level %d, class agreement %.3f",
                     item.slide_id, item.n_fibres, item.n_gt_fibres, item.f1_iou50, item.level, item.class_agreement)
    demo = DemoRun(slides, result.report, round(time.perf_counter() - t0, 1))
    summary = {"slides": [asdict(s) for s in slides], "report": str(demo.report), "seconds": demo.seconds}
    (out / "demo.json").write_text(json.dumps(summary, indent=2) + "\n")
    return demo
