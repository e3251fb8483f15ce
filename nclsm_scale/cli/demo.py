"""``nclsm-scale demo``: synthetic slides through the pipeline on a local Dask cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nclsm_scale.cli._options import (
    ConfigOption,
    SetOption,
    WorkersOption,
    build_config,
    cluster_overrides,
)
from nclsm_scale.cli.synth import parse_size


def _share(value: float) -> str:
    """A precision or recall to two decimals; ``-`` when undefined (nothing called or nothing true)."""
    return "-" if value != value else f"{value:.2f}"


def main(
    out: Annotated[Path, typer.Option("--out", help="Folder for everything the demo writes.")] = Path(
        "demo-run"
    ),
    slides: Annotated[int, typer.Option("--slides", min=1, max=16, help="Number of slides.")] = 2,
    size: Annotated[
        str, typer.Option("--size", help="HEIGHTxWIDTH of each slide in pixels (0.5 um/px).")
    ] = "3072x3072",
    workers: WorkersOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Make synthetic slides, convert and segment them on Dask, score and show the fibres."""
    cfg = build_config(
        config, set_, **{"synth.size_px": parse_size(size), **cluster_overrides(None, workers)}
    )
    from nclsm_scale.cluster import open_client
    from nclsm_scale.demo import run_demo

    with open_client(cfg.cluster) as client:
        result = run_demo(out, cfg, client, n_slides=slides)
    for r in result.slides:
        counts = ", ".join(f"{k} {v}" for k, v in r.class_counts.items())
        per_class = ", ".join(f"{c} {_share(p)}/{_share(q)}" for c, (p, q) in r.class_precision_recall.items())
        typer.echo(
            f"{r.slide_id}: {r.n_fibres} fibres found (ground truth {r.n_gt_fibres}); scored at level {r.level} "
            f"({r.pixel_size_um:g} um/px, the segmentation level; 'evaluate' scores level 0): "
            f"F1 at IoU 0.5 = {r.f1_iou50:.3f}, mean matched IoU = {r.mean_matched_iou:.3f}; "
            f"class agreement with the ground truth {r.class_agreement:.3f} over {r.n_class_scored} matched fibres "
            f"(precision/recall: {per_class}); classes: {counts}; overlay {r.overlay_png}"
        )
    typer.echo(f"report: {result.report}")
    typer.echo(f"labels: {out}/slides/<slide>.ome.zarr/labels/fibres (open with napari-ome-zarr)")
    typer.echo(f"summary: {out}/demo.json ({result.seconds:.0f} s)")
