"""The measure driver on a real LocalCluster: each fibre once, whole, identical for every block size."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import zarr

from nclsm_scale.config import RunConfig, SynthConfig
from nclsm_scale.errors import HaloViolationError, SlideReadError
from nclsm_scale.grid import lowres_window
from nclsm_scale.io.ome_zarr import create_image
from nclsm_scale.layout import RunLayout, read_fibre_table
from nclsm_scale.measure import measure_fibres
from nclsm_scale.measure.driver import measure_slide, owned_ids
from nclsm_scale.synth import generate_section


@pytest.fixture(scope="module")
def slide(tmp_path_factory, write_section_store):
    """A 768^2 px, 1 um/px slide in a run folder, with its ground-truth fibres as labels/fibres."""
    s = generate_section(SynthConfig(size_px=(768, 768), pixel_size_um=1.0, seed=5, fam_fraction=0.2))
    path = tmp_path_factory.mktemp("measure") / "run" / "slides" / "S1.ome.zarr"
    write_section_store(path, s)
    return path, s


def _cfg(**grid) -> RunConfig:
    return RunConfig.model_validate({"grid": grid})


def test_table_is_identical_for_every_block_size(client, slide) -> None:
    path, s = slide
    tables = {}
    for block_px in (256, 512, 4096):
        out = measure_slide(path, _cfg(block_px=block_px), client)
        assert out == RunLayout(path.parent.parent).measure_table("S1")
        tables[block_px] = pd.read_parquet(out)
    ref = tables[4096]
    assert ref["fibre_id"].tolist() == list(range(1, int(s.fibres.max()) + 1))
    pd.testing.assert_frame_equal(tables[256], ref, check_exact=True)
    pd.testing.assert_frame_equal(tables[512], ref, check_exact=True)
    _, meta = read_fibre_table(out)
    assert meta["level"] == 0 and meta["pixel_size_um"] == 1.0 and len(meta["background"]) == 2


def test_geometry_equals_a_whole_slide_measurement(client, slide) -> None:
    path, s = slide
    got = pd.read_parquet(measure_slide(path, _cfg(block_px=256), client))
    low = np.asarray(zarr.open_array(str(path), path="labels/regions/3", mode="r")[0])  # 8 um/px
    tissue = lowres_window(low, 8.0, (0, 0), s.fibres.shape) > 0  # the regions level, as the driver reads it
    ref = measure_fibres(s.fibres, None, pixel_size_um=1.0, tissue_mask=tissue)
    cols = ["fibre_id", "area_seg_px", "feret_min_um", "feret_max_um", "perimeter_um", "centroid_y_px",
            "bbox_x1_px", "touches_image_border", "touches_tissue_border"]
    pd.testing.assert_frame_equal(got[cols], ref[cols], check_exact=True)


def test_small_halo_escalates_to_the_same_table_or_fails_loudly(client, slide, tmp_path) -> None:
    path, _ = slide
    ref = pd.read_parquet(measure_slide(path, _cfg(block_px=256), client, out_dir=tmp_path / "a"))
    small = measure_slide(path, _cfg(block_px=256, halo_um=8.0, escalation_limit=5), client, out_dir=tmp_path / "b")
    assert read_fibre_table(small)[1]["escalations"] > 0
    pd.testing.assert_frame_equal(pd.read_parquet(small), ref, check_exact=True)
    with pytest.raises(HaloViolationError, match="halo doubling"):
        measure_slide(path, _cfg(block_px=256, halo_um=8.0, escalation_limit=0), client, out_dir=tmp_path / "c")


def test_owner_is_the_first_raster_pixel() -> None:
    lab = np.zeros((6, 6), np.uint32)
    lab[1:5, 2:5] = 7  # first pixel (1, 2)
    lab[3:6, 0:2] = 9  # first pixel (3, 0)
    assert owned_ids(lab, (0, 0, 3, 3)).tolist() == [7]
    assert owned_ids(lab, (3, 0, 6, 3)).tolist() == [9]
    assert owned_ids(lab, (0, 3, 6, 6)).tolist() == []


@pytest.mark.parametrize("spread", [1, 7919, 2**31 - 1])
def test_owned_ids_equal_the_first_pixels_numpy_finds(spread) -> None:
    """Dense (slide-global, raster-ordered) IDs take the compiled scan, sparse ones numpy.unique: same owners."""
    lab = generate_section(SynthConfig(size_px=(300, 300), pixel_size_um=1.0, seed=9)).fibres.astype(np.uint64)
    lab = np.where(lab > 0, (lab * spread) % (2**32 - 5) + 3, 0).astype(np.uint32)
    for core in [(0, 0, 300, 300), (40, 60, 170, 250), (120, 0, 300, 90), (299, 299, 300, 300)]:
        head = lab[: core[2]]
        ids, first = np.unique(head.ravel(), return_index=True)
        y, x = np.divmod(first, head.shape[1])
        keep = (ids != 0) & (y >= core[0]) & (x >= core[1]) & (x < core[3])
        got = owned_ids(lab, core)
        assert got.dtype == np.uint32 and got.tolist() == ids[keep].tolist()
    assert owned_ids(np.zeros((4, 4), np.uint32), (0, 0, 4, 4)).size == 0


def test_unsegmented_slide_is_a_clear_error(client, tmp_path) -> None:
    path = tmp_path / "S2.ome.zarr"
    create_image(path, (2, 64, 64), np.uint16, pixel_size_um=1.0, channel_names=["a", "b"], chunk_px=64,
                 shard_px=0, min_level_px=64)
    with pytest.raises(SlideReadError, match="segment"):
        measure_slide(path, _cfg(), client)
