"""Options shared by every command and the one place they become a RunConfig."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from nclsm_scale.config import RunConfig, load_config, parse_set_option


def config_default(key: str, text: str | None = None) -> str:
    """Help text of an option's default that lives in the config: ``"KEY: VALUE"``.

    ``text`` replaces the value's own spelling (``"4096x4096"`` for ``[4096, 4096]``).

    >>> config_default("train.seed")
    'train.seed: 0'
    """
    section, _, name = key.partition(".")
    value = getattr(getattr(RunConfig(), section), name)
    if text is None:
        text = "auto" if value is None else ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    return f"{key}: {text}"


ConfigOption = Annotated[
    list[str] | None,
    typer.Option(
        "--config",
        "-c",
        metavar="FILE",
        help="YAML config file or preset name (repeatable; later files win).",
    ),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="SECTION.KEY=VALUE", help="Override one config value (repeatable)."),
]

SchedulerOption = Annotated[
    str | None,
    typer.Option("--scheduler", metavar="ADDRESS", help="Use a running Dask scheduler (tcp://HOST:8786).",
                 show_default="a local cluster"),
]
WorkersOption = Annotated[int | None, typer.Option(
    "--workers", min=1, help="Number of local Dask workers.",
    show_default=config_default("cluster.n_workers", "one per core"))]


def cluster_overrides(scheduler: str | None, workers: int | None) -> dict[str, Any]:
    """Dotted config overrides for the ``--scheduler`` and ``--workers`` options."""
    return {
        "cluster.kind": "address" if scheduler else None,
        "cluster.address": scheduler,
        "cluster.n_workers": workers,
    }


def build_config(
    config: list[str] | None, set_: list[str] | None, *, base: Any = None, **overrides: Any
) -> RunConfig:
    """Merge config files, ``--set`` values and a command's own options (highest priority).

    ``overrides`` maps dotted config keys to option values; ``None`` means the
    option was not given. ``base`` (a mapping: a recorded config) goes under all of
    them; typed ``Any`` because callers unpack their overrides from one dict, whose
    value type mypy would check against it.
    """
    dotted = dict(parse_set_option(item) for item in set_ or [])
    dotted.update({k: v for k, v in overrides.items() if v is not None})
    return load_config(config or [], dotted, base=base)
