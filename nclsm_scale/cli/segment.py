"""``nclsm-scale segment``: exact, seam-free fibre labels of a converted slide on Dask."""

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
    slide: Annotated[Path, typer.Argument(help="Converted slide (.ome.zarr).")],
    level: Annotated[
        int | None, typer.Option("--level", help="Pyramid level; default: nearest segment.target_pixel_size_um.")
    ] = None,
    block_size: Annotated[
        int | None, typer.Option("--block-size", metavar="PX", help="Block core edge at the segmentation level.",
                                 show_default=config_default("grid.block_px"))
    ] = None,
    halo_um: Annotated[
        float | None, typer.Option("--halo-um", metavar="UM", help="Halo around each block core.",
                                   show_default=config_default("grid.halo_um", "the max fibre diameter"))
    ] = None,
    maps: Annotated[
        Path | None, typer.Option("--maps", metavar="STORED_MAPS_ZARR",
                                  help="Segment stored (K, y, x) maps instead of running the network.")
    ] = None,
    scheduler: SchedulerOption = None,
    workers: WorkersOption = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo a slide already segmented.")] = False,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Segment one slide into labels/fibres and labels/regions; print the fibre count and escalations."""
    from nclsm_scale.cluster import open_client
    from nclsm_scale.segment import segment_slide

    cfg = build_config(
        config, set_,
        **{
            "segment.level": level,
            "grid.block_px": block_size,
            "grid.halo_um": halo_um,
            "segment.maps": str(maps) if maps else None,
            "segment.overwrite": True if overwrite else None,
            **cluster_overrides(scheduler, workers),
        },
    )
    with open_client(cfg.cluster) as client:
        r = segment_slide(slide, cfg, client)
    state = "already segmented" if r.skipped else f"segmented in {r.seconds:.1f} s"
    typer.echo(
        f"{r.slide}: {state}: {r.n_fibres} fibres, {r.escalations} escalation(s); level {r.level} "
        f"({r.pixel_size_um:.3g} um/px), {r.n_blocks} blocks of {r.block_px} px, halo {r.halo_px} px"
    )
