"""``nclsm-scale train``: train the fibre network and write weights plus a model card."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nclsm_scale.cli._options import ConfigOption, SetOption, build_config, config_default


def main(
    out: Annotated[
        Path, typer.Option("--out", help="Weights file to write (model card beside it).")
    ],
    steps: Annotated[
        int | None, typer.Option("--steps", help="Optimiser steps.", show_default=config_default("train.steps"))
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Random seed.", show_default=config_default("train.seed"))
    ] = None,
    data: Annotated[
        list[str] | None,
        typer.Option("--data", help="synth, ncl-sm, an OME-Zarr store or a folder (repeatable)."),
    ] = None,
    init: Annotated[
        Path | None,
        typer.Option("--init", help="Weights file to start from (fine-tuning)."),
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Train the fibre network on synthetic, NCL-SM-rendered or your own annotated images.

    Interrupted runs resume from OUT.ckpt. The NCL-SM held-out rows are never
    trained on and are evaluated (model and classical baseline) at the end.
    """
    cfg = build_config(
        config, set_, **{
            "train.steps": steps,
            "train.seed": seed,
            "train.data": data,
            "train.init_weights": str(init) if init is not None else None,
        },
    )
    from nclsm_scale.model.train import train_from_config

    card = train_from_config(cfg.train, out)
    if card is not None:
        typer.echo(
            f"wrote {out} (margin {card['receptive_field']['margin_px']} px) and its model card"
        )
