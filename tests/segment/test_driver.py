"""The Dask driver on a real LocalCluster: labels equal the in-process reference; resume by block."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from segment_fixtures import same_partition

from nclsm_scale.config import RunConfig
from nclsm_scale.errors import SlideRefusedError
from nclsm_scale.io.ome_zarr import create_image
from nclsm_scale.layout import work_dir
from nclsm_scale.segment.driver import BLOCK_BYTES_PER_PX, check_memory, plan_segmentation, segment_slide
from nclsm_scale.segment.maps import maps_from_labels, write_maps
from nclsm_scale.segment.plane import segment_plane
from nclsm_scale.segment.seeds import SegmentParams
from nclsm_scale.slide import open_slide


def make_slide(path, labels: np.ndarray) -> None:
    """A 1 um/px two-channel slide whose membrane and mito channels follow ``labels``."""
    maps = maps_from_labels(labels, seed=9, noise=0.0, blur_px=1.0)
    image = np.stack([maps[1] * 3000 + 200, (labels > 0) * 1500.0 + 100]).astype(np.uint16)
    image[:, :, -200:] = 0  # no tissue on the right: the region mask must see it
    arrays = create_image(path, image.shape, np.uint16, pixel_size_um=1.0, channel_names=["dys", "vdac"],
                          chunk_px=256, shard_px=0, min_level_px=400, roles={"membrane": 0, "mito": 1})
    for level, arr in enumerate(arrays):
        f = 2**level
        arr[...] = image[:, ::f, ::f][:, : arr.shape[1], : arr.shape[2]]
    group = zarr.open_group(str(path), mode="r+")
    attrs = dict(group.attrs)
    attrs["nclsm"] = {**attrs["nclsm"], "complete": True}
    group.attrs.update(attrs)


@pytest.fixture(scope="module")
def slide(tmp_path_factory, synth_labels, synth_maps):
    """A slide at 1 um/px, its stored maps and the reference labels of a single-block run."""
    root = tmp_path_factory.mktemp("seg")
    labels = synth_labels[:1024, :1280]
    make_slide(root / "S1.ome.zarr", labels)
    maps = synth_maps.array[:, :1024, :1280]
    stored = write_maps(str(root / "maps.zarr"), maps, chunk_px=256)
    cfg = RunConfig().segment
    params = SegmentParams.from_config(cfg, 1.0, stored.channels)
    ref = segment_plane(stored, params, 4096, 150)
    return root / "S1.ome.zarr", root / "maps.zarr", ref


def _cfg(maps, block_px: int = 256, **seg) -> RunConfig:
    return RunConfig.model_validate({"segment": {"maps": str(maps), **seg}, "grid": {"block_px": block_px}})


def test_segment_slide_equals_reference_and_resumes(client, slide) -> None:
    path, maps, ref = slide
    res = segment_slide(path, _cfg(maps), client)
    assert (res.level, res.block_px, res.halo_px, res.n_blocks) == (0, 256, 150, 20)
    assert res.n_fibres == ref.n_fibres and res.escalations == 0
    sl = open_slide(path)
    assert set(sl.labels) == {"fibres", "regions"}
    got = np.asarray(sl.label_array("fibres", 0)[0])
    assert np.array_equal(got, ref.labels) and same_partition(got, ref.labels)
    assert sl.label_array("fibres", 1).shape == (1, 512, 640)
    assert np.asarray(sl.label_array("fibres", 1)[0]).max() > 0
    regions = np.asarray(sl.label_array("regions", 0)[0])
    assert regions[:, :900].mean() > 0.9 and regions[:, -150:].max() == 0
    attrs = zarr.open_group(f"{path}/labels/fibres", mode="r").attrs["nclsm"]["segment"]
    assert attrs["complete"] and attrs["n_fibres"] == ref.n_fibres

    again = segment_slide(path, _cfg(maps), client)
    assert again.skipped and again.n_fibres == ref.n_fibres

    # Interrupt: forget the completion marker and half of the blocks, wipe their cores.
    group = zarr.open_group(f"{path}/labels/fibres", mode="r+")
    group.attrs["nclsm"] = {}
    arr = sl.label_array("fibres", 0, mode="r+")
    done = sorted((work_dir(path, "segment") / "done").glob("*.json"))
    for marker in done[::2]:
        by, bx = (int(v) for v in marker.stem.split("_"))
        arr[0, by * 256 : (by + 1) * 256, bx * 256 : (bx + 1) * 256] = 0
        marker.unlink()
    (work_dir(path, "segment") / "seeds" / "0_0.npy").unlink()
    resumed = segment_slide(path, _cfg(maps), client)
    assert not resumed.skipped and resumed.n_fibres == ref.n_fibres
    assert np.array_equal(np.asarray(arr[0]), ref.labels)
    assert json.loads((work_dir(path, "segment") / "state.json").read_text())["block_px"] == 256


def test_block_size_is_rounded_up_to_the_label_chunks(client, slide) -> None:
    path, maps, ref = slide
    res = segment_slide(path, _cfg(maps, block_px=300, overwrite=True), client)
    assert res.block_px == 512 and not res.skipped
    assert np.array_equal(np.asarray(open_slide(path).label_array("fibres", 0)[0]), ref.labels)



def test_a_slide_over_the_memory_budget_is_refused_before_its_segmentation(client, slide, tmp_path) -> None:
    path, maps, _ = slide
    plan = plan_segmentation(path, _cfg(maps), client)
    check_memory(plan, RunConfig().segment)  # 8 GiB: fine
    halo = 150 * 2**plan.escalation_limit + plan.params.margin_px
    need_gib = (256 + 2 * halo) ** 2 * BLOCK_BYTES_PER_PX / 2**30
    seg = RunConfig.model_validate({"segment": {"max_memory_gib": need_gib * 0.9}}).segment
    with pytest.raises(SlideRefusedError, match=rf"S1.ome.zarr: a block task's window \({256 + 2 * halo} px square: "
                                                rf"halo {halo} px after 2 escalation\(s\) at 1 um/px\) needs about "):
        check_memory(plan, seg)
    # the regions level held whole (here level 0, 1024 x 1280 px) while the blocks' windows fit
    whole = RunConfig.model_validate({
        "segment": {"maps": str(maps), "region_pixel_size_um": 1.0, "max_memory_gib": 0.05},
        "grid": {"block_px": 256, "escalation_limit": 0},
    })
    with pytest.raises(SlideRefusedError, match=r"the regions level \(1024 x 1280 px, held whole"):
        check_memory(plan_segmentation(path, whole, client), whole.segment)
    fresh = tmp_path / "S2.ome.zarr"
    make_slide(fresh, np.asarray(open_slide(path).label_array("fibres", 0)[0]))
    with pytest.raises(SlideRefusedError, match="over segment.max_memory_gib = 0.05"):
        segment_slide(fresh, whole, client)
    assert not work_dir(fresh, "segment").exists() and "fibres" not in open_slide(fresh).labels
