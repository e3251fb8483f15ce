"""``nclsm-scale validate``: check OME-Zarr stores and say what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nclsm_scale.cli._options import ConfigOption, SetOption, build_config


def main(
    paths: Annotated[list[Path], typer.Argument(help="OME-Zarr stores (.ome.zarr folders).")],
    deep: Annotated[bool, typer.Option(
        "--deep", help="Also decode every chunk and compare every file's checksum with its run's manifest.")] = False,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Validate OME-Zarr images (NGFF, pyramid, labels, completeness, run manifests); exit 1 if any is invalid."""
    from nclsm_scale.errors import ValidationError
    from nclsm_scale.validate import check_store

    build_config(config, set_)
    bad = 0
    for path in paths:
        problems = check_store(path, deep=deep)
        if problems:
            bad += 1
            typer.echo(f"{path}: INVALID")
            for problem in problems:
                typer.echo(f"  - {problem}")
        else:
            typer.echo(f"{path}: valid")
    if bad:
        raise ValidationError(f"{bad} of {len(paths)} stores invalid")
