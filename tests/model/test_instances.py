"""Instance extraction from maps and the classical baseline."""

from __future__ import annotations

import numpy as np

from nclsm_scale.evaluate import evaluate_instances
from nclsm_scale.model.baseline import baseline_instances
from nclsm_scale.model.instances import extract_instances
from nclsm_scale.model.targets import fibre_targets, touching_pixels


def _touching_squares() -> np.ndarray:
    lab = np.zeros((50, 80), np.uint32)
    lab[5:45, 5:40] = 1
    lab[5:45, 40:75] = 2  # shares a border with fibre 1
    return lab


def test_targets_peak_at_one_inside_each_fibre():
    lab = _touching_squares()
    t = fibre_targets(lab)
    assert t.shape == (3, 50, 80) and t.dtype == np.float32
    assert np.array_equal(t[0] > 0, lab > 0)
    for i in (1, 2):
        assert np.isclose(t[2][lab == i].max(), 1.0)
    assert t[1][5, 20] == 1 and t[1][20, 39] == 1 and t[1][20, 40] == 1 and t[1][20, 20] == 0
    assert touching_pixels(lab)[20, 39] and not touching_pixels(lab)[20, 4]


def test_perfect_maps_give_back_the_instances():
    lab = _touching_squares()
    pred = extract_instances(fibre_targets(lab))
    m = evaluate_instances(pred, lab)
    assert m.f1["0.9"] == 1.0 and m.mean_matched_iou == 1.0


def test_empty_maps_give_no_instances():
    assert not extract_instances(np.zeros((3, 20, 20), np.float32)).any()


def test_baseline_runs_and_finds_fibres(make_toy):
    image, labels = make_toy((200, 200), seed=1)
    pred = baseline_instances(image)
    assert pred.dtype == np.uint32 and pred.shape == labels.shape
    ids = np.unique(pred[pred > 0])
    assert np.array_equal(ids, np.arange(1, ids.size + 1))
    m = evaluate_instances(pred, labels)
    assert m.tp["0.5"] >= labels.max() // 2 and m.merges == 0
