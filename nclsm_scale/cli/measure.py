"""``nclsm-scale measure``: one row per fibre of a segmented slide, each measured whole by its owner block."""

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
    config_default,
)


def main(
    slide: Annotated[Path, typer.Argument(help="Segmented slide (.ome.zarr with labels/fibres).")],
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="DIR",
                     help="Folder of the table; default: the run's tables/measure (next to slides/)."),
    ] = None,
    block_size: Annotated[
        int | None, typer.Option("--block-size", metavar="PX", help="Block core edge at the segmentation level.",
                                 show_default=config_default("grid.block_px"))
    ] = None,
    scheduler: SchedulerOption = None,
    workers: WorkersOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Measure every fibre (CSA, min Feret, shape, intensities) into tables/measure/<slide>.parquet."""
    from nclsm_scale.cluster import open_client
    from nclsm_scale.measure.driver import measure_slide

    cfg = build_config(
        config, set_,
        **{
            "grid.block_px": block_size,
            **cluster_overrides(scheduler, workers),
        },
    )
    with open_client(cfg.cluster) as client:
        path = measure_slide(slide, cfg, client, out_dir=out)
    typer.echo(f"{slide}: fibre table {path}")
