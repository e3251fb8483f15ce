"""``nclsm-scale synth``: write a synthetic muscle section with exact ground truth."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from nclsm_scale.cli._options import ConfigOption, SetOption, build_config, config_default
from nclsm_scale.errors import ConfigError

_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_size(text: str | None) -> tuple[int, int] | None:
    """Parse ``HxW`` (pixels, y then x) into a tuple; ``None`` stays ``None``."""
    if text is None:
        return None
    match = _SIZE.match(text)
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise ConfigError(
            f"--size {text!r}: expected HEIGHTxWIDTH in pixels with both numbers positive, "
            "e.g. --size 4096x4096 or --size 1024x1536."
        )
    return int(match[1]), int(match[2])


def main(
    out: Annotated[
        Path,
        typer.Argument(help="Output image, e.g. slide.ome.tiff (ground truth goes beside it)."),
    ],
    size: Annotated[
        str | None, typer.Option("--size", metavar="HxW", help="HEIGHTxWIDTH in pixels, e.g. 4096x4096.",
                                  show_default=config_default("synth.size_px", "4096x4096"))
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Random seed (same seed, same files).",
                                  show_default=config_default("synth.seed"))
    ] = None,
    pixel_size: Annotated[
        float | None, typer.Option("--pixel-size", metavar="UM", help="Pixel size in um.",
                                    show_default=config_default("synth.pixel_size_um"))
    ] = None,
    chunk: Annotated[
        int | None, typer.Option("--chunk", metavar="PX", help="Rendering chunk edge in pixels.",
                                  show_default=config_default("synth.chunk_px"))
    ] = None,
    from_mask: Annotated[
        Path | None,
        typer.Option("--from-mask", help="Render on this instance mask (TIFF) instead."),
    ] = None,
    mask_pixel_size: Annotated[
        float | None, typer.Option("--mask-pixel-size", help="Pixel size of --from-mask in um.")
    ] = None,
    preview: Annotated[
        Path | None,
        typer.Option("--preview", help="Also write an RGB preview PNG (R membrane, G mito)."),
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Write a synthetic two-channel IF section (dystrophin, VDAC) with labels, regions, table."""
    cfg = build_config(
        config,
        set_,
        **{
            "synth.size_px": parse_size(size),
            "synth.seed": seed,
            "synth.pixel_size_um": pixel_size,
            "synth.chunk_px": chunk,
        },
    ).synth
    from nclsm_scale.synth.export import synthesize

    written = synthesize(
        out, cfg, from_mask=from_mask, mask_pixel_size_um=mask_pixel_size, preview=preview
    )
    for kind, path in written.items():
        typer.echo(f"{kind}: {path}")
