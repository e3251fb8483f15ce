"""``nclsm-scale view``: a local web viewer of a run's slides, their fibre classes and class corrections."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from nclsm_scale.cli._options import ConfigOption, SchedulerOption, SetOption, WorkersOption, build_config


def _recorded_config(run_dir: Path) -> dict[str, Any] | None:
    """The config ``run.json`` records (the one the run's classes came from), if any."""
    from nclsm_scale.layout import RunLayout

    config = RunLayout(run_dir).run_record().get("config")
    return config if isinstance(config, dict) else None


def main(
    run_dir: Annotated[Path, typer.Argument(help="Aggregated run directory (slides/, tables/ inside).")],
    port: Annotated[int | None, typer.Option("--port", help="Port to serve on (0: any free port).")] = None,
    host: Annotated[
        str | None, typer.Option("--host", help="Address to bind; default 127.0.0.1 (this machine only).")
    ] = None,
    scheduler: SchedulerOption = None,
    workers: WorkersOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Serve a viewer of RUN_DIR's slides: zoom to full resolution, inspect and correct fibre classes.

    Re-aggregation reruns curate with the run's recorded config (run.json) unless --config is given,
    on a local Dask cluster of 2 workers unless --scheduler, --workers or --set cluster.* say otherwise.
    """
    from nclsm_scale.view import RunView, make_server

    cluster_given = scheduler or workers or any(s.strip().startswith("cluster.") for s in set_ or [])
    options: dict[str, Any] = {
        "view.port": port, "view.host": host,
        "cluster.kind": "address" if scheduler else (None if cluster_given else "local"),
        "cluster.address": scheduler,
        "cluster.n_workers": workers if workers else (None if cluster_given else 2),
    }
    cfg = build_config(config, set_, base=None if config else _recorded_config(run_dir), **options)
    view = RunView(run_dir, cfg)
    server = make_server(view, cfg.view.host, cfg.view.port)
    typer.echo(f"viewer of {run_dir} ({len(view.slide_names())} slide(s)): {server.url}  (Ctrl-C stops it)")
    try:
        server.serve_forever()
    finally:
        server.server_close()
        view.close()
        typer.echo("viewer stopped")
