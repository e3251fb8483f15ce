"""The network as map source: region-independent maps, and the Dask pipeline exact end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_fixtures import voronoi_fibres
from test_driver import make_slide

from nclsm_scale.config import ModelConfig, RunConfig
from nclsm_scale.grid import BlockGrid
from nclsm_scale.model.infer import load_engine
from nclsm_scale.model.net import FibreNet
from nclsm_scale.model.weights import save_net
from nclsm_scale.normalise import slide_norm
from nclsm_scale.segment.driver import chunk_windows, network_chunk_px, network_tasks, segment_slide
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
    engine = load_engine(model)
    source = EngineMaps(slide.path, 0, (448, 512), [0, 1], slide_norm(slide), engine=engine,
                        stride_px=engine.stride_px)
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
    cfg = RunConfig.model_validate({"model": model.model_dump(), "grid": {"block_px": 256}})
    res = segment_slide(path, cfg, client)
    params = SegmentParams.from_config(cfg.segment, 1.0, ("foreground", "boundary", "distance"))
    ref = segment_plane(ArrayMaps(whole.astype(np.float16).astype(np.float32)), params, 1024, 150)
    got = np.asarray(open_slide(path).label_array("fibres", 0)[0])
    assert res.n_fibres == ref.n_fibres
    assert np.array_equal(got, ref.labels)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU check: needs a CUDA device")
def test_cuda_segment_on_dask_is_bit_identical_across_block_sizes(engine_setup, client, tmp_path) -> None:
    """The network on the CUDA device in the workers: the same labels for every block size, = one block."""
    path, model, _, _ = engine_setup
    cuda = model.model_copy(update={"device": "cuda"})
    slide = open_slide(path)
    engine = load_engine(cuda)
    whole = EngineMaps(slide.path, 0, (448, 512), [0, 1], slide_norm(slide), engine=engine,
                       stride_px=engine.stride_px).maps(0, 0, 448, 512)
    params = SegmentParams.from_config(RunConfig().segment, 1.0, ("foreground", "boundary", "distance"))
    ref = segment_plane(ArrayMaps(whole.astype(np.float16).astype(np.float32)), params, 1024, 150)
    for block_px in (256, 512):
        copy = tmp_path / f"G{block_px}.ome.zarr"
        make_slide(copy, voronoi_fibres((448, 512), 60, 2, seed=4))
        cfg = RunConfig.model_validate({"model": cuda.model_dump(), "grid": {"block_px": block_px}})
        res = segment_slide(copy, cfg, client)
        got = np.asarray(open_slide(copy).label_array("fibres", 0)[0])
        assert res.n_fibres == ref.n_fibres
        assert np.array_equal(got, ref.labels), f"block {block_px}: labels differ from the single-block run"


@pytest.mark.parametrize(("shape", "stride", "batch", "block"),
                         [((4096, 4096), 960, 4, 1024), ((4096, 4096), 960, 4, 4096), ((5000, 3000), 192, 2, 256),
                          ((700, 9000), 448, 4, 2048), ((300, 300), 100, 3, 4096)])
def test_network_tasks_split_the_chunks_into_full_batches(shape, stride, batch, block) -> None:
    chunk = network_chunk_px(stride)
    assert chunk % stride == 0 and chunk >= 256 and chunk - stride < 256
    tasks = network_tasks(shape, stride, chunk, batch, block)
    chunks = [c for t in tasks for c in t]
    assert chunks == BlockGrid(shape, chunk).blocks()  # every chunk once, in raster order
    windows = [w for c in chunks for w in chunk_windows(c, stride)]
    ny, nx = -(-shape[0] // stride), -(-shape[1] // stride)
    assert sorted(windows) == [(i, j) for i in range(ny) for j in range(nx)]  # every window once
    per_task = batch * max(1, round((block / stride) ** 2 / batch))
    counts = [sum(len(chunk_windows(c, stride)) for c in t) for t in tasks]
    assert all(n >= per_task for n in counts[:-1])
    if chunk == stride:  # one window per chunk: every task but the last is exactly full
        assert all(n == per_task for n in counts[:-1]) and 0 < counts[-1] <= per_task


@pytest.mark.parametrize("windows", [
    [(0, 2), (1, 0), (1, 1), (2, 2), (0, 0)],  # runs, gaps and a batch across rows
    [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1)],  # a rectangle, then a longer row
])
def test_engine_window_maps_are_the_region_maps(engine_setup, windows) -> None:
    _, _, source, whole = engine_setup
    s = source.stride_px
    for (i, j), maps in zip(windows, source.window_maps(windows), strict=True):
        h, w = min(s, 448 - i * s), min(s, 512 - j * s)
        assert np.array_equal(maps[:, :h, :w], whole[:, i * s : i * s + h, j * s : j * s + w])


def test_engine_source_reports_the_workers_window_stride(engine_setup, client) -> None:
    path, model, _, _ = engine_setup
    source, _ = engine_source(open_slide(path), 0, model, client)
    assert source.stride_px == load_engine(model).stride_px == 256 - 2 * 32


def test_a_membrane_only_slide_gives_the_network_zeros_for_mito(engine_setup, tmp_path, client) -> None:
    """Membrane plus fibre-type channels, no mito: segmentation needs only the membrane."""
    from nclsm_scale.errors import SlideReadError
    from nclsm_scale.io.ome_zarr import create_image
    from nclsm_scale.io.readers import assign_roles

    path, model, _, _ = engine_setup
    image = np.asarray(open_slide(path).array(0)[...])
    only = tmp_path / "M.ome.zarr"
    (arr,) = create_image(only, (2, 448, 512), image.dtype, pixel_size_um=1.0, channel_names=["MyHC I", "laminin"],
                          chunk_px=256, min_level_px=512, roles=assign_roles(["MyHC I", "laminin"]))
    arr[...] = image[::-1]  # membrane second, a MyHC channel first
    slide = open_slide(only)
    assert slide.roles == {"membrane": 1, "myh1": 0}
    source, _ = engine_source(slide, 0, model, client)
    assert source.channel_index == [1, None]
    local = EngineMaps(slide.path, 0, (448, 512), source.channel_index, slide_norm(slide), engine=load_engine(model),
                       stride_px=source.stride_px)
    assert local.maps(0, 0, 448, 512).shape == (3, 448, 512)
    block = local._read(10, 20, 74, 100)
    norm = slide_norm(slide)
    expected = (image[0, 10:74, 20:100].astype(np.float32) - norm.lo[1]) / np.float32(norm.hi[1] - norm.lo[1])
    assert np.allclose(block[0], expected) and not block[1].any()
    nameless = tmp_path / "N.ome.zarr"
    (arr,) = create_image(nameless, (2, 448, 512), image.dtype, pixel_size_um=1.0, channel_names=["a", "b"],
                          chunk_px=256, min_level_px=512)
    arr[...] = image
    with pytest.raises(SlideReadError, match="no channel has the role 'membrane'"):
        engine_source(open_slide(nameless), 0, model, client)
