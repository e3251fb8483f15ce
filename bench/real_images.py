"""The pipeline on the two real annotated images of ``shared/data/real``: fibres, classes, types.

Each image goes through ``run`` as an archive of its own (convert, segment,
measure, curate, aggregate, report) on a local cluster, then is scored against
its annotation:

- ``ncl-sm-figure-left``: the NCL-SM annotation figure (RGB composite, R membrane,
  G mito), given as is at its estimated pixel size (``--figure-pixel-size``,
  default 3.6 um/px). F1 at IoU 0.5 and mean matched IoU against ``labels.tif``;
  precision/recall of the annotators' classes (``classes.csv``: analysable, NTM,
  FAM, FR) over fibres matched at IoU 0.5: all of them, those not cut by the
  figure's half split (``cut_by_crop``: the annotators judged the whole fibre, the
  image holds part of it, and a part is EDGE), and those off the image border.
  "reported" counts only the objects the pipeline reports as fibres (not NF or
  DEBRIS). A reliability table of ``confidence`` against the annotators' classes
  (coarse bins: a few hundred fibres).
- ``fibersight-human``: membrane (WGA/laminin) plus MyHC I / IIa / IIx, no mito
  channel, 0.922 um/px. F1 against the Cellpose-made reference labels, and the
  fibre types called.

Writes ``bench/results/real_images.json`` and, per image, a PNG of the image, our
classes and the annotators' classes side by side (``bench/results/real_<name>.png``).

    python bench/real_images.py [--data /work/shared/data/real] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, emit  # noqa: E402

from nclsm_scale.cluster import open_client  # noqa: E402
from nclsm_scale.config import RunConfig  # noqa: E402
from nclsm_scale.evaluate import class_scores, evaluate_instances, matched_pairs  # noqa: E402
from nclsm_scale.layout import RunLayout, read_fibre_table  # noqa: E402
from nclsm_scale.overlay import composite_rgb, save_png  # noqa: E402
from nclsm_scale.run import run_archive  # noqa: E402
from nclsm_scale.slide import open_slide  # noqa: E402
from nclsm_scale.tables import FibreClass  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("NCLSM_REAL", "/work/shared/data/real"))
#: Classes that say "this object is not a fibre" (not reported as fibres).
NOT_FIBRES = {"NF", "DEBRIS"}
#: Colours of the annotators' classes in the comparison PNG (ours use FibreClass colours).
GT_RGB = {"analysable": FibreClass.AM.rgb, "ntm": FibreClass.NTM.rgb, "fam": FibreClass.FAM.rgb,
          "fr": FibreClass.FR.rgb}


def _run(source: Path, work: Path, cfg: RunConfig, client: Any) -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    """Run ``source`` as a one-slide archive; return its labels at level 0, fibre table and level-0 image."""
    archive = work / "archive"
    archive.mkdir(parents=True)
    shutil.copy(source, archive / source.name)
    result = run_archive(archive, work / "run", cfg, client, progress=False)
    if not result.ok:
        raise SystemExit(result.summary())
    layout = RunLayout(work / "run")
    (name,) = layout.curated_slides()
    slide = open_slide(layout.slide(name))
    _, ny, nx = slide.levels[0].shape
    labels = slide.read_labels("fibres", 0, 0, 0, ny, nx)
    table, _ = read_fibre_table(layout.fibre_table(name))
    return labels, table, slide.read(0, 0, 0, ny, nx)


def _class_lut(labels: np.ndarray, colours: dict[int, tuple[int, int, int]]) -> np.ndarray:
    lut = np.zeros((int(labels.max()) + 1, 3), np.uint8)
    for i, rgb in colours.items():
        if i < len(lut):
            lut[i] = rgb
    return lut[labels]


def _panel(rgb: np.ndarray, labels: np.ndarray, colours: dict[int, tuple[int, int, int]]) -> np.ndarray:
    from skimage.segmentation import find_boundaries

    out = rgb.copy()
    edge = find_boundaries(labels, mode="inner") & (labels > 0)
    out[edge] = _class_lut(labels, colours)[edge]
    return out


def _comparison_png(image_rgb: np.ndarray, pred: np.ndarray, ours: dict[int, tuple[int, int, int]],
                    gt: np.ndarray, theirs: dict[int, tuple[int, int, int]], path: Path, zoom: int,
                    titles: tuple[str, str, str]) -> Path:
    """Image, our classes and the reference side by side, ``zoom`` times enlarged, a title over each."""
    from PIL import Image, ImageDraw

    panels = [image_rgb, _panel(image_rgb, pred, ours), _panel(image_rgb, gt, theirs)]
    row = np.concatenate([np.pad(p, ((4, 4), (4, 4), (0, 0)), constant_values=255) for p in panels], axis=1)
    row = np.repeat(np.repeat(row, zoom, axis=0), zoom, axis=1)
    canvas = Image.new("RGB", (row.shape[1], row.shape[0] + 22), "white")
    canvas.paste(Image.fromarray(row), (0, 22))
    draw = ImageDraw.Draw(canvas)
    for k, title in enumerate(titles):
        draw.text((k * row.shape[1] // 3 + 6, 5), title, fill="black")
    return save_png(np.asarray(canvas), path)


_OURS_TITLE = "nclsm-scale: green AM, yellow NTM, blue EDGE, red FR, purple FAM, grey NF"


def _our_colours(table: pd.DataFrame) -> dict[int, tuple[int, int, int]]:
    return {int(f): FibreClass[str(c)].rgb for f, c in zip(table["fibre_id"], table["curation_class"], strict=True)}


def _reported(labels: np.ndarray, table: pd.DataFrame) -> np.ndarray:
    keep = table.loc[~table["curation_class"].isin(NOT_FIBRES), "fibre_id"].to_numpy(np.int64)
    lut = np.zeros(int(labels.max()) + 1, labels.dtype)
    lut[keep] = keep
    return lut[labels]


def _scores(pred: np.ndarray, gt: np.ndarray) -> dict[str, Any]:
    m = evaluate_instances(pred, gt)
    return {"n_gt": m.n_gt, "n_pred": m.n_pred, "f1_iou50": round(m.f1["0.5"], 4),
            "precision_iou50": round(m.precision["0.5"], 4), "recall_iou50": round(m.recall["0.5"], 4),
            "mean_matched_iou": round(m.mean_matched_iou, 4)}


def reliability(pred: np.ndarray, gt: np.ndarray, table: pd.DataFrame, theirs: pd.DataFrame,
                bins: tuple[float, ...] = (0.0, 0.8, 0.95, 1.0001)) -> list[dict[str, Any]]:
    """Per confidence bin: matched fibres, mean confidence, share whose class the annotators share.

    Over fibres matched at IoU 0.5 that we do not call EDGE (the annotators have no
    such class) and whose annotated class the slide can judge (not in ``not_judged``).
    """
    g_ids, p_ids, _ = matched_pairs(pred, gt)
    ours = table.set_index(table["fibre_id"].astype(np.int64)).loc[p_ids.astype(np.int64)]
    their_class = np.array([("AM" if r.analysable else "FAM" if r.fam else "NTM" if r.ntm else "FR" if r.fr else "")
                            for r in theirs.loc[g_ids.astype(np.int64)].itertuples()])
    cls = ours["curation_class"].astype(str).to_numpy()
    judged = np.array([c not in nj.split(";") for c, nj in zip(their_class, ours["not_judged"].astype(str),
                                                                  strict=True)])
    keep = (cls != "EDGE") & (their_class != "") & judged
    conf, right = ours["confidence"].to_numpy(np.float64)[keep], (cls == their_class)[keep]
    rows = []
    for lo, hi in zip(bins[:-1], bins[1:], strict=True):
        sel = (conf >= lo) & (conf < hi)
        if sel.any():
            rows.append({"bin": f"[{lo:.2f}, {min(hi, 1.0):.2f}]", "n": int(sel.sum()),
                         "mean_confidence": round(float(conf[sel].mean()), 3),
                         "accuracy": round(float(right[sel].mean()), 3)})
    return rows


def figure(data: Path, work: Path, client: Any, pixel_size_um: float, model: dict[str, Any]) -> dict[str, Any]:
    """The NCL-SM figure: fibres and the annotators' classes."""
    folder = data / "ncl-sm-figure-left"
    cfg = RunConfig.model_validate({"convert": {"pixel_size_um": pixel_size_um}, "model": model})
    labels, table, image = _run(folder / "image.png", work / "figure", cfg, client)
    gt = tifffile.imread(folder / "labels.tif").astype(np.uint32)
    classes = pd.read_csv(folder / "classes.csv").set_index("label")
    reasons = table["reasons"].astype(str).str.split(";")
    ours = pd.DataFrame({
        "analysable": table["curation_class"].eq("AM").to_numpy(),
        "ntm": reasons.map(lambda r: "NTM" in r).to_numpy(),
        "fam": reasons.map(lambda r: "FAM" in r).to_numpy(),
        "fr": reasons.map(lambda r: "FR" in r).to_numpy(),
    }, index=table["fibre_id"].astype(np.int64))
    theirs = classes[["analysable", "ntm", "fam", "fr"]].astype(bool)
    crop_cut = classes["cut_by_crop"].astype(bool)
    inside = ~classes["touches_image_border"].astype(bool) & ~crop_cut
    reported = _reported(labels, table)
    ours_reported = ours.loc[ours.index.isin(np.unique(reported))]
    not_judged = sorted({r for cell in table.get("not_judged", pd.Series([], dtype=str)).astype(str)
                         for r in cell.split(";") if r})
    out = {
        "image": "ncl-sm-figure-left", "pixel_size_um": pixel_size_um,
        "all_objects": _scores(labels, gt), "reported_fibres": _scores(reported, gt),
        "classes": class_scores(reported, gt, ours_reported, theirs),
        "classes_off_border": class_scores(reported, gt, ours_reported, theirs[inside]),
        "classes_not_crop_cut": class_scores(reported, gt, ours_reported, theirs[~crop_cut]),
        "class_counts": table["curation_class"].value_counts().to_dict(), "not_judged": not_judged,
        "reliability": reliability(reported, gt, table, theirs),
    }
    rgb = composite_rgb(image, {"membrane": 0, "mito": 1})
    gt_colours = {int(i): GT_RGB["analysable"] if r.analysable else GT_RGB["fam"] if r.fam
                  else GT_RGB["ntm"] if r.ntm else (128, 128, 128) for i, r in theirs.iterrows()}
    out["png"] = str(_comparison_png(rgb, labels, _our_colours(table), gt, gt_colours,
                                     RESULTS / "real_ncl-sm-figure-left.png", zoom=3,
                                     titles=("image (R membrane, G mito)", _OURS_TITLE,
                                             "annotators: green analysable, yellow NTM, purple FAM")))
    return out


