"""``nclsm-scale run``: a whole archive, resumable and fault-isolated, on one Dask cluster."""

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
)


def main(
    archive: Annotated[str, typer.Argument(
        metavar="ARCHIVE", help="Folder of slides (searched recursively) or a manifest CSV/Parquet; a path or a "
                                "URL (s3://bucket/prefix).")],
    out: Annotated[str, typer.Option(
        "--out", metavar="RUN_DIR", help="Run directory, a path or a URL (s3://bucket/run, staged locally in "
                                         "archive.work_dir); created; rerun the same command to resume.")],
    manifest: Annotated[
        str | None, typer.Option("--manifest", metavar="CSV",
                                 help="Manifest (path or URL) with a 'path' column plus metadata (subject, "
                                      "diagnosis, muscle).")
    ] = None,
    workers: WorkersOption = None,
    scheduler: SchedulerOption = None,
    performance_report: Annotated[
        Path | None, typer.Option("--performance-report", metavar="HTML",
                                  help="Write Dask's performance report of the run (self-contained HTML) here.")
    ] = None,
    verify: Annotated[bool, typer.Option(
        "--verify", help="Before skipping a finished stage, compare every output file's checksum with what the "
                         "stage wrote (default: presence and size).")] = False,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Convert, segment, measure and curate every slide, then aggregate and report; exit 1 if any slide failed."""
    cfg = build_config(
        config, set_,
        **{
            "archive.manifest": manifest,
            **cluster_overrides(scheduler, workers),
        },
    )
    import contextlib
    from collections.abc import Iterator

    from tqdm.contrib.logging import logging_redirect_tqdm

    from nclsm_scale.cluster import open_client
    from nclsm_scale.run import run_archive

    @contextlib.contextmanager
    def cluster() -> Iterator[Any]:
        """The client, opened by the run once its directory is locked and its slides are found."""
        with open_client(cfg.cluster) as client, contextlib.ExitStack() as stack:
            if performance_report is not None:
                from distributed import performance_report as dask_performance_report

                performance_report.parent.mkdir(parents=True, exist_ok=True)
                stack.enter_context(dask_performance_report(filename=str(performance_report), mode="inline"))
            yield client

    with logging_redirect_tqdm():  # log lines print above the progress bar
        result = run_archive(archive, out, cfg, cluster, verify=verify)
    typer.echo(result.summary())
    if performance_report is not None:
        typer.echo(f"performance report: {performance_report}")
    if not result.ok:
        raise typer.Exit(1)
