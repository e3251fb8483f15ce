"""FR (folded) decided by a learned model: per-fibre features and a gradient-boosted tree ensemble.

Why learned: the FR rules (:mod:`nclsm_scale.curate.rules`) read one fold
share and one ridge share against thresholds. Their errors sit where the fold's
edge crosses a fibre and on narrow oblique fibres whose own membrane reads as a
ridge. A fibre under a folded second layer is brighter in the membrane channel
*than its neighbours*, inside and on its ring, and its membrane brightness is
skewed (a sarcolemma line over a plain interior); a fibre only partly under the
fold (the ground truth's FR starts at 30 % covered) shows it in the upper
quartile of its interior membrane before the median. These relative features and
the fibre's shape separate cases the two thresholds cannot. On the 68 synthetic
training sections of ``bench/curation.py`` (the fibres whose ridges are judged),
the rules give FR precision/recall 0.848 / 0.910; gradient boosting over
:data:`FEATURES` gives 0.933 / 0.935, each section predicted by a model trained
on the other 67.

The ensemble is trained with scikit-learn's ``HistGradientBoostingClassifier``
(``bench/curation.py --fit``), exported as its trees' nodes to JSON
(``curate/fr_model.json``) and evaluated here in NumPy: the package needs no
scikit-learn at run time and does not depend on one version's pickles. The
evaluation follows scikit-learn's predictor: at each split a value goes left
when ``value <= threshold``, a NaN the way the node learnt.

The rules stay the documented fallback (``curate.fr_method = "rules"``, or no
bundled model), and decide fibres whose interior ridges cannot be judged
(pixels too coarse, no membrane interior): there the fold alone decides.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from nclsm_scale.config import CurateConfig

__all__ = ["BUNDLED", "FEATURES", "TreeEnsemble", "bundled_record", "fr_features", "neighbour_ratio", "ridges_judged"]

#: The model shipped with the package.
BUNDLED = Path(__file__).resolve().parent / "fr_model.json"

#: The model's inputs, in order (``*_rel``: the fibre's value over its neighbours', :func:`neighbour_ratio`).
FEATURES: tuple[str, ...] = (
    "fold_fraction",
    "interior_membrane_fraction",
    "membrane_interior_rel",
    "membrane_ring_rel",
    "membrane_interior_mean_rel",
    "membrane_interior_skew",
    "cytoplasm_local_rel",
    "ellipse_aspect_ratio",
    "solidity",
    "membrane_interior_over_ring",
    "membrane_interior_p75_rel",
    "membrane_interior_p75_over_median",
)

#: The ensemble's node arrays: name -> (scikit-learn's node field, dtype).
_NODES: dict[str, tuple[str, type]] = {
    "feature": ("feature_idx", np.int64),
    "split": ("num_threshold", np.float64),
    "left": ("left", np.int64),
    "right": ("right", np.int64),
    "missing_left": ("missing_go_to_left", np.bool_),
    "leaf": ("is_leaf", np.bool_),
    "value": ("value", np.float64),
}
#: Fewest usable neighbours a local reference needs (else the ratio is NaN).
_MIN_NEIGHBOURS = 4
#: Fibres per block of the neighbour queries and the tree evaluation (bounds their memory: the trees hold
#: a few arrays of fibres x trees).
_BLOCK = 1024


def neighbour_ratio(
    table: pd.DataFrame, columns: list[str], k: int, use: np.ndarray
) -> dict[str, np.ndarray]:
    """Each fibre's value over the median of its ``k`` nearest other fibres' (centroid distance).

    Only neighbours that ``use`` marks and whose value is finite count; with fewer
    than four the ratio is NaN. Returns one array per column.
    """
    n = len(table)
    out = {c: np.full(n, np.nan) for c in columns}
    if n < 2:
        return out
    xy = table[["centroid_y_um", "centroid_x_um"]].to_numpy(np.float64)
    values = {c: table[c].to_numpy(np.float64) for c in columns}
    tree = cKDTree(xy)
    kk = list(range(1, min(k + 1, n) + 1))
    for lo in range(0, n, _BLOCK):
        hi = min(lo + _BLOCK, n)
        _, nb = tree.query(xy[lo:hi], k=kk)
        usable = use[nb] & (nb != np.arange(lo, hi)[:, None])
        rows = np.arange(hi - lo)
        for c, v in values.items():
            ok = usable & np.isfinite(v[nb])
            w = np.sort(np.where(ok, v[nb], np.inf), axis=1)  # the usable values first, in order
            count = ok.sum(axis=1)
            ref = (w[rows, np.maximum(count - 1, 0) // 2] + w[rows, count // 2]) / 2  # the median
            ref[count < _MIN_NEIGHBOURS] = np.nan
            with np.errstate(divide="ignore", invalid="ignore"):
                out[c][lo:hi] = v[lo:hi] / ref
    return out


def ridges_judged(table: pd.DataFrame, cfg: CurateConfig, pixel_size_um: float | None) -> np.ndarray:
    """Fibres whose interior ridges can be judged: the model decides these, the fold alone the others.

    ``interior_membrane_fraction`` is finite (a membrane channel, an interior) and the
    pixels are at most ``cfg.fr_ridge_max_pixel_size_um`` (a sarcolemma line is resolved).
    """
    if pixel_size_um is not None and pixel_size_um > cfg.fr_ridge_max_pixel_size_um:
        return np.zeros(len(table), bool)
    return np.isfinite(table["interior_membrane_fraction"].to_numpy(np.float64))


def fr_features(table: pd.DataFrame, cfg: CurateConfig) -> pd.DataFrame:
    """The model's :data:`FEATURES` per fibre (NaN where a channel or the neighbours are missing).

    The neighbour references (``cfg.fr_neighbours`` nearest) leave out fibres in a
    detected fold (``fold_fraction`` at least ``cfg.fr_min_fold_fraction``) and debris
    (below ``cfg.debris_max_um2``): a fibre under a fold is compared with the plain
    tissue around it.
    """
    fold = np.nan_to_num(table["fold_fraction"].to_numpy(np.float64), nan=0.0)
    use = (fold < cfg.fr_min_fold_fraction) & (table["area_um2"].to_numpy(np.float64) >= cfg.debris_max_um2)
    rel = neighbour_ratio(
        table,
        ["membrane_interior_median", "membrane_ring_median", "membrane_interior_mean", "cytoplasm_interior_median",
         "membrane_interior_p75"],
        cfg.fr_neighbours,
        use,
    )
    interior = table["membrane_interior_median"].to_numpy(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = table["membrane_interior_mean"].to_numpy(np.float64) / interior
        over_ring = interior / table["membrane_ring_median"].to_numpy(np.float64)
        p75_over_median = table["membrane_interior_p75"].to_numpy(np.float64) / interior
    return pd.DataFrame(
        {
            "fold_fraction": fold,
            "interior_membrane_fraction": table["interior_membrane_fraction"].to_numpy(np.float64),
            "membrane_interior_rel": rel["membrane_interior_median"],
            "membrane_ring_rel": rel["membrane_ring_median"],
            "membrane_interior_mean_rel": rel["membrane_interior_mean"],
            "membrane_interior_skew": skew,
            "cytoplasm_local_rel": rel["cytoplasm_interior_median"],
            "ellipse_aspect_ratio": table["ellipse_aspect_ratio"].to_numpy(np.float64),
            "solidity": table["solidity"].to_numpy(np.float64),
            "membrane_interior_over_ring": over_ring,
            "membrane_interior_p75_rel": rel["membrane_interior_p75"],
            "membrane_interior_p75_over_median": p75_over_median,
        },
        index=table.index,
    )


@dataclass(frozen=True)
class TreeEnsemble:
    """A binary gradient-boosted tree ensemble: ``P = 1 / (1 + exp(-(baseline + sum of leaf values)))``.

    Node arrays are ``(trees, nodes)``, padded; a leaf's ``value`` is its
    contribution. ``threshold`` is the probability at and above which FR applies.
    """

    features: tuple[str, ...]
    baseline: float
    feature: np.ndarray
    split: np.ndarray
    left: np.ndarray
    right: np.ndarray
    missing_left: np.ndarray
    leaf: np.ndarray
    value: np.ndarray
    threshold: float
    about: dict[str, Any]

    @classmethod
    def from_sklearn(cls, model: Any, features: tuple[str, ...], threshold: float, **about: Any) -> TreeEnsemble:
        """Export a fitted binary ``HistGradientBoostingClassifier`` (numeric features only).

        Reads the fitted predictors' node arrays (scikit-learn internals, stable for
        years; the tests check the export against ``predict_proba``).
        """
        trees = [p[0].nodes for p in model._predictors]
        width = max(len(t) for t in trees)
        nodes: dict[str, np.ndarray] = {}
        for name, (field, dtype) in _NODES.items():
            nodes[name] = np.zeros((len(trees), width), dtype)
            for i, t in enumerate(trees):
                nodes[name][i, : len(t)] = t[field]
        return cls(features=tuple(features), baseline=float(np.ravel(model._baseline_prediction)[0]),
                   threshold=float(threshold), about=dict(about), **nodes)

    @classmethod
    def load(cls, path: str | Path) -> TreeEnsemble:
        """Read a model written by :meth:`save`."""
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(features=tuple(d["features"]), baseline=float(d["baseline"]), threshold=float(d["threshold"]),
                   about=d.get("about", {}), **{k: np.asarray(d[k], dtype) for k, (_, dtype) in _NODES.items()})

    @classmethod
    def bundled(cls) -> TreeEnsemble | None:
        """The model shipped with the package, or None if the file is absent."""
        return cls.load(BUNDLED) if BUNDLED.is_file() else None

    def save(self, path: str | Path) -> Path:
        """Write the model as JSON (floats as their shortest exact text, so a reload predicts identically)."""
        d = {
            "about": self.about, "features": list(self.features), "baseline": self.baseline,
            "threshold": self.threshold,
            **{k: getattr(self, k).tolist() for k in _NODES},
        }
        path = Path(path)
        path.write_text(json.dumps(d, separators=(",", ":")) + "\n", encoding="utf-8")
        return path

    @cached_property
    def _flat(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        """Node arrays flattened over the trees, leaves pointing at themselves, and the deepest leaf's depth."""
        trees, width = self.feature.shape
        base = (np.arange(trees) * width)[:, None]
        me = base + np.arange(width)[None, :]
        left = np.where(self.leaf, me, base + self.left).ravel()
        right = np.where(self.leaf, me, base + self.right).ravel()
        deepest = 0
        for t in range(trees):
            stack = [(0, 0)]
            while stack:
                node, depth = stack.pop()
                if self.leaf[t, node]:
                    deepest = max(deepest, depth)
                else:
                    stack += [(int(self.left[t, node]), depth + 1), (int(self.right[t, node]), depth + 1)]
        feature = np.where(self.leaf, 0, self.feature).ravel()
        return feature, self.split.ravel(), self.missing_left.ravel(), left, right, self.value.ravel(), deepest

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Log-odds for each row of ``x`` (``(fibres, len(features))``, float64; NaN = missing)."""
        x = np.asarray(x, np.float64)
        feature, split, missing_left, left, right, value, deepest = self._flat
        roots = np.arange(self.feature.shape[0]) * self.feature.shape[1]
        out = np.empty(len(x))
        for lo in range(0, len(x), _BLOCK):
            xb = np.ascontiguousarray(x[lo : lo + _BLOCK])
            at = np.arange(len(xb))[:, None] * xb.shape[1]
            node = np.broadcast_to(roots, (len(xb), len(roots)))
            for _ in range(deepest):
                v = xb.ravel()[at + feature[node]]
                go_left = np.where(np.isnan(v), missing_left[node], v <= split[node])
                node = np.where(go_left, left[node], right[node])
            out[lo : lo + len(xb)] = self.baseline + value[node].sum(axis=1)
        return out

    def probability(self, x: np.ndarray) -> np.ndarray:
        """P(FR) for each row of ``x``."""
        return 1.0 / (1.0 + np.exp(-self.raw(x)))

    def score(self, x: np.ndarray) -> np.ndarray:
        """Log-odds over the threshold's: ``>= 0`` where P(FR) is at least :attr:`threshold`."""
        t = min(max(self.threshold, 1e-9), 1 - 1e-9)
        return self.raw(x) - np.log(t / (1.0 - t))


def bundled_record() -> dict[str, Any] | None:
    """The bundled model's file, sha256 and threshold, as a run's curate table records them (None without one)."""
    model = TreeEnsemble.bundled()
    if model is None:
        return None
    return {"file": str(BUNDLED), "sha256": hashlib.sha256(BUNDLED.read_bytes()).hexdigest(),
            "threshold": model.threshold}
