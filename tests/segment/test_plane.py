"""Chunk invariance: blocked runs equal the single-block run for every block size, offset and order."""

from __future__ import annotations

import numpy as np
import pytest
from segment_fixtures import same_partition

from nclsm_scale.segment.maps import ArrayMaps
from nclsm_scale.segment.plane import segment_plane
from nclsm_scale.segment.seeds import SegmentParams

HALO_PX = 150


@pytest.fixture(scope="module")
def synth_reference(synth_maps: ArrayMaps, params: SegmentParams):
    """Single-block run of the synthetic section."""
    return segment_plane(synth_maps, params, 4096, HALO_PX)


@pytest.mark.parametrize(
    ("block_px", "offset_yx", "order_seed"),
    [(256, (97, 201), 1), (512, (0, 0), None), (1024, (700, 129), 3), (2048, (1100, 999), None),
     pytest.param(256, (0, 0), None, marks=pytest.mark.slow),
     pytest.param(512, (311, 43), 2, marks=pytest.mark.slow),
     pytest.param(1024, (0, 0), 5, marks=pytest.mark.slow),
     pytest.param(2048, (500, 1500), 4, marks=pytest.mark.slow)],
)
def test_synthetic_blocked_run_equals_single_block_run(
    synth_maps, params, synth_reference, block_px, offset_yx, order_seed
) -> None:
    got = segment_plane(synth_maps, params, block_px, HALO_PX, offset_yx=offset_yx, order_seed=order_seed)
    assert got.n_fibres == synth_reference.n_fibres > 500
    assert same_partition(got.labels, synth_reference.labels)
    assert np.array_equal(got.labels, synth_reference.labels)  # IDs are global ranks: equal values


def test_synthetic_segmentation_recovers_the_ground_truth(synth_labels, synth_reference) -> None:
    gt, pred = synth_labels.astype(np.int64), synth_reference.labels.astype(np.int64)
    both = (gt > 0) & (pred > 0)
    pairs, inter = np.unique(gt[both] << 32 | pred[both], return_counts=True)
    area_gt, area_pred = np.bincount(gt.ravel()), np.bincount(pred.ravel())
    g, p = pairs >> 32, pairs & 0xFFFFFFFF
    iou = inter / (area_gt[g] + area_pred[p] - inter)
    matched = np.unique(g[iou > 0.8]).size
    assert matched >= 0.98 * (np.unique(gt).size - 1)


@pytest.mark.parametrize("name", ["S11", "S60"])
@pytest.mark.parametrize(
    ("block_px", "offset_yx"),
    [(256, (31, 170)), pytest.param(512, (0, 0), marks=pytest.mark.slow),
     pytest.param(1024, (400, 77), marks=pytest.mark.slow)],
)
def test_real_geometry_blocked_run_equals_single_block_run(nclsm_maps, params, name, block_px, offset_yx):
    src = nclsm_maps[name]
    ref = segment_plane(src, params, 4096, HALO_PX)
    got = segment_plane(src, params, block_px, HALO_PX, offset_yx=offset_yx, order_seed=block_px)
    assert ref.n_fibres > 20
    assert same_partition(got.labels, ref.labels)
