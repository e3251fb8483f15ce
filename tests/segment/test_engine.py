"""The network as map source: region-independent maps, and the Dask pipeline exact end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_fixtures import voronoi_fibres
from test_driver import make_slide

from nclsm_scale.config import ModelConfig, RunConfig
from nclsm_scale.model.infer import load_engine
from nclsm_scale.model.net import FibreNet
from nclsm_scale.model.weights import save_net
from nclsm_scale.normalise import slide_norm
from nclsm_scale.segment.driver import network_tile_px, segment_slide
from nclsm_scale.segment.engine import EngineMaps, engine_source
from nclsm_scale.segment.maps import ArrayMaps
from nclsm_scale.segment.plane import segment_plane
from nclsm_scale.segment.seeds import SegmentParams
from nclsm_scale.slide import open_slide


@pytest.fixture(scope="module")
def engine_setup(tmp_path_factory):
    """A slide, a small random network's weights and the whole-slide maps computed in-process."""
    root = tmp_path_factory.mktemp("eng")
    torch.manual_seed(0)
    weights = save_net(FibreNet(), root / "net.pt", margin_px=32)
    model = ModelConfig(weights=str(weights), device="cpu", window_px=256, batch_size=2)
    make_slide(root / "E.ome.zarr", voronoi_fibres((448, 512), 60, 2, seed=4))
    slide = open_slide(root / "E.ome.zarr")
    source = EngineMaps(slide.path, 0, (448, 512), [0, 1], slide_norm(slide), engine=load_engine(model))
    return root / "E.ome.zarr", model, source, source.maps(0, 0, 448, 512)


@pytest.mark.parametrize("region", [(0, 0, 100, 130), (-37, 200, 90, 600), (300, -5, 460, 333)])
def test_engine_maps_do_not_depend_on_the_region(engine_setup, region) -> None:
    _, _, source, whole = engine_setup
    y0, x0, y1, x1 = region
    padded = np.zeros((3, 448 + 200, 512 + 200), dtype=np.float32)
    padded[:, 100:548, 100:612] = whole
    assert np.array_equal(source.maps(*region), padded[:, y0 + 100 : y1 + 100, x0 + 100 : x1 + 100])


def test_segment_with_the_network_on_dask_equals_single_block_run(engine_setup, client) -> None:
    path, model, _, whole = engine_setup
    cfg = RunConfig.model_validate({"model": model.model_dump(), "segment": {"block_px": 256}})
    res = segment_slide(path, cfg, client)
    params = SegmentParams.from_config(cfg.segment, 1.0, ("foreground", "boundary", "distance"))
    ref = segment_plane(ArrayMaps(whole.astype(np.float16).astype(np.float32)), params, 1024, 150)
    got = np.asarray(open_slide(path).label_array("fibres", 0)[0])
    assert res.n_fibres == ref.n_fibres
    assert np.array_equal(got, ref.labels)


@pytest.mark.parametrize(("stride", "block"), [(192, 256), (448, 1024), (448, 2048), (100, 4096), (1, 2048)])
def test_network_tiles_hold_whole_windows_in_full_batches(stride, block) -> None:
    tile, chunk = network_tile_px(stride, block)
    assert chunk % stride == 0 and chunk >= 256
    assert tile % chunk == 0 and (tile // stride) % 2 == 0  # windows per tile: a multiple of 4
    assert tile - chunk <= block or tile == 2 * chunk  # near the block size, else the smallest tile


def test_engine_source_reports_the_workers_window_stride(engine_setup, client) -> None:
    path, model, _, _ = engine_setup
    source, _ = engine_source(str(path), 0, model, client)
    assert source.stride_px == load_engine(model).stride_px == 256 - 2 * 32
