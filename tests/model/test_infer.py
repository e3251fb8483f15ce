"""Tiled inference: any region of the maps equals the whole-slide maps bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nclsm_scale.config import ModelConfig
from nclsm_scale.errors import ConfigError, ModelError
from nclsm_scale.model.card import BUNDLED_WEIGHTS
from nclsm_scale.model.infer import CPU_PATHS, MAP_CHANNELS, Engine, load_engine, resolve_cpu_path


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
    a = Engine(tiny_net, device="cpu", batch_size=1, window_px=64, margin_px=16, cpu_path="eager")
    b = Engine(tiny_net, device="cpu", batch_size=5, window_px=64, margin_px=16, cpu_path="eager")
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


@pytest.fixture(scope="module", params=CPU_PATHS)
def path_engine(request, tiny_net):
    """An engine on each CPU inference path (the compiled one is built once for the module)."""
    return Engine(tiny_net, device="cpu", batch_size=3, window_px=64, margin_px=16, cpu_path=request.param)


def test_every_cpu_path_gives_region_independent_maps(path_engine, slide):
    read, _ = _reader(slide)
    whole = path_engine.predict_region(read, slide.shape[1:], 0, 0, *slide.shape[1:])
    for y0, x0, y1, x1 in [(5, 7, 61, 90), (150, 200, 203, 251), (31, 31, 33, 33), (100, 0, 203, 17)]:
        part = path_engine.predict_region(read, slide.shape[1:], y0, x0, y1, x1)
        assert np.array_equal(part, whole[:, y0:y1, x0:x1])


def test_every_cpu_path_computes_a_window_alike_whatever_shares_its_batch(path_engine, slide):
    read, _ = _reader(slide)
    windows = [(i, j) for i in range(5) for j in range(6)]
    together = path_engine.predict_windows(read, slide.shape[1:], windows)
    order = np.random.default_rng(1).permutation(len(windows))
    shuffled = path_engine.predict_windows(read, slide.shape[1:], [windows[k] for k in order])
    assert np.array_equal(shuffled, together[order])
    for k in (0, 7, 29):  # alone: the rest of its batch is zero padding
        assert np.array_equal(path_engine.predict_windows(read, slide.shape[1:], [windows[k]])[0], together[k])


def test_every_cpu_path_matches_the_eager_network(path_engine, tiny_net, slide):
    eager = Engine(tiny_net, device="cpu", batch_size=3, window_px=64, margin_px=16, cpu_path="eager")
    diff = np.abs(path_engine.predict_image(slide) - eager.predict_image(slide)).max()
    assert diff <= (2e-2 if path_engine.path == "bf16" else 1e-5)


@pytest.mark.parametrize(("bf16", "amx", "path"), [(True, False, "bf16"), (False, True, "bf16"),
                                                    (False, False, "fused")])
def test_auto_runs_bf16_only_on_cpus_with_native_bfloat16(monkeypatch, bf16, amx, path):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert resolve_cpu_path("auto") == path
    assert resolve_cpu_path("compile") == "compile"


def test_compile_without_a_cpp_compiler_names_the_way_out(tiny_net):
    import torch._inductor.config as inductor

    with inductor.patch({"cpp.cxx": ("/nonexistent/c++",)}), pytest.raises(ModelError, match="cpu_path: fused"):
        Engine(tiny_net, device="cpu", batch_size=2, window_px=64, margin_px=16, cpu_path="compile")


def test_unknown_cpu_path_is_a_config_error(tiny_net):
    with pytest.raises(ConfigError, match="cpu_path"):
        Engine(tiny_net, device="cpu", window_px=64, margin_px=16, cpu_path="int8")


def test_load_engine_takes_the_cpu_path_from_the_config(tmp_path, tiny_net):
    from nclsm_scale.model.weights import save_net

    path = save_net(tiny_net, tmp_path / "w.pt", margin_px=16)
    assert load_engine(ModelConfig(weights=str(path), device="cpu", window_px=64)).path == resolve_cpu_path("auto")
    assert load_engine(ModelConfig(weights=str(path), device="cpu", window_px=64, cpu_path="eager")).path == "eager"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU check: needs a CUDA device")
def test_cuda_path_gives_region_independent_maps(tiny_net, slide):
    engine = Engine(tiny_net, device="cuda", batch_size=3, window_px=64, margin_px=16)
    read, _ = _reader(slide)
    whole = engine.predict_region(read, slide.shape[1:], 0, 0, *slide.shape[1:])
    assert engine.path == "channels_last" and engine.amp
    part = engine.predict_region(read, slide.shape[1:], 5, 7, 61, 90)
    assert np.array_equal(part, whole[:, 5:61, 7:90])
