"""measure_fibres / measure_block: window invariance, coordinates, flags, intensities, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nclsm_scale.config import MeasureConfig
from nclsm_scale.errors import HaloViolationError, ValidationError
from nclsm_scale.measure import context_px, measure_block, measure_fibres
from nclsm_scale.measure.intensity import band_masks
from nclsm_scale.measure.shape import perimeters
from nclsm_scale.tables import MEASURE_COLUMNS, measure_columns

ROLES = {"membrane": 0, "mito": 1}
COLUMNS = measure_columns(["membrane", "mito"])


def _full(section, tissue):
    return measure_fibres(
        section.fibres,
        section.image,
        pixel_size_um=1.0,
        channel_roles=ROLES,
        channel_names=["dystrophin", "VDAC"],
        tissue_mask=tissue,
        background=[100.0, 100.0],
    )


def test_columns_and_dtypes_are_the_declared_ones(section, tissue):
    t = _full(section, tissue)
    assert list(t.columns) == list(COLUMNS) and list(COLUMNS)[: len(MEASURE_COLUMNS)] == list(MEASURE_COLUMNS)
    for name, col in COLUMNS.items():
        assert str(t[name].dtype) == col.dtype, name
    assert len(t) == section.table.shape[0]
    assert t.fibre_id.tolist() == section.table.fibre_id.tolist()


def test_centroid_bbox_and_border_match_synth_ground_truth(section, tissue):
    t = _full(section, tissue)
    gt = section.table
    assert np.array_equal(t.area_seg_px, gt.area_px)
    assert np.allclose(t.centroid_y_px, gt.centroid_y_px) and np.allclose(
        t.centroid_x_px, gt.centroid_x_px
    )
    for a in ("y0", "x0", "y1", "x1"):
        assert np.array_equal(t[f"bbox_{a}_px"], gt[f"bbox_{a}_px"])
    assert np.array_equal(t.touches_image_border, gt.touches_image_border)
    assert t.touches_tissue_border.any() and not t.touches_tissue_border.all()


def test_positions_are_level0_pixels_of_a_downsampled_level(section):
    """Fibres measured on a level of downsample 2 sit where the same fibres sit on level 0 (labels upsampled)."""
    coarse = section.fibres[:, :767]  # an odd level-0 width: the last coarse column covers one level-0 column
    fine = np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1)[:, :1533]
    t = measure_fibres(coarse, None, pixel_size_um=2.0, downsample=2, level0_shape_yx=fine.shape, slide="S")
    ref = measure_fibres(fine, None, pixel_size_um=1.0)
    ids = ~ref.touches_image_border.to_numpy()  # the fine fibres at the odd edge lose a column
    assert (t.slide == "S").all() and t.fibre_id.tolist() == ref.fibre_id.tolist()
    for c in ("centroid_y_px", "centroid_x_px", "centroid_y_um", "centroid_x_um", "area_um2"):
        np.testing.assert_allclose(t[c][ids], ref[c][ids], rtol=0, atol=1e-9, err_msg=c)
    for a in ("y0", "x0", "y1", "x1"):
        assert np.array_equal(t[f"bbox_{a}_px"], ref[f"bbox_{a}_px"])
    assert np.array_equal(t.area_seg_px * 4, ref.area_seg_px.where(ids, t.area_seg_px * 4))
    assert t.bbox_x1_px.max() == 1533


@pytest.mark.parametrize("cut", [(0, 0), (97, 211), (333, 5), (250, 401)])
def test_rows_are_bitwise_identical_in_any_window_that_holds_the_fibre(section, tissue, cut):
    full = _full(section, tissue).set_index("fibre_id")
    cy, cx = cut
    margin = context_px(1.0)
    h, w = section.fibres.shape
    win = np.s_[cy : min(h, cy + 420), cx : min(w, cx + 420)]
    t = measure_fibres(
        section.fibres[win],
        section.image[(slice(None), *win)],
        pixel_size_um=1.0,
        channel_roles=ROLES,
        tissue_mask=tissue[win],
        origin_yx=(cy, cx),
        slide_shape_yx=(h, w),
        background=[100.0, 100.0],
    )
    t = t.set_index("fibre_id")
    y1, x1 = cy + section.fibres[win].shape[0], cx + section.fibres[win].shape[1]
    inside = ((t.bbox_y0_px - margin >= cy) | (t.bbox_y0_px == 0)) & (
        (t.bbox_x0_px - margin >= cx) | (t.bbox_x0_px == 0)
    )
    inside &= ((t.bbox_y1_px + margin <= y1) | (t.bbox_y1_px == h)) & (
        (t.bbox_x1_px + margin <= x1) | (t.bbox_x1_px == w)
    )
    ids = t.index[inside]
    assert len(ids) >= 10
    pd.testing.assert_frame_equal(t.loc[ids], full.loc[ids], check_exact=True)


def test_measure_block_owned_ids_and_halo_violation(section):
    lab = section.fibres
    h, w = lab.shape
    full = measure_fibres(lab, None, pixel_size_um=1.0).set_index("fibre_id")
    win = np.s_[100:600, 150:700]
    sub = lab[win]
    ids, counts = np.unique(sub[sub > 0], return_counts=True)
    whole = [i for i, c in zip(ids, counts, strict=True) if c == full.loc[i, "area_seg_px"]]
    objs = full.loc[whole]
    owned = objs.index[
        (objs.bbox_y0_px >= 105)
        & (objs.bbox_y1_px <= 595)
        & (objs.bbox_x0_px >= 155)
        & (objs.bbox_x1_px <= 695)
    ].tolist()
    t = measure_block(
        sub, None, owned_ids=owned, origin_yx=(100, 150), slide_shape_yx=(h, w), pixel_size_um=1.0
    )
    assert t.fibre_id.tolist() == sorted(owned)
    pd.testing.assert_frame_equal(
        t.set_index("fibre_id"), full.loc[sorted(owned)], check_exact=True
    )
    cut = [i for i in ids if i not in whole][:1]
    with pytest.raises(HaloViolationError, match="enlarge the halo"):
        measure_block(
            sub,
            None,
            owned_ids=owned + cut,
            origin_yx=(100, 150),
            slide_shape_yx=(h, w),
            pixel_size_um=1.0,
        )


def test_membrane_ring_brighter_than_interior_and_fam_fibres_have_holes(section):
    t = measure_fibres(
        section.fibres,
        section.image,
        pixel_size_um=1.0,
        channel_roles=ROLES,
        background=[float(np.median(section.image[c][section.regions == 0])) for c in range(2)],
    )
    big = t.area_um2 > 1000
    assert (t.membrane_ring_mean[big] > 2 * t.membrane_interior_mean[big]).mean() > 0.95
    assert (t.mito_interior_median[big] > 0).all() and (t.cytoplasm_interior_median[big] > 0).all()
    fam = section.table.gt_class.astype(str).to_numpy() == "FAM"
    am = section.table.gt_class.astype(str).to_numpy() == "AM"
    assert fam.sum() >= 5
    assert (t.hole_count[fam] >= 3).mean() >= 0.9 and (t.hole_count[am] >= 1).mean() <= 0.02
    assert (t.hole_fraction[fam] > t.hole_fraction[am].max()).mean() > 0.8


def test_every_channel_gets_its_statistics_under_its_role_or_name(section):
    image = np.concatenate([section.image, section.image[1:] // 2])  # a third channel, without a role
    t = measure_fibres(section.fibres, image, pixel_size_um=1.0, channel_roles={"membrane": 0},
                       channel_names=["dystrophin", "VDAC", "MyHC x"], background=[0.0, 0.0, 0.0])
    assert list(t.columns) == list(measure_columns(["membrane", "vdac", "myhc_x"]))
    comp, _ = section.fibres, None
    _, _, border = perimeters(comp, int(comp.max()))
    ring, interior = band_masks(comp, border, 2)
    for i in (1, 17, 40):
        assert t.loc[i - 1, "vdac_interior_median"] == np.median(image[1][interior & (comp == i)])
        assert t.loc[i - 1, "myhc_x_ring_mean"] == pytest.approx(image[2][ring & (comp == i)].mean())
        assert t.loc[i - 1, "membrane_interior_p75"] == np.quantile(image[0][interior & (comp == i)], 0.75)
    assert t["cytoplasm_interior_median"].isna().all() and t["interior_membrane_fraction"].notna().any()
    no_membrane = measure_fibres(section.fibres, image, pixel_size_um=1.0, channel_roles={"mito": 1},
                                 channel_names=["dystrophin", "VDAC", "MyHC x"], background=[0.0, 0.0, 0.0])
    assert no_membrane["membrane_interior_p75"].isna().all()


def test_without_image_intensities_are_nan(section):
    t = measure_fibres(section.fibres, None, pixel_size_um=1.0)
    assert "mito_interior_mean" not in t and t.hole_fraction.isna().all() and (t.hole_count == 0).all()


def test_invalid_inputs_raise_clear_errors(section):
    with pytest.raises(ValidationError, match="2-D integer"):
        measure_fibres(section.fibres.astype(float), None, pixel_size_um=1.0)
    with pytest.raises(ValidationError, match="out of range"):
        measure_fibres(section.fibres, section.image, pixel_size_um=1.0, channel_roles={"dapi": 2})
    with pytest.raises(ValidationError, match="3 channel names for an image of 2 channels"):
        measure_fibres(section.fibres, section.image, pixel_size_um=1.0, channel_names=["a", "b", "c"])
    with pytest.raises(ValidationError, match="not in the label window"):
        measure_fibres(section.fibres, None, pixel_size_um=1.0, ids=[10**6])
    assert measure_fibres(np.zeros((5, 5), np.uint32), None, pixel_size_um=1.0).empty


def test_context_grows_with_smoothing_and_margin():
    assert context_px(1.0) >= 3
    assert context_px(0.25, MeasureConfig(tissue_margin_um=10.0)) == 40


def test_a_fibres_row_does_not_depend_on_which_other_fibres_are_measured(section, tissue):
    """A block measures only the fibres it owns; their rows must equal those of a whole-window measurement."""
    full = _full(section, tissue).set_index("fibre_id")
    ids = full.index.to_numpy()
    for subset in (ids[::2], ids[1::3], ids[full["touches_tissue_border"].to_numpy()]):
        part = measure_fibres(section.fibres, section.image, pixel_size_um=1.0, channel_roles=ROLES,
                              channel_names=["dystrophin", "VDAC"], tissue_mask=tissue, background=[100.0, 100.0],
                              ids=subset)
        pd.testing.assert_frame_equal(part.set_index("fibre_id"), full.loc[subset], check_exact=True)
