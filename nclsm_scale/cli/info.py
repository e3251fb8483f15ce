"""``nclsm-scale info``: versions, devices, dashboard support, config locations."""

from __future__ import annotations

import os
import platform

import typer

from nclsm_scale.cli._options import ConfigOption, SetOption, build_config
from nclsm_scale.versions import package_versions, version_of


def _torch_lines() -> list[str]:
    try:
        import torch
    except ImportError as exc:
        return [f"torch: cannot import ({exc})"]
    lines = [f"torch threads: {torch.get_num_threads()}"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            lines.append(f"cuda:{i}: {props.name}, {props.total_memory / 2**30:.1f} GiB")
    else:
        lines.append("cuda: not available")
    mps = getattr(torch.backends, "mps", None)
    lines.append(f"mps: {'available' if mps is not None and mps.is_available() else 'not available'}")
    from nclsm_scale.model.device import select_device
    from nclsm_scale.model.infer import resolve_cpu_path

    lines.append(f"device chosen for inference (model.device=auto): {select_device('auto')}")
    lines.append(f"CPU inference path (model.cpu_path=auto): {resolve_cpu_path('auto')}")
    return lines


def main(config: ConfigOption = None, set_: SetOption = None) -> None:
    """Show package versions, CPU/GPU devices, Dask dashboard support and config files."""
    from nclsm_scale.config import config_dirs, list_presets

    cfg = build_config(config, set_)
    typer.echo(f"python: {platform.python_version()} ({platform.platform()})")
    typer.echo(f"cpu cores: {os.cpu_count()}")
    try:
        import psutil

        typer.echo(f"memory: {psutil.virtual_memory().total / 2**30:.1f} GiB")
    except ImportError:
        pass
    typer.echo("packages:")
    for name, found in package_versions().items():
        typer.echo(f"  {name}: {found}")
    typer.echo("devices:")
    for line in _torch_lines():
        typer.echo(f"  {line}")
    bokeh = version_of("bokeh")
    dash = "yes" if bokeh != "not installed" else "no (install bokeh>=3.1)"
    typer.echo(f"dask dashboard: {dash}; bind address {cfg.cluster.dashboard_address}")
    prom = version_of("prometheus-client") != "not installed"
    typer.echo(f"prometheus /metrics on the scheduler: {'yes' if prom else 'no (install prometheus-client)'}")
    typer.echo("config folders: " + ", ".join(str(d) for d in config_dirs()))
    typer.echo("presets: " + ", ".join(list_presets()))
    typer.echo(f"cluster: {cfg.cluster.kind}")
