"""``nclsm-scale report``: statistics, plots, class thumbnails and QuPath GeoJSON of a run, in one HTML page."""

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
    run_dir: Annotated[Path, typer.Argument(help="Run directory (slides/, tables/ inside).")],
    manifest: Annotated[
        Path | None,
        typer.Option("--manifest", metavar="CSV",
                     help="Slide metadata: a 'slide' column plus e.g. subject, diagnosis, muscle."),
    ] = None,
    geojson: Annotated[
        bool | None, typer.Option("--geojson/--no-geojson", help="Export fibres as GeoJSON for QuPath.")
    ] = None,
    scheduler: SchedulerOption = None,
    workers: WorkersOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Aggregate the run's fibre tables and write RUN_DIR/report/index.html (self-contained)."""
    from nclsm_scale.aggregate import aggregate_run
    from nclsm_scale.cluster import open_client
    from nclsm_scale.report import build_report

    cfg = build_config(
        config, set_,
        **{"report.geojson": geojson, **cluster_overrides(scheduler, workers)},
    )
    aggregate_run(run_dir, cfg.aggregate, manifest)
    with open_client(cfg.cluster) as client:
        index = build_report(run_dir, cfg, client)
    typer.echo(f"report: {index}")
