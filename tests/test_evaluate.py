"""Instance metrics on constructed cases with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

from nclsm_scale.errors import SlideReadError
from nclsm_scale.evaluate import evaluate_instances, read_labels


def _squares() -> np.ndarray:
    lab = np.zeros((60, 60), np.uint32)
    lab[5:25, 5:25] = 1
    lab[5:25, 30:50] = 2
    lab[35:55, 5:25] = 3
    lab[35:55, 30:50] = 4
    return lab


def test_identical_labels_score_one_up_to_renumbering():
    gt = _squares()
    pred = np.where(gt > 0, 10 - gt, 0).astype(np.uint16)
    m = evaluate_instances(pred, gt)
    assert m.f1 == {"0.5": 1.0, "0.75": 1.0, "0.9": 1.0}
    assert m.mean_matched_iou == 1.0 and m.splits == 0 and m.merges == 0


def test_one_split():
    gt = _squares()
    pred = gt.copy()
    pred[5:25, 18:25] = 9  # fibre 1 cut into 13 + 7 columns
    m = evaluate_instances(pred, gt)
    assert m.splits == 1 and m.merges == 0
    assert m.n_pred == 5
    assert m.tp["0.5"] == 4 and m.tp["0.75"] == 3  # the larger part has IoU 13/20


def test_one_merge():
    gt = _squares()
    pred = gt.copy()
    pred[5:25, 25:30] = 1
    pred[pred == 2] = 1  # fibres 1 and 2 joined
    m = evaluate_instances(pred, gt)
    assert m.merges == 1 and m.merged_gt == 2 and m.splits == 0
    assert (
        m.tp["0.5"] == 2 and m.recall["0.5"] == 0.5 and m.precision["0.5"] == pytest.approx(2 / 3)
    )


def test_shifted_masks_have_the_computed_iou():
    gt = _squares()
    pred = np.roll(gt, 4, axis=1)  # 20x20 squares shifted by 4 px: overlap 20*16
    m = evaluate_instances(pred, gt)
    iou = (20 * 16) / (2 * 400 - 20 * 16)
    assert m.mean_matched_iou == pytest.approx(iou)
    assert m.f1["0.5"] == 1.0 and m.f1["0.75"] == 0.0 and m.f1["0.9"] == 0.0


def test_missing_and_extra_instances():
    gt = _squares()
    pred = gt.copy()
    pred[pred == 4] = 0
    pred[27:33, 27:33] = 7
    m = evaluate_instances(pred, gt)
    assert m.tp["0.5"] == 3 and m.n_gt == 4 and m.n_pred == 4
    assert m.f1["0.5"] == pytest.approx(0.75)


def test_read_labels_from_tiff(tmp_path):
    path = tmp_path / "l.tif"
    tifffile.imwrite(path, _squares())
    assert np.array_equal(read_labels(path), _squares())
    with pytest.raises(SlideReadError, match="no such"):
        read_labels(tmp_path / "missing.tif")
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff")
    with pytest.raises(SlideReadError, match="cannot read"):
        read_labels(bad)


def test_evaluate_command_prints_json(tmp_path, capsys):
    import json

    from nclsm_scale.cli.app import main

    gt = _squares()
    tifffile.imwrite(tmp_path / "gt.tif", gt)
    tifffile.imwrite(tmp_path / "pred.tif", np.roll(gt, 4, axis=1))
    tifffile.imwrite(tmp_path / "pred.ome.tif", np.roll(gt, 4, axis=1), ome=True,
                     metadata={"axes": "YX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
    assert main(["evaluate", str(tmp_path / "pred.tif"), str(tmp_path / "gt.tif"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_gt"] == 4 and out["f1"]["0.5"] == 1.0
    assert out["level"] == 0 and out["pixel_size_um"] is None
    assert main(["evaluate", str(tmp_path / "pred.ome.tif"), str(tmp_path / "gt.tif")]) == 0
    out = capsys.readouterr().out
    assert "mean IoU of matched fibres" in out
    assert out.splitlines()[0] == "scored at level 0, 60 x 60 px: PRED 0.5 um/px, GT pixel size not recorded"
    tifffile.imwrite(tmp_path / "small.tif", gt[:30])
    assert main(["evaluate", str(tmp_path / "small.tif"), str(tmp_path / "gt.tif")]) == 1


def test_read_labels_from_ome_zarr_label_group(tmp_path):
    import zarr

    root = zarr.open_group(str(tmp_path / "s.ome.zarr"), mode="w")
    labels = root.create_group("labels")
    labels.attrs["ome"] = {"version": "0.5", "labels": ["fibres"]}
    fibres = labels.create_group("fibres")
    fibres.attrs["ome"] = {"version": "0.5", "multiscales": [{"datasets": [{"path": "0"}]}]}
    arr = fibres.create_array("0", shape=(1, 60, 60), dtype="uint32")
    arr[0] = _squares()
    assert np.array_equal(read_labels(tmp_path / "s.ome.zarr"), _squares())
    assert np.array_equal(read_labels(tmp_path / "s.ome.zarr" / "labels" / "fibres"), _squares())


def test_class_scores_count_flags_over_matched_fibres():
    from nclsm_scale.evaluate import class_scores, matched_pairs

    gt = np.zeros((20, 20), np.uint32)
    gt[0:5, 0:5], gt[10:15, 0:5], gt[0:5, 10:15] = 1, 2, 3
    pred = np.zeros_like(gt)
    pred[0:5, 0:5], pred[10:15, 0:4], pred[15:20, 15:20] = 7, 8, 9  # 9 matches nothing
    g, p, iou = matched_pairs(pred, gt)
    assert g.tolist() == [1, 2] and p.tolist() == [7, 8] and iou.tolist() == [1.0, 0.8]
    gt_flags = pd.DataFrame({"ntm": [True, True, True], "am": [False, False, False]}, index=[1, 2, 3])
    pred_flags = pd.DataFrame({"ntm": [True, False, True], "other": [True, True, True]}, index=[7, 8, 9])
    s = class_scores(pred, gt, pred_flags, gt_flags)
    assert set(s) == {"ntm"}
    assert s["ntm"]["tp"] == 1 and s["ntm"]["precision"] == 0.5 and s["ntm"]["recall"] == 1 / 3


def test_class_agreement_scores_the_classes_the_truth_knows_over_matched_fibres():
    from nclsm_scale.evaluate import class_agreement

    gt = np.zeros((20, 20), np.uint32)
    gt[0:5, 0:5], gt[10:15, 0:5], gt[0:5, 10:15] = 1, 2, 3
    pred = np.zeros_like(gt)
    pred[0:5, 0:5], pred[10:15, 0:5], pred[0:5, 10:15], pred[15:20, 15:20] = 7, 8, 9, 10
    truth = pd.Series(pd.Categorical(["AM", "NTM", "AM"], categories=["AM", "NTM", "FAM", "FR", "DEBRIS"]),
                      index=[1, 2, 3])
    ours = pd.Series({7: "AM", 8: "FR", 9: "EDGE", 10: "AM"})  # 9: not a class of the truth; 10 matches nothing
    r = class_agreement(pred, gt, ours, truth)
    assert (r.n_matched, r.n_scored, r.agreement) == (3, 2, 0.5)
    assert r.classes["AM"]["tp"] == 1 and r.classes["AM"]["precision"] == 0.5 and r.classes["AM"]["recall"] == 0.5
    assert r.classes["NTM"]["recall"] == 0.0 and r.classes["FR"]["n_called"] == 1
