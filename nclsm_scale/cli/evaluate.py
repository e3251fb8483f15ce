"""``nclsm-scale evaluate``: instance-segmentation metrics of a prediction against ground truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from nclsm_scale.cli._options import ConfigOption, SetOption, build_config


def main(
    pred: Annotated[
        Path, typer.Argument(help="Predicted labels: TIFF, or OME-Zarr store / label group.")
    ],
    gt: Annotated[
        Path, typer.Argument(help="Ground-truth labels: TIFF, or OME-Zarr store / label group.")
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the metrics as one JSON object.")
    ] = False,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Compare predicted fibre labels PRED with ground truth GT.

    Precision, recall and F1 at IoU 0.5/0.75/0.9, mean matched IoU, splits and
    merges (one-to-one matching; definitions in nclsm_scale.evaluate), scored at
    level 0 of both, whose pixel size is printed: the demo scores the segmentation
    level, so its IoUs differ from these.
    """
    build_config(config, set_)
    from nclsm_scale.errors import ValidationError
    from nclsm_scale.evaluate import evaluate_instances, labels_pixel_size_um, read_labels

    p, g = read_labels(pred), read_labels(gt)
    if p.shape != g.shape:
        raise ValidationError(
            f"{pred} has shape {p.shape} but {gt} has shape {g.shape}; they must match."
        )
    m = evaluate_instances(p, g)
    sizes = [labels_pixel_size_um(pred), labels_pixel_size_um(gt)]
    if as_json:
        typer.echo(json.dumps({**m.to_dict(), "level": 0, "pixel_size_um": sizes[0] or sizes[1]}))
        return
    where = [f"{s:g} um/px" if s is not None else "pixel size not recorded" for s in sizes]
    typer.echo(f"scored at level 0, {p.shape[0]} x {p.shape[1]} px: PRED {where[0]}, GT {where[1]}")
    typer.echo(f"fibres: ground truth {m.n_gt}, predicted {m.n_pred}")
    typer.echo("IoU    precision  recall  F1")
    for key in m.f1:
        typer.echo(f"{key:<6} {m.precision[key]:9.4f} {m.recall[key]:7.4f} {m.f1[key]:7.4f}")
    typer.echo(f"mean IoU of matched fibres (IoU >= 0.5): {m.mean_matched_iou:.4f}")
    typer.echo(
        f"split ground-truth fibres: {m.splits}; "
        f"merged predictions: {m.merges} ({m.merged_gt} fibres)"
    )
