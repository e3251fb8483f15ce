"""``nclsm-scale run``: a whole archive, resumable and fault-isolated, on one Dask cluster."""

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
    archive: Annotated[Path, typer.Argument(help="Folder of slides (searched recursively) or a manifest CSV/Parquet.")],
    out: Annotated[Path, typer.Option("--out", help="Run directory (created; rerun the same command to resume).")],
    manifest: Annotated[
        Path | None, typer.Option("--manifest", metavar="CSV",
                                  help="Manifest with a 'path' column plus metadata (subject, diagnosis, muscle).")
    ] = None,
    workers: WorkersOption = None,
    scheduler: SchedulerOption = None,
    maps_from_gt: Annotated[
        bool, typer.Option("--maps-from-gt", help="Segment from the ground-truth masks beside synthetic sources.")
    ] = False,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Convert, segment, measure and curate every slide, then aggregate and report; exit 1 if any slide failed."""
    cfg = build_config(
        config, set_,
        **{
            "archive.manifest": str(manifest) if manifest else None,
            "archive.maps_from_gt": True if maps_from_gt else None,
            **cluster_overrides(scheduler, workers),
        },
    )
    from nclsm_scale.cluster import open_client
    from nclsm_scale.run import run_archive

    with open_client(cfg.cluster) as client:
        result = run_archive(archive, out, cfg, client)
    typer.echo(result.summary())
    if not result.ok:
        raise typer.Exit(1)
