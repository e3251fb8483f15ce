"""Tiled inference: any region of the maps equals the whole-slide maps bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from nclsm_scale.config import ModelConfig
from nclsm_scale.errors import ConfigError
from nclsm_scale.model.card import BUNDLED_WEIGHTS
from nclsm_scale.model.infer import MAP_CHANNELS, Engine, load_engine


@pytest.fixture(scope="module")
def slide(make_toy):
    image, _ = make_toy((203, 251), seed=3)
    return image


@pytest.fixture(scope="module")
def engine(tiny_net):
    return Engine(tiny_net, device="cpu", batch_size=3, window_px=64, margin_px=16)


def _reader(image):
    calls = []

    def read(y0, x0, y1, x1):
        assert 0 <= y0 < y1 <= image.shape[1] and 0 <= x0 < x1 <= image.shape[2]
        calls.append((y0, x0, y1, x1))
        return image[:, y0:y1, x0:x1].copy()

    return read, calls


def test_engine_lattice_geometry(engine):
    assert engine.margin_px == 16 and engine.stride_px == 32
    assert engine.stride_px % engine.factor == 0


@pytest.mark.parametrize(
    "region",
    [
        (0, 0, 203, 251),  # whole slide
        (5, 7, 61, 90),  # unaligned, interior
        (32, 64, 96, 128),  # aligned to the lattice
        (150, 200, 203, 251),  # touching bottom-right edges
        (0, 100, 1, 101),  # one pixel on the top edge
        (31, 31, 33, 33),  # straddling a lattice corner
        (100, 0, 203, 17),  # left edge, bottom edge
    ],
)
def test_region_equals_whole_slide_bitwise(engine, slide, region):
    read, _ = _reader(slide)
    whole = engine.predict_region(read, slide.shape[1:], 0, 0, *slide.shape[1:])
    y0, x0, y1, x1 = region
    part = engine.predict_region(read, slide.shape[1:], *region)
    assert part.dtype == np.float32 and part.shape == (len(MAP_CHANNELS), y1 - y0, x1 - x0)
    assert np.array_equal(part, whole[:, y0:y1, x0:x1])


def test_batch_size_does_not_change_values(tiny_net, slide):
    read, _ = _reader(slide)
    a = Engine(tiny_net, device="cpu", batch_size=1, window_px=64, margin_px=16)
    b = Engine(tiny_net, device="cpu", batch_size=5, window_px=64, margin_px=16)
    shape = slide.shape[1:]
    assert np.array_equal(
        a.predict_region(read, shape, 10, 20, 150, 170),
        b.predict_region(read, shape, 10, 20, 150, 170),
    )


def test_maps_are_probabilities(engine, slide):
    maps = engine.predict_image(slide)
    assert np.all((maps >= 0) & (maps <= 1))


def test_window_must_fit_margin_and_factor(tiny_net):
    with pytest.raises(ConfigError, match="multiple"):
        Engine(tiny_net, device="cpu", window_px=60, margin_px=16)
    with pytest.raises(ConfigError, match="no valid centre"):
        Engine(tiny_net, device="cpu", window_px=32, margin_px=16)


def test_region_outside_slide_is_rejected(engine, slide):
    read, _ = _reader(slide)
    with pytest.raises(ValueError, match="outside"):
        engine.predict_region(read, slide.shape[1:], 0, 0, 300, 10)


def test_load_engine_uses_weights_margin(tmp_path, tiny_net):
    from nclsm_scale.model.weights import save_net

    path = save_net(tiny_net, tmp_path / "w.pt", margin_px=24)
    engine = load_engine(ModelConfig(weights=str(path), device="cpu", window_px=128))
    assert engine.margin_px == 24 and engine.stride_px == 80
    engine = load_engine(ModelConfig(weights=str(path), device="cpu", window_px=128, margin_px=8))
    assert engine.margin_px == 8


@pytest.mark.slow
@pytest.mark.skipif(not BUNDLED_WEIGHTS.is_file(), reason="bundled weights not built yet")
def test_bundled_engine_regions_equal_whole_slide(make_toy):
    engine = load_engine(ModelConfig(device="cpu", window_px=512, batch_size=2))
    image, _ = make_toy((200, 380), seed=9)
    read, _ = _reader(image)
    whole = engine.predict_region(read, image.shape[1:], 0, 0, *image.shape[1:])
    assert len(engine.window_origins(image.shape[1:], 0, 0, *image.shape[1:])) == 2
    for y0, x0, y1, x1 in [(13, 101, 190, 379), (0, 0, 77, 300), (199, 330, 200, 380)]:
        part = engine.predict_region(read, image.shape[1:], y0, x0, y1, x1)
        assert np.array_equal(part, whole[:, y0:y1, x0:x1])
