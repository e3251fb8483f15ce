"""``nclsm-scale curate``: folds, classes with reasons, user overrides; then the run's statistics again."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nclsm_scale.cli._options import (
    ConfigOption,
    SchedulerOption,
    SetOption,
    WorkersOption,
    build_config,
    cluster_overrides,
)


def main(
    slide: Annotated[Path, typer.Argument(help="Measured slide (.ome.zarr).")],
    overrides: Annotated[
        Path | None,
        typer.Option("--overrides", metavar="CSV",
                     help="User corrections: columns fibre_id,class[,reasons]; remembered beside curate's table "
                     "and applied again by later runs of curate."),
    ] = None,
    from_qupath: Annotated[
        Path | None,
        typer.Option("--from-qupath", metavar="GEOJSON",
                     help="Objects exported from QuPath (File > Export objects as GeoJSON) after reclassifying "
                     "fibres of the report's <slide>.geojson: changed classes become remembered overrides."),
    ] = None,
    clear_overrides: Annotated[
        bool, typer.Option("--clear-overrides", help="Forget the overrides remembered from earlier runs.")
    ] = False,
    table: Annotated[
        Path | None,
        typer.Option("--table", metavar="PARQUET",
                     help="measure's table; default: the run's tables/measure/<slide>.parquet."),
    ] = None,
    scheduler: SchedulerOption = None,
    workers: WorkersOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Curate a slide's fibres (AM / NTM / FAM / FR / EDGE / DEBRIS) and re-aggregate its run."""
    from nclsm_scale.aggregate import aggregate_run
    from nclsm_scale.cluster import open_client
    from nclsm_scale.curate import curate_slide
    from nclsm_scale.layout import RunLayout

    cfg = build_config(
        config, set_,
        **cluster_overrides(scheduler, workers),
    )
    layout = RunLayout.for_slide(slide)
    with open_client(cfg.cluster) as client:
        res = curate_slide(slide, cfg, client, layout=layout, measured_path=table, overrides=overrides,
                           clear_overrides=clear_overrides, qupath=from_qupath)
    aggregate_run(layout.root, cfg.aggregate)
    slides_table = layout.slides_table
    counts = ", ".join(f"{k} {v}" for k, v in res.class_counts.items())
    typer.echo(f"{slide}: {res.n_fibres} fibres ({counts}), {res.n_overridden} overridden; table {res.table}")
    if from_qupath is not None:
        typer.echo(f"{from_qupath}: {res.n_from_qupath} class change(s) taken from QuPath")
    if res.qc.qc_flag:
        typer.echo(f"{slide}: FLAGGED by slide QC: {res.qc.qc_flag} (no analysable fibres)")
    typer.echo(f"slide statistics: {slides_table}")
