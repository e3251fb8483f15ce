"""The demo: synthetic slides through the pipeline on a Dask cluster, with a look at the result.

``nclsm-scale demo --out DIR`` writes synthetic sections with exact ground truth
(``DIR/synth``), converts them to OME-Zarr (``DIR/slides``), segments them with the
bundled network, scores the fibres against the ground truth and renders a PNG
overlay of a region of each slide (``DIR/overlay_<slide>.png``). A summary goes to
``DIR/demo.json``. Every step resumes: a second run reuses finished work.
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
import zarr

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
    pred = zarr.open_group(store, mode="r")["labels/fibres"][slide.levels[level].path][...]
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


def run_demo(out_dir: str | Path, cfg: RunConfig, client: Any, *, n_slides: int = 2) -> list[DemoSlide]:
    """Synthesize, convert, segment and score ``n_slides`` slides under ``out_dir``.

    Raises
    ------
    StageError
        When a demo slide fails to convert (the demo's inputs are generated, so
        this is a bug or a full disk, not bad input).
    """
    from nclsm_scale.convert import convert
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
        slides.append(item)
        logger.info("demo %s: %d fibres (ground truth %d), F1@0.5 %.3f",
                    item.slide_id, item.n_fibres, item.n_gt_fibres, item.f1_iou50)
    summary = {"slides": [asdict(s) for s in slides], "seconds": round(time.perf_counter() - t0, 1)}
    (out / "demo.json").write_text(json.dumps(summary, indent=2) + "\n")
    return slides
