"""Instance-segmentation metrics: one-to-one matching, F1 at IoU thresholds, splits, merges.

Definitions (``P`` = predicted instances, ``G`` = ground-truth fibres):

- IoU of every overlapping pair comes from a sparse contingency table (the
  unique ``(g, p)`` pixel pairs), never a dense ``|G| x |P|`` matrix.
- **Matching** at threshold ``t``: pairs with IoU >= ``t`` taken greedily by
  descending IoU (ties by ids), each instance used once. For ``t >= 0.5`` at
  most one pair per instance can exceed 0.5, so this equals the optimal
  (Hungarian) matching. TP = matched pairs, ``precision = TP / |P|``,
  ``recall = TP / |G|``, ``F1 = 2 TP / (|P| + |G|)``.
- **mean_matched_iou**: mean IoU of the pairs matched at 0.5.
- A predicted instance *belongs to* a GT fibre when at least half of the
  prediction's pixels lie in that fibre; a GT fibre is **split** when two or more
  predictions belong to it. Symmetrically a GT fibre belongs to a prediction when
  at least half of the fibre lies in it; a prediction is a **merge** when two or
  more GT fibres belong to it (``merged_gt`` counts those fibres).

Scores depend on the pixel grid they are computed on (an outline one pixel off
weighs four times more at half the pixel size), so every caller states it:
``evaluate`` scores level 0 of its inputs (:func:`labels_pixel_size_um`), the
demo the slide's segmentation level.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nclsm_scale.errors import SlideReadError

__all__ = [
    "ClassAgreement", "InstanceMetrics", "class_agreement", "class_scores", "contingency", "evaluate_instances",
    "labels_pixel_size_um", "matched_pairs", "read_labels",
]

THRESHOLDS = (0.5, 0.75, 0.9)


@dataclass(frozen=True)
class InstanceMetrics:
    """Metrics of one prediction against one ground truth (see module docstring)."""

    n_gt: int
    n_pred: int
    tp: dict[str, int]
    precision: dict[str, float]
    recall: dict[str, float]
    f1: dict[str, float]
    mean_matched_iou: float
    splits: int
    merges: int
    merged_gt: int

    def to_dict(self) -> dict:
        """Plain JSON-able dict."""
        return asdict(self)


def contingency(
    gt: np.ndarray, pred: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict, dict]:
    """Sparse overlap table: arrays ``(g, p, n)`` of pixel counts for every overlapping pair.

    Also returns the area of every GT and predicted id (dicts id -> pixels).
    """
    g = np.asarray(gt).ravel().astype(np.uint64)
    p = np.asarray(pred).ravel().astype(np.uint64)
    if g.shape != p.shape:
        raise ValueError(f"shapes differ: ground truth {np.shape(gt)}, prediction {np.shape(pred)}")
    both = (g > 0) & (p > 0)
    codes, counts = np.unique((g[both] << np.uint64(32)) | p[both], return_counts=True)
    gi = (codes >> np.uint64(32)).astype(np.int64)
    pi = (codes & np.uint64(0xFFFFFFFF)).astype(np.int64)
    gid, garea = np.unique(g[g > 0], return_counts=True)
    pid, parea = np.unique(p[p > 0], return_counts=True)
    return (
        gi,
        pi,
        counts.astype(np.int64),
        dict(zip(gid.tolist(), garea.tolist(), strict=True)),
        dict(zip(pid.tolist(), parea.tolist(), strict=True)),
    )


def _match(gi: np.ndarray, pi: np.ndarray, iou: np.ndarray, threshold: float) -> np.ndarray:
    order = np.lexsort((pi, gi, -iou))
    used_g: set[int] = set()
    used_p: set[int] = set()
    matched = []
    for k in order:
        if iou[k] < threshold:
            break
        if gi[k] in used_g or pi[k] in used_p:
            continue
        used_g.add(int(gi[k]))
        used_p.add(int(pi[k]))
        matched.append(k)
    return np.asarray(matched, dtype=np.int64)


def evaluate_instances(
    pred: np.ndarray, gt: np.ndarray, thresholds: tuple[float, ...] = THRESHOLDS
) -> InstanceMetrics:
    """Compare instance labels ``pred`` against ``gt`` (same shape; 0 = background)."""
    gi, pi, inter, garea, parea = contingency(gt, pred)
    ga = np.array([garea[int(v)] for v in gi], dtype=np.float64)
    pa = np.array([parea[int(v)] for v in pi], dtype=np.float64)
    iou = inter / (ga + pa - inter) if inter.size else np.zeros(0)
    n_gt, n_pred = len(garea), len(parea)
    tp, precision, recall, f1 = {}, {}, {}, {}
    mean_iou = 0.0
    for t in thresholds:
        matched = _match(gi, pi, iou, t)
        key = f"{t:g}"
        tp[key] = int(matched.size)
        precision[key] = matched.size / n_pred if n_pred else float(n_gt == 0)
        recall[key] = matched.size / n_gt if n_gt else float(n_pred == 0)
        f1[key] = 2 * matched.size / (n_pred + n_gt) if n_pred + n_gt else 1.0
        if t == 0.5:
            mean_iou = float(iou[matched].mean()) if matched.size else 0.0
    pred_in_gt = inter >= 0.5 * pa
    splits = int((np.bincount(gi[pred_in_gt]) >= 2).sum()) if pred_in_gt.any() else 0
    gt_in_pred = inter >= 0.5 * ga
    per_pred = np.bincount(pi[gt_in_pred]) if gt_in_pred.any() else np.zeros(0, np.int64)
    return InstanceMetrics(
        n_gt=n_gt,
        n_pred=n_pred,
        tp=tp,
        precision=precision,
        recall=recall,
        f1=f1,
        mean_matched_iou=mean_iou,
        splits=splits,
        merges=int((per_pred >= 2).sum()),
        merged_gt=int(per_pred[per_pred >= 2].sum()),
    )


def matched_pairs(
    pred: np.ndarray, gt: np.ndarray, threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The one-to-one matching at ``threshold``: GT ids, predicted ids and their IoUs."""
    gi, pi, inter, garea, parea = contingency(gt, pred)
    ga = np.array([garea[int(v)] for v in gi], dtype=np.float64)
    pa = np.array([parea[int(v)] for v in pi], dtype=np.float64)
    iou = inter / (ga + pa - inter) if inter.size else np.zeros(0)
    matched = _match(gi, pi, iou, threshold)
    return gi[matched], pi[matched], iou[matched]


