"""``nclsm-scale segment`` end to end on a one-worker LocalCluster with stored maps."""

from __future__ import annotations

import numpy as np
from test_driver import make_slide
from typer.testing import CliRunner

from nclsm_scale.cli.app import app, main
from nclsm_scale.segment.maps import maps_from_labels, write_maps
from nclsm_scale.segment.plane import segment_plane
from nclsm_scale.slide import open_slide


def test_cli_segments_prints_count_and_rerun_is_a_no_op(tmp_path, synth_labels, params) -> None:
    labels = synth_labels[:512, :640]
    make_slide(tmp_path / "C.ome.zarr", labels)
    stored = write_maps(str(tmp_path / "maps.zarr"), maps_from_labels(labels, seed=1), chunk_px=256)
    ref = segment_plane(stored, params, 1024, 150)
    args = ["segment", str(tmp_path / "C.ome.zarr"), "--maps", str(tmp_path / "maps.zarr"),
            "--block-size", "256", "--halo-um", "150", "--workers", "1"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert f"{ref.n_fibres} fibres, 0 escalation(s)" in first.output
    got = np.asarray(open_slide(tmp_path / "C.ome.zarr").label_array("fibres", 0)[0])
    assert np.array_equal(got, ref.labels)
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0 and "already segmented" in second.output


def test_cli_reports_a_missing_slide_as_one_clear_error(tmp_path, capsys) -> None:
    status = main(["segment", str(tmp_path / "nope.ome.zarr"), "--workers", "1"])
    err = capsys.readouterr().err
    assert status == 1
    assert "error: " in err and "nope.ome.zarr" in err and "Traceback" not in err
