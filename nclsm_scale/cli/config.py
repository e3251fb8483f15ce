"""``nclsm-scale config``: show the resolved configuration as YAML."""

from __future__ import annotations

from typing import Annotated

import typer

from nclsm_scale.cli._options import ConfigOption, SetOption, build_config


def main(
    config: ConfigOption = None,
    set_: SetOption = None,
    section: Annotated[
        str | None, typer.Argument(help="Show only this section (e.g. segment).")
    ] = None,
) -> None:
    """Validate config files and print the resolved configuration (defaults + files + --set)."""
    import yaml

    from nclsm_scale.errors import ConfigError

    data = build_config(config, set_).model_dump(mode="json")
    if section is not None:
        if section not in data:
            raise ConfigError(f"no config section {section!r}; sections: {', '.join(data)}.")
        data = {section: data[section]}
    typer.echo(yaml.safe_dump(data, sort_keys=False).rstrip())
