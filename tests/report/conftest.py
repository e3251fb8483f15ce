"""An end-to-end run on a real LocalCluster: synth, convert, segment (stored GT maps), measure, curate, report."""

from __future__ import annotations

import pytest

from nclsm_scale.config import RunConfig


@pytest.fixture(scope="session")
def e2e_run(tmp_path_factory, client, converted_with_truth_maps):
    """A run folder with one 1536^2 px (0.5 um/px) synthetic slide taken through every stage."""
    from nclsm_scale.aggregate import aggregate_run
    from nclsm_scale.curate import curate_slide
    from nclsm_scale.layout import RunLayout
    from nclsm_scale.measure.driver import measure_slide
    from nclsm_scale.report import build_report
    from nclsm_scale.segment import segment_slide

    root = tmp_path_factory.mktemp("e2e")
    layout = RunLayout(root / "run")
    cfg = RunConfig.model_validate({
        "synth": {"size_px": [1536, 1536], "seed": 3, "folds": 1, "fold_width_um": 200.0, "fam_fraction": 0.1},
        "convert": {"chunk_px": 256, "min_level_px": 64},
        "grid": {"block_px": 256},
        "report": {"thumbnail_px": 800},
    })
    store, cfg, gt, paths = converted_with_truth_maps(root, layout, cfg, "E1")
    seg = segment_slide(store, cfg, client)
    table = measure_slide(store, cfg, client)
    cur = curate_slide(store, cfg, client)
    manifest = {"E1": {"subject": "P1", "diagnosis": "control", "muscle": "vastus lateralis"}}
    aggregate_run(layout.root, cfg.aggregate, manifest)
    index = build_report(layout.root, cfg, client)
    return {"layout": layout, "cfg": cfg, "seg": seg, "table": table, "curate": cur, "index": index,
            "gt": gt, "gt_table": paths["parquet"], "store": store}

