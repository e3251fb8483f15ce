"""Calibrated probabilities of the curation: score -> P(reason), then class confidence -> P(class right).

Every rule of :mod:`nclsm_scale.curate.rules` gives a score (a log ratio to its
threshold, ``>= 0`` when it applies). Two monotone maps, fitted by isotonic
regression (pool-adjacent-violators: the probability never falls as its input
rises) on synthetic sections with exact ground truth (``bench/curation.py
--fit``; the sections that judge the result are others):

1. per reason, score -> P(the fibre's class is that reason);
2. per primary class, the confidence those give (the reason's probability, or for
   AM the product of one minus each judged reason's) -> P(the class is right),
   which corrects what the product's independence assumption gets wrong.

The maps ship with the package (``curate/calibration.json``); a reason without
one falls back to a logistic of its score (:data:`FALLBACK_SLOPE`), a class
without one keeps its first-stage confidence: neither is calibrated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["BUNDLED", "FALLBACK_SLOPE", "Calibration", "fit_isotonic"]

#: The calibration shipped with the package.
BUNDLED = Path(__file__).resolve().parent / "calibration.json"
#: Slope (per natural-log unit of score) of the logistic used for reasons without a fitted map.
FALLBACK_SLOPE = 18.0


def fit_isotonic(score: np.ndarray, outcome: np.ndarray, min_count: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Monotone (non-decreasing) fit of ``outcome`` (0/1) on ``score``: block mean scores and probabilities.

    Pool-adjacent-violators over the fibres sorted by score; blocks are also pooled
    until each holds at least ``min_count`` fibres, so a probability never rests on
    a handful of fibres. Interpolate between the returned points (:meth:`Calibration.probability`).
    """
    keep = np.isfinite(score)
    order = np.argsort(score[keep], kind="stable")
    x = score[keep][order].astype(np.float64)
    y = outcome[keep][order].astype(np.float64)
    sums: list[list[float]] = []  # [sum of y, count, sum of x]
    for xi, yi in zip(x, y, strict=True):
        sums.append([yi, 1.0, xi])
        while len(sums) > 1 and (
            sums[-2][0] / sums[-2][1] >= sums[-1][0] / sums[-1][1] or sums[-2][1] < min_count
        ):
            a, b = sums.pop(), sums.pop()
            sums.append([a[0] + b[0], a[1] + b[1], a[2] + b[2]])
    if len(sums) > 1 and sums[-1][1] < min_count:
        a, b = sums.pop(), sums.pop()
        sums.append([a[0] + b[0], a[1] + b[1], a[2] + b[2]])
    xs = np.array([s[2] / s[1] for s in sums])
    ps = np.array([s[0] / s[1] for s in sums])
    return xs, ps


@dataclass(frozen=True)
class Calibration:
    """Per reason, points ``(score, probability)`` of a monotone map; see the module docstring."""

    maps: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    classes: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @classmethod
    def bundled(cls) -> Calibration:
        """The calibration shipped with the package (empty if the file is absent)."""
        return cls.load(BUNDLED) if BUNDLED.is_file() else cls()

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Read a calibration written by :meth:`save`."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))

        def maps(part: dict[str, dict[str, list[float]]], key: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
            return {r: (np.asarray(m[key], float), np.asarray(m["probability"], float)) for r, m in part.items()}

        return cls(maps(data["reasons"], "score"), maps(data.get("classes", {}), "confidence"))

    def save(self, path: str | Path, **about: object) -> Path:
        """Write the maps as JSON, with ``about`` (how they were fitted) beside them."""
        def dump(part: dict[str, tuple[np.ndarray, np.ndarray]], key: str) -> dict[str, dict[str, list[float]]]:
            return {r: {key: [round(float(v), 5) for v in x], "probability": [round(float(v), 5) for v in p]}
                    for r, (x, p) in sorted(part.items())}

        data = {"about": about, "reasons": dump(self.maps, "score"), "classes": dump(self.classes, "confidence")}
        path = Path(path)
        path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        return path

    def probability(self, reason: str, score: np.ndarray) -> np.ndarray:
        """P(``reason`` applies) at each score (NaN where the score is NaN: not judged)."""
        score = np.asarray(score, np.float64)
        if reason in self.maps:
            xs, ps = self.maps[reason]
            p = np.interp(score, xs, ps)
        else:
            with np.errstate(over="ignore"):
                p = 1.0 / (1.0 + np.exp(-FALLBACK_SLOPE * score))
        return np.where(np.isfinite(score), p, np.nan)

    def class_probability(self, cls: str, confidence: np.ndarray) -> np.ndarray:
        """P(primary class ``cls`` is right) at each first-stage confidence (unchanged without a map)."""
        confidence = np.asarray(confidence, np.float64)
        if cls not in self.classes:
            return confidence
        xs, ps = self.classes[cls]
        return np.interp(confidence, xs, ps)
