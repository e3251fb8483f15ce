"""``nclsm-scale convert``: whole-slide images to validated, chunked OME-Zarr (NGFF 0.5)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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

#: Dask settings for a conversion's local workers: drop the nanny's MALLOC_TRIM_THRESHOLD_;
#: with it glibc maps and faults in every region-sized array afresh, which made conversion
#: tasks 1.5-2x slower (measured). The convert benchmark starts its cluster with these too.
WORKER_DASK_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


def worker_config() -> Any:
    """Context manager applying :data:`WORKER_DASK_CONFIG` while a cluster is started and used."""
    import dask
    import distributed  # noqa: F401 - its defaults must exist first: dask.config.set deletes, on
    # exit, a whole section that was missing when it was entered (here: all of "distributed")

    return dask.config.set(WORKER_DASK_CONFIG)


def main(
    inputs: Annotated[list[Path], typer.Argument(help="Slide files (TIFF, OME-TIFF, SVS, NDPI, PNG, JPEG, OME-Zarr).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for <slide>.ome.zarr stores.")],
    chunk: Annotated[int | None, typer.Option(
        "--chunk", metavar="PX", help="Chunk edge in pixels.", show_default=config_default("convert.chunk_px"))] = None,
    pixel_size: Annotated[
        float | None, typer.Option("--pixel-size", metavar="UM", help="Pixel size for files that carry none.")
    ] = None,
    channels: Annotated[
        str | None, typer.Option("--channels", metavar="A,B", help="Channel names in file order, e.g. membrane,mito.")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo slides already converted.")] = False,
    scheduler: SchedulerOption = None,
    workers: WorkersOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Convert slides to OME-Zarr; print one summary line per slide; exit 1 if any failed."""
    from nclsm_scale.cluster import open_client
    from nclsm_scale.convert import convert

    cfg = build_config(
        config, set_,
        **{
            "convert.chunk_px": chunk,
            "convert.pixel_size_um": pixel_size,
            "convert.channels": [c.strip() for c in channels.split(",")] if channels else None,
            "convert.overwrite": True if overwrite else None,
            **cluster_overrides(scheduler, workers),
        },
    )
    with worker_config():
        with open_client(cfg.cluster) as client:
            results = convert(inputs, out, cfg.convert, client)
    for r in results:
        detail = f" ({r.message})" if r.message else ""
        where = f" -> {r.store}" if r.store else ""
        typer.echo(f"{r.status:9s} {r.source}{where}{detail}" + (f" [{r.seconds:.1f} s]" if r.seconds else ""))
    failed = sum(r.status == "failed" for r in results)
    typer.echo(f"{len(results) - failed} of {len(results)} slides ok, {failed} failed")
    if failed:
        raise typer.Exit(1)