def fibersight(data: Path, work: Path, client: Any, model: dict[str, Any]) -> dict[str, Any]:
    """The FiberSight human section: membrane-only segmentation and fibre types."""
    folder = data / "fibersight-human"
    cfg = RunConfig.model_validate({"convert": {"channels": ["MyHC I", "MyHC IIa", "MyHC IIx", "membrane"]},
                                    "model": model})
    labels, table, image = _run(folder / "skm_hs_cw.tif", work / "fibersight", cfg, client)
    gt = tifffile.imread(folder / "skm_hs_cw_labels.tif").astype(np.uint32)
    out: dict[str, Any] = {"image": "fibersight-human", "all_objects": _scores(labels, gt),
                           "reported_fibres": _scores(_reported(labels, table), gt),
                           "class_counts": table["curation_class"].value_counts().to_dict()}
    if "fibre_type" in table:
        out["fibre_types"] = table["fibre_type"].value_counts().to_dict()
    rgb = np.stack([composite_rgb(image[[3]], {"membrane": 0})[..., 0],
                    composite_rgb(image[[0]], {"membrane": 0})[..., 0],
                    composite_rgb(image[[1]], {"membrane": 0})[..., 0]], axis=-1)
    out["png"] = str(_comparison_png(rgb, labels, _our_colours(table), gt, {int(i): (255, 255, 255) for i in
                                                                            np.unique(gt[gt > 0])},
                                     RESULTS / "real_fibersight-human.png", zoom=1,
                                     titles=("R membrane, G MyHC I, B MyHC IIa", _OURS_TITLE,
                                             "reference labels (Cellpose-made)")))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--figure-pixel-size", type=float, default=3.6)
    ap.add_argument("--weights", default=None, help="weights file (default: bundled)")
    ap.add_argument("--cpu-path", default=None, help="the network's CPU path (model.cpu_path; default: the config's)")
    args = ap.parse_args()
    cfg = RunConfig.model_validate({"cluster": {"n_workers": args.workers}})
    model = {"weights": args.weights, **({"cpu_path": args.cpu_path} if args.cpu_path else {})}
    with tempfile.TemporaryDirectory() as tmp, open_client(cfg.cluster, echo=False) as client:
        results = [figure(args.data, Path(tmp), client, args.figure_pixel_size, model),
                   fibersight(args.data, Path(tmp), client, model)]
    emit({"bench": "real_images", "weights": args.weights or "bundled", "results": results})


if __name__ == "__main__":
    main()
