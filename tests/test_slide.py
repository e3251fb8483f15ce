"""open_slide / Slide: levels, pixel sizes, padded reads, level choice, errors."""

from __future__ import annotations

import numpy as np
import pytest

from nclsm_scale.errors import SlideReadError
from nclsm_scale.io.ome_zarr import create_image, create_labels
from nclsm_scale.slide import open_slide


@pytest.fixture()
def store(tmp_path):
    path = tmp_path / "S1.ome.zarr"
    arrays = create_image(path, (2, 900, 700), np.uint16, pixel_size_um=0.5, channel_names=["lam", "vdac"],
                          chunk_px=128, min_level_px=256, roles={"membrane": 0, "mito": 1},
                          extra_attrs={"slide_id": "S1"})
    arrays[0][:] = np.arange(2 * 900 * 700, dtype=np.uint16).reshape(2, 900, 700)
    return path


def test_open_slide_levels_and_metadata(store):
    slide = open_slide(store)
    assert slide.slide_id == "S1" and slide.channel_names == ("lam", "vdac")
    assert slide.roles == {"membrane": 0, "mito": 1} and slide.pixel_size_known
    assert [lv.shape for lv in slide.levels] == [(2, 900, 700), (2, 450, 350), (2, 225, 175)]
    assert [lv.pixel_size_um for lv in slide.levels] == [(0.5, 0.5), (1.0, 1.0), (2.0, 2.0)]
    assert slide.levels[0].chunks == (1, 128, 128) and slide.complete is False
    assert slide.level_nearest(1.1) == 1 and slide.level_nearest(0.1) == 0 and slide.level_nearest(50) == 2


def test_read_zero_pads_outside(store):
    slide = open_slide(store)
    full = slide.array(0)[:]
    block = slide.read(0, -3, 690, 5, 710)
    assert block.shape == (2, 8, 20)
    np.testing.assert_array_equal(block[:, 3:, :10], full[:, :5, 690:700])
    assert not block[:, :3].any() and not block[:, :, 10:].any()
    assert slide.read(0, 2000, 2000, 2010, 2010).shape == (2, 10, 10)


def test_labels_listed_and_readable(store):
    create_labels(store, "fibres")
    slide = open_slide(store)
    assert slide.labels == ("fibres",)
    assert slide.label_array("fibres", 1).shape == (1, 450, 350)


def test_unknown_pixel_size_refuses_level_choice(tmp_path):
    path = tmp_path / "u.ome.zarr"
    create_image(path, (1, 300, 300), np.uint8, pixel_size_um=None, channel_names=["a"], min_level_px=100)
    slide = open_slide(path)
    assert not slide.pixel_size_known and slide.levels[0].pixel_size_um is None
    with pytest.raises(SlideReadError, match="pixel size of this slide is unknown"):
        slide.level_nearest(1.0)


def test_open_errors_name_the_path(tmp_path):
    with pytest.raises(SlideReadError, match="missing.ome.zarr"):
        open_slide(tmp_path / "missing.ome.zarr")