def class_scores(
    pred: np.ndarray, gt: np.ndarray, pred_flags: pd.DataFrame, gt_flags: pd.DataFrame, threshold: float = 0.5
) -> dict[str, dict[str, float]]:
    """Precision and recall of per-fibre flags (a class, a reason) over fibres matched at ``threshold``.

    ``pred_flags`` and ``gt_flags`` are boolean tables indexed by predicted and GT
    id, with the columns to score (those present in both). A predicted fibre flagged
    but matched to no GT fibre, or to one without the flag, is a false positive; a
    flagged GT fibre without a flagged match (or without any match) a false negative.
    """
    g_ids, p_ids, _ = matched_pairs(pred, gt, threshold)
    match = pd.Series(g_ids, index=p_ids)
    out: dict[str, dict[str, float]] = {}
    for col in [c for c in pred_flags.columns if c in gt_flags.columns]:
        called = pred_flags.index[pred_flags[col].to_numpy(bool)]
        true = set(gt_flags.index[gt_flags[col].to_numpy(bool)].tolist())
        hits = sum(1 for p in called if p in match.index and int(match[p]) in true)
        out[col] = {
            "precision": hits / len(called) if len(called) else float("nan"),
            "recall": hits / len(true) if true else float("nan"),
            "n_called": float(len(called)), "n_true": float(len(true)), "tp": float(hits),
        }
    return out


@dataclass(frozen=True)
class ClassAgreement:
    """Classes of matched fibres against the truth (:func:`class_agreement`)."""

    n_matched: int
    n_scored: int
    agreement: float
    classes: dict[str, dict[str, float]]


