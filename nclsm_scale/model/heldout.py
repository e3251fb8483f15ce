"""Evaluate a network (and the classical baseline) on held-out images."""

from __future__ import annotations

import logging
import time
from typing import Any

from nclsm_scale.evaluate import InstanceMetrics, evaluate_instances
from nclsm_scale.model.baseline import baseline_instances
from nclsm_scale.model.data import Sample
from nclsm_scale.model.infer import Engine
from nclsm_scale.model.instances import extract_instances

__all__ = ["evaluate_samples", "pooled"]

log = logging.getLogger(__name__)


def pooled(metrics: list[InstanceMetrics]) -> dict[str, Any]:
    """Metrics over several images as one: summed counts, matched-count-weighted mean IoU."""
    n_gt = sum(m.n_gt for m in metrics)
    n_pred = sum(m.n_pred for m in metrics)
    out: dict[str, Any] = {"n_gt": n_gt, "n_pred": n_pred, "f1": {}, "precision": {}, "recall": {}}
    for key in metrics[0].tp:
        tp = sum(m.tp[key] for m in metrics)
        out["f1"][key] = 2 * tp / (n_gt + n_pred) if n_gt + n_pred else 1.0
        out["precision"][key] = tp / n_pred if n_pred else 0.0
        out["recall"][key] = tp / n_gt if n_gt else 0.0
    matched = sum(m.tp["0.5"] for m in metrics)
    out["mean_matched_iou"] = (
        sum(m.mean_matched_iou * m.tp["0.5"] for m in metrics) / matched if matched else 0.0
    )
    out["splits"] = sum(m.splits for m in metrics)
    out["merges"] = sum(m.merges for m in metrics)
    return out


def evaluate_samples(
    engine: Engine, samples: list[Sample], *, baseline: bool = True
) -> dict[str, Any]:
    """Model (and baseline) metrics per sample and pooled over ``samples``."""
    per: list[dict[str, Any]] = []
    model_m, base_m = [], []
    for s in samples:
        t0 = time.perf_counter()
        maps = engine.predict_image(s.image)
        pred = extract_instances(maps)
        seconds = time.perf_counter() - t0
        m = evaluate_instances(pred, s.labels)
        model_m.append(m)
        row = {
            "name": s.name,
            "shape_yx": list(s.labels.shape),
            "pixel_size_um": s.pixel_size_um,
            "model": m.to_dict(),
            "model_seconds": round(seconds, 2),
        }
        if baseline:
            b = evaluate_instances(baseline_instances(s.image), s.labels)
            base_m.append(b)
            row["baseline"] = b.to_dict()
        log.info("%s: model F1@0.5 %.4f mIoU %.4f", s.name, m.f1["0.5"], m.mean_matched_iou)
        per.append(row)
    out: dict[str, Any] = {"samples": per, "model": pooled(model_m)}
    if baseline:
        out["baseline"] = pooled(base_m)
    return out
