"""Report figures and page helpers on small arrays: true-width histogram bars, scale bars, outlines, labels."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from nclsm_scale.config import AggregateConfig
from nclsm_scale.report.figures import (
    class_outlines,
    density_bars,
    draw_scale_bar,
    group_histograms,
    histogram_png,
    nice_length,
)
from nclsm_scale.report.html import column_label, local_name, with_units


def test_density_bars_are_as_wide_as_their_bins_and_integrate_to_one() -> None:
    edges = np.asarray(AggregateConfig().csa_bins_um2)
    lo, hi = edges, np.append(edges[1:], np.inf)
    counts = np.arange(1, lo.size + 1)
    bars = density_bars(counts, lo, hi)
    np.testing.assert_array_equal(bars.width, np.diff(edges))
    np.testing.assert_array_equal(bars.left, edges[:-1])
    np.testing.assert_allclose(bars.height * bars.width, counts[:-1] / counts.sum())
    assert bars.open_from == edges[-1] and bars.open_count == counts[-1]
    assert (bars.height * bars.width).sum() + bars.open_share == pytest.approx(1.0)
    # equal counts in a 250 µm² and a 1000 µm² bin: the wide bin is a quarter as high
    assert bars.height[0] / bars.height[4] == pytest.approx((1 / 250) / (5 / 1000))


def test_histogram_figure_draws_bars_of_the_bin_widths(monkeypatch) -> None:
    import matplotlib.pyplot as plt

    hist = xr.Dataset({"csa_count": (("slide", "b"), [[5, 5, 5, 2]])},
                      coords={"slide": ["S"], "csa_lo": ("b", [0.0, 250.0, 1000.0, 5000.0]),
                              "csa_hi": ("b", [250.0, 1000.0, 5000.0, np.inf])})
    seen = {}
    real = plt.Figure.savefig

    def spy(fig, *args, **kwargs):
        ax = fig.axes[0]
        seen["widths"] = [p.get_width() for p in ax.patches]
        seen["xlabel"], seen["ylabel"], seen["title"] = ax.get_xlabel(), ax.get_ylabel(), ax.get_title("right")
        return real(fig, *args, **kwargs)

    monkeypatch.setattr(plt.Figure, "savefig", spy)
    png = histogram_png(hist, "csa", "CSA", "µm²", 50)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert seen["widths"] == [250.0, 750.0, 4000.0]
    assert seen["xlabel"] == "CSA (µm²)" and seen["ylabel"] == "share of fibres per µm²"
    assert seen["title"].startswith("≥ 5000 µm² (open bin, not drawn): S: 2 (11.8 %)")


def test_scale_bar_has_a_round_length_in_micrometres() -> None:
    assert [nice_length(x) for x in (180.0, 99.0, 0.3, 2000.0)] == [100.0, 50.0, 0.2, 2000.0]
    rgb = np.zeros((300, 400, 3), np.uint8)
    length_um, length_px = draw_scale_bar(rgb, 2.0)
    assert (length_um, length_px) == (100.0, 50)
    white = np.all(rgb == 255, axis=-1)
    rows = np.flatnonzero(white.sum(axis=1) == length_px)
    assert rows.size >= 3 and rows.min() > 250  # a bar length_px long near the bottom


def test_outlines_follow_each_fibre_inside_its_own_pixels() -> None:
    labels = np.zeros((12, 12), np.uint32)
    labels[2:8, 2:6] = 1
    labels[2:8, 6:10] = 2
    edge = class_outlines(labels, 1)
    assert not edge[labels == 0].any()
    assert edge[2, 3] and edge[5, 5] and edge[5, 6] and not edge[4, 3] and not edge[4, 8]


def test_page_helpers_write_units_labels_and_relative_paths(tmp_path) -> None:
    assert with_units("CSA um2, 0.5-2 um, area_um2, 1/mm2") == "CSA µm², 0.5-2 µm, area_um2, 1/mm²"
    assert column_label("feret_min_um_mean") == "min Feret mean"
    assert column_label("mito_p90") == "mito 90th percentile"
    assert local_name(str(tmp_path / "slides" / "a.zarr"), tmp_path) == "slides/a.zarr"
    assert local_name(["/elsewhere/maps.zarr", 3], tmp_path) == ["maps.zarr", 3]


def test_group_histograms_sum_each_groups_slides_and_draw_one_series_per_group() -> None:
    import pandas as pd

    hist = xr.Dataset({"csa_count": (("slide", "b"), [[1, 2, 0], [3, 0, 1], [5, 5, 5]]),
                       "class_count": (("slide", "class"), [[1], [2], [3]])},
                      coords={"slide": ["A", "B", "C"], "csa_lo": ("b", [0.0, 250.0, 1000.0]),
                              "csa_hi": ("b", [250.0, 1000.0, np.inf])})
    slides = pd.DataFrame({"slide": ["C", "A", "B"], "diagnosis": ["myopathy", "control", "control"],
                           "muscle": ["VL", "VL", "VL"]})
    pooled = group_histograms(hist, slides, ["diagnosis", "muscle"])
    assert pooled["group"].values.tolist() == ["control / VL", "myopathy / VL"]
    assert pooled["csa_count"].values.tolist() == [[4, 2, 1], [5, 5, 5]]
    assert pooled["csa_lo"].values.tolist() == [0.0, 250.0, 1000.0]
    assert histogram_png(pooled, "csa", "CSA", "µm²", 50, series="group")[:4] == b"\x89PNG"


def test_provenance_lists_changed_settings_without_local_paths(tmp_path) -> None:
    import json

    from nclsm_scale.config import RunConfig
    from nclsm_scale.report.html import provenance

    (tmp_path / "run.json").write_text(json.dumps({"started": "2026-01-01T00:00:00Z", "ended": None,
                                                   "config": {"x": str(tmp_path)}}))
    cfg = RunConfig.model_validate({"synth": {"seed": 9}, "grid": {"block_px": 512},
                                    "segment": {"maps": str(tmp_path / "maps" / "m.zarr")}})
    prov = provenance(tmp_path, cfg)
    assert prov["changed"] == {"grid.block_px": 512, "segment.maps": "maps/m.zarr"}  # synth made nothing
    assert prov["run"] == {"started": "2026-01-01T00:00:00Z", "ended": None}
    assert str(tmp_path) not in json.dumps(prov) and "/" not in prov["model"]["weights"]
    assert prov["versions"]["numpy"] == np.__version__