def class_agreement(
    pred: np.ndarray, gt: np.ndarray, pred_class: pd.Series, gt_class: pd.Series, threshold: float = 0.5
) -> ClassAgreement:
    """How often the predicted class of a fibre matched at ``threshold`` equals its ground-truth class.

    Parameters
    ----------
    pred, gt : ndarray of shape (Y, X), integer labels on the same grid.
    pred_class : Series of str, indexed by predicted id (e.g. ``curation_class``).
    gt_class : Series of str, indexed by GT id (e.g. synth's ``gt_class``); a categorical's
        categories are the classes the truth knows, else the values present.
    threshold : IoU of the one-to-one matching.

    Returns
    -------
    ClassAgreement
        ``n_matched``; ``n_scored``, the matched fibres whose predicted class is
        one the truth knows (EDGE and QC are not); ``agreement``, the share of those
        whose classes are equal (NaN when none); ``classes``, per class the
        :func:`class_scores` of the one-vs-rest flags.

    >>> gt = np.array([[1, 1, 2, 2]]); pred = np.array([[5, 5, 6, 6]])
    >>> truth = pd.Series(pd.Categorical(["AM", "NTM"], categories=["AM", "NTM", "FR"]), index=[1, 2])
    >>> r = class_agreement(pred, gt, pd.Series({5: "AM", 6: "FR"}), truth)
    >>> (r.n_matched, r.n_scored, r.agreement)
    (2, 2, 0.5)
    """
    g_ids, p_ids, _ = matched_pairs(pred, gt, threshold)
    categorical = isinstance(gt_class.dtype, pd.CategoricalDtype)
    known = set(map(str, gt_class.cat.categories)) if categorical else set(gt_class.astype(str))
    called = pred_class.astype(str).reindex(p_ids).to_numpy()
    truth = gt_class.astype(str).reindex(g_ids).to_numpy()
    scored = np.array([c in known for c in called], dtype=bool)
    agreement = float(np.mean(called[scored] == truth[scored])) if scored.any() else float("nan")
    classes = sorted(known | {c for c in pred_class.astype(str) if c in known})
    p_flags = pd.DataFrame({c: pred_class.astype(str) == c for c in classes}, index=pred_class.index)
    g_flags = pd.DataFrame({c: gt_class.astype(str) == c for c in classes}, index=gt_class.index)
    return ClassAgreement(int(len(g_ids)), int(scored.sum()), agreement,
                          class_scores(pred, gt, p_flags, g_flags, threshold))


def labels_pixel_size_um(path: str | Path) -> float | None:
    """Pixel size (um, x axis) of level 0 of a label image: OME-Zarr scale or OME-TIFF ``PhysicalSizeX``.

    None when the file does not record it (a plain TIFF) or cannot be read.
    """
    path = Path(path)
    try:
        if path.is_dir():
            import zarr

            from nclsm_scale.io.ome_zarr import read_multiscales

            group = zarr.open_group(str(path), mode="r")
            if "labels" in group:
                group = zarr.open_group(str(path), path="labels/fibres", mode="r")
            multiscales, _ = read_multiscales(group)
            for t in multiscales["datasets"][0].get("coordinateTransformations", []):
                if t.get("type") == "scale":
                    return float(t["scale"][-1])
            return None
        import re

        import tifffile

        with tifffile.TiffFile(str(path)) as tif:
            ome = tif.ome_metadata or ""
        m = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', ome)
        return float(m[1]) if m else None
    except Exception:  # the scores stand without it; the caller says "not recorded"
        return None


def read_labels(path: str | Path) -> np.ndarray:
    """Read a 2-D label image from a TIFF, or from an OME-Zarr store's labels (level 0).

    For an OME-Zarr path give the store (its first label group is used, ``fibres``
    if present) or the label group itself (``x.ome.zarr/labels/fibres``).
    """
    path = Path(path)
    if not path.exists():
        raise SlideReadError(f"{path}: no such file or folder.")
    if path.is_dir():
        import zarr

        from nclsm_scale.io.ome_zarr import array_at, attrs_of, read_multiscales

        try:
            group = zarr.open_group(str(path), mode="r")
            if "labels" in group:
                labels = zarr.open_group(str(path), path="labels", mode="r")
                attrs = attrs_of(labels)
                names = list(attrs.get("ome", {}).get("labels") or attrs.get("labels") or [])
                names = names or sorted(labels.group_keys())
                if not names:
                    raise SlideReadError(f"{path}: the labels group holds no label image.")
                group = zarr.open_group(labels.store_path, path="fibres" if "fibres" in names else names[0], mode="r")
            multiscales, _ = read_multiscales(group)
            arr = np.asarray(array_at(group, multiscales["datasets"][0]["path"])[...])
        except SlideReadError:
            raise
        except Exception as exc:
            raise SlideReadError(
                f"{path}: not an OME-Zarr label image: {type(exc).__name__}: {exc}"
            ) from None
    else:
        import tifffile

        try:
            arr = tifffile.imread(str(path))
        except Exception as exc:
            raise SlideReadError(
                f"{path}: cannot read as TIFF: {type(exc).__name__}: {exc}"
            ) from None
    arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise SlideReadError(f"{path}: expected a 2-D label image, found shape {arr.shape}.")
    if not np.issubdtype(arr.dtype, np.integer):
        raise SlideReadError(f"{path}: labels must be integers, found {arr.dtype}.")
    return arr
