"""Chunk invariance, determinism and ground-truth sanity of procedural sections."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from nclsm_scale.config import SynthConfig
from nclsm_scale.synth import SyntheticSection, generate_section
from nclsm_scale.synth.appearance import Appearance
from nclsm_scale.synth.generate import keys_to_ids, render_window
from nclsm_scale.synth.geometry import SlidePlan


@pytest.mark.parametrize("chunk_px", [128, 199, 333])
def test_chunked_equals_whole(
    small_cfg: SynthConfig, small_section: SyntheticSection, chunk_px: int
) -> None:
    """Different chunk sizes (not dividing the slide) give bitwise identical sections."""
    other = generate_section(small_cfg.model_copy(update={"chunk_px": chunk_px}))
    np.testing.assert_array_equal(other.image, small_section.image)
    np.testing.assert_array_equal(other.fibres, small_section.fibres)
    np.testing.assert_array_equal(other.regions, small_section.regions)
    assert other.table.equals(small_section.table)


@pytest.mark.parametrize("window", [(0, 0, 97, 131), (101, 233, 157, 211), (377, 499, 143, 111)])
def test_window_at_any_offset_equals_whole(
    small_cfg: SynthConfig, small_section: SyntheticSection, window: tuple[int, int, int, int]
) -> None:
    """A window rendered alone at an odd offset (also at the border) equals the same crop."""
    y0, x0, h, w = window
    win = render_window(SlidePlan(small_cfg), Appearance.draw(small_cfg), y0, x0, h, w)
    sl = np.s_[y0 : y0 + h, x0 : x0 + w]
    np.testing.assert_array_equal(win.image, small_section.image[:, y0 : y0 + h, x0 : x0 + w])
    np.testing.assert_array_equal(win.regions, small_section.regions[sl])
    ids = keys_to_ids(win.keys, small_section.table["seed_key"].to_numpy(np.uint64))
    np.testing.assert_array_equal(ids, small_section.fibres[sl])


def test_different_seed_differs(small_cfg: SynthConfig, small_section: SyntheticSection) -> None:
    """Another seed gives another image and other fibres."""
    other = generate_section(small_cfg.model_copy(update={"seed": small_cfg.seed + 1}))
    assert not np.array_equal(other.image, small_section.image)
    assert not np.array_equal(other.fibres, small_section.fibres)


def test_section_contract(small_section: SyntheticSection) -> None:
    """Shapes, dtypes, dense IDs 1..N and table columns match the documented API."""
    s = small_section
    assert s.image.shape == (2, 520, 610) and s.image.dtype == np.uint16
    assert s.fibres.dtype == np.uint32 and s.regions.dtype == np.uint8
    n = len(s.table)
    assert set(np.unique(s.fibres)) == set(range(n + 1))
    assert s.table["fibre_id"].tolist() == list(range(1, n + 1))
    assert set(np.unique(s.regions)) <= {0, 1, 2}
    assert s.channel_names == ("dystrophin", "VDAC")
    for col in (
        "fibre_id",
        "gt_class",
        "area_px",
        "centroid_y_px",
        "centroid_x_px",
        "bbox_y0_px",
        "touches_image_border",
        "fold_fraction",
    ):
        assert col in s.table.columns
    areas = np.bincount(s.fibres.ravel(), minlength=n + 1)[1:]
    np.testing.assert_array_equal(areas, s.table["area_px"].to_numpy())
    com = np.array(ndimage.center_of_mass(np.ones_like(s.fibres), s.fibres, range(1, n + 1)))
    np.testing.assert_allclose(com[:, 0], s.table["centroid_y_px"].to_numpy())
    np.testing.assert_allclose(com[:, 1], s.table["centroid_x_px"].to_numpy())


def test_fibres_inside_tissue(small_section: SyntheticSection) -> None:
    """Every fibre pixel is tissue or fold, and the fold region exists."""
    s = small_section
    assert (s.regions[s.fibres > 0] > 0).all()
    assert (s.regions == 2).any()
    assert (s.regions == 0).any()


def test_mean_csa_and_spread(stats_cfg: SynthConfig, stats_section: SyntheticSection) -> None:
    """Interior analysable fibres have the configured mean CSA (+-15 %) and a realistic CV."""
    t = stats_section.table
    am = t[(t["gt_class"] == "AM") & ~t["touches_image_border"]]["area_um2"]
    assert len(am) > 300
    assert abs(am.mean() / stats_cfg.mean_csa_um2 - 1.0) < 0.15
    assert 0.2 < am.std() / am.mean() < 0.42


def test_gt_class_shares(stats_section: SyntheticSection) -> None:
    """All GT classes appear; AM dominates, NTM is common, FAM and FR are rarer."""
    share = stats_section.table["gt_class"].value_counts(normalize=True)
    assert share["AM"] > 0.4
    assert 0.05 < share["NTM"] < 0.6
    assert 0.01 < share["FAM"] < 0.12
    assert 0.003 < share["FR"] < 0.2


def test_ntm_profiles_elongated(stats_section: SyntheticSection) -> None:
    """NTM fibres are elongated (median aspect 2-4), AM fibres near round."""
    from skimage.measure import regionprops_table

    props = regionprops_table(
        stats_section.fibres, properties=("label", "axis_major_length", "axis_minor_length")
    )
    aspect = props["axis_major_length"] / np.maximum(props["axis_minor_length"], 1e-6)
    cls = stats_section.table.set_index("fibre_id").loc[props["label"], "gt_class"].to_numpy()
    assert 1.8 < np.median(aspect[cls == "NTM"]) < 4.5
    assert np.median(aspect[cls == "AM"]) < 1.6


def test_gaps_and_few_touching_pairs(stats_section: SyntheticSection) -> None:
    """Neighbouring fibres are mostly separated by background; a few touch directly."""
    f = stats_section.fibres
    pairs = set()
    for a, b in ((f[:, :-1], f[:, 1:]), (f[:-1, :], f[1:, :])):
        m = (a != b) & (a > 0) & (b > 0)
        pairs |= set(
            zip(np.minimum(a[m], b[m]).tolist(), np.maximum(a[m], b[m]).tolist(), strict=True)
        )
    n = len(stats_section.table)
    assert 0 < len(pairs) < 0.6 * n  # about 3 neighbours per fibre; touching_fraction 0.1
    assert (f == 0).mean() > 0.1


def test_each_fibre_one_component(stats_section: SyntheticSection) -> None:
    """Every fibre label is a single 8-connected component."""
    f = stats_section.fibres
    objects = ndimage.find_objects(f)
    for label, sl in enumerate(objects, start=1):
        _, n = ndimage.label(f[sl] == label, structure=np.ones((3, 3)))
        assert n == 1, f"fibre {label} has {n} components"


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    y0=st.integers(-40, 500), x0=st.integers(-40, 600), h=st.integers(1, 90), w=st.integers(1, 90)
)
def test_any_window_equals_whole_property(
    small_cfg: SynthConfig, small_section: SyntheticSection, y0: int, x0: int, h: int, w: int
) -> None:
    """Property: any window, even one reaching past the slide, renders like the whole slide."""
    ys, xs = slice(max(y0, 0), min(y0 + h, 520)), slice(max(x0, 0), min(x0 + w, 610))
    assume(ys.stop > ys.start and xs.stop > xs.start)
    win = render_window(SlidePlan(small_cfg), Appearance.draw(small_cfg), y0, x0, h, w)
    inner = np.s_[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
    np.testing.assert_array_equal(win.image[(slice(None), *inner)], small_section.image[:, ys, xs])
    np.testing.assert_array_equal(win.regions[inner], small_section.regions[ys, xs])
