"""fill_label_pyramid: every level from the source level, in-process and on a LocalCluster."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from nclsm_scale.cluster import fan_out
from nclsm_scale.io.labels import fill_label_pyramid
from nclsm_scale.io.ome_zarr import create_image, create_labels
from nclsm_scale.io.pyramid import downsample_labels, upsample_labels


@pytest.mark.parametrize("use_client", [False, True])
def test_fill_label_pyramid_from_level_1(tmp_path, request, use_client):
    path = tmp_path / "s.ome.zarr"
    create_image(path, (1, 1500, 1100), np.uint8, pixel_size_um=0.5, channel_names=["membrane"],
                 chunk_px=128, shard_px=512, min_level_px=100)
    labels = create_labels(path, "fibres")
    src = np.random.default_rng(3).integers(0, 9, labels[1].shape, dtype=np.uint32)
    labels[1][:] = src
    run = partial(fan_out, request.getfixturevalue("client"), desc="labels") if use_client else None
    fill_label_pyramid(path, "fibres", 1, run=run)
    np.testing.assert_array_equal(labels[0][:], upsample_labels(src, 2, labels[0].shape[-2:]))
    expected = src
    for arr in labels[2:]:
        expected = downsample_labels(expected)
        np.testing.assert_array_equal(arr[:], expected)
