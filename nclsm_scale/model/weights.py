"""Weights files: save, load (safely), hash, and the bundled default network.

A weights file is a ``torch.save`` of a plain dict (loaded with
``weights_only=True``)::

    {"format": "nclsm-fibrenet", "version": 1, "spec": {...NetSpec...},
     "margin_px": int, "state_dict": {...}}

Beside it, ``<name>.json`` is the model card: training data, steps, held-out
metrics, receptive field and the sha256 of the weights file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from nclsm_scale.errors import ModelError
from nclsm_scale.model.card import BUNDLED_WEIGHTS, card_path, sha256_of
from nclsm_scale.model.net import FibreNet, NetSpec

__all__ = ["load_net", "save_net"]

log = logging.getLogger(__name__)

FORMAT = "nclsm-fibrenet"
VERSION = 1


def save_net(
    net: FibreNet, path: str | Path, *, margin_px: int, card: dict[str, Any] | None = None
) -> Path:
    """Write ``net`` to ``path`` and its model card (with the file's sha256) beside it.

    Parameters
    ----------
    net : FibreNet
        The network (its state dict is saved as float32 on CPU).
    path : path
        Weights file to write.
    margin_px : int
        Tile margin the inference engine uses by default.
    card : dict, optional
        Extra model-card fields (data, steps, metrics, receptive field).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").clone() for k, v in net.state_dict().items()}
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "spec": net.spec.to_dict(),
        "margin_px": int(margin_px),
        "state_dict": state,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    full_card = {
        "format": FORMAT,
        "version": VERSION,
        "weights_file": path.name,
        "sha256": sha256_of(path),
        "spec": net.spec.to_dict(),
        "margin_px": int(margin_px),
        **(card or {}),
    }
    card_path(path).write_text(json.dumps(full_card, indent=2) + "\n", encoding="utf-8")
    return path


def load_net(path: str | Path | None = None) -> tuple[FibreNet, int]:
    """Load a network in eval mode; ``None`` loads the bundled default weights.

    Returns
    -------
    (FibreNet, int)
        The network on CPU and its tile margin in pixels.

    Raises
    ------
    ModelError
        Naming the file when it is missing, truncated, corrupt, not a
        nclsm-scale weights file, or does not match the network architecture.
    """
    path = Path(path) if path is not None else BUNDLED_WEIGHTS
    if not path.is_file():
        hint = (
            " (the bundled weights are missing: reinstall nclsm-scale)"
            if path == BUNDLED_WEIGHTS
            else ""
        )
        raise ModelError(f"{path}: weights file not found{hint}.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, ...
        raise ModelError(
            f"{path}: cannot read the weights file (truncated or corrupt?): "
            f"{type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError(f"{path}: not an nclsm-scale weights file (expected format '{FORMAT}').")
    if payload.get("version") != VERSION:
        raise ModelError(
            f"{path}: weights format version {payload.get('version')!r}; "
            f"this nclsm-scale reads {VERSION}."
        )
    try:
        spec = NetSpec(**payload["spec"])
        net = FibreNet(spec)
        net.load_state_dict(payload["state_dict"], strict=True)
        margin_px = int(payload["margin_px"])
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"{path}: weights do not match the network architecture: {first}"
        ) from None
    net.eval()
    log.debug("loaded %s (%s, margin %d px)", path, spec, margin_px)
    return net, margin_px
