"""Model cards and weights identity, without importing torch.

Beside each weights file ``<name>.pt`` lies its model card ``<name>.json``:
training data, steps, held-out metrics, receptive field and the sha256 of the
weights file. Run records and the report only need that identity, so they read it
here and never pay for importing torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from nclsm_scale.config import ModelConfig
from nclsm_scale.errors import ModelError

__all__ = ["BUNDLED_WEIGHTS", "card_path", "read_card", "sha256_of", "weights_path", "weights_record"]

#: The network shipped in the package.
BUNDLED_WEIGHTS = Path(__file__).resolve().parent / "weights" / "default.pt"


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def card_path(weights: str | Path) -> Path:
    """Return the model card path beside a weights file (``x.pt`` -> ``x.json``)."""
    return Path(weights).with_suffix(".json")


def read_card(weights: str | Path) -> dict[str, Any]:
    """Read the model card of a weights file (``{}`` if it has none)."""
    path = card_path(weights)
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: model card is not valid JSON: {exc}") from None


def weights_path(cfg: ModelConfig) -> Path:
    """The weights file ``cfg`` names, else the bundled one."""
    return Path(cfg.weights) if cfg.weights else BUNDLED_WEIGHTS


def weights_record(cfg: ModelConfig) -> dict[str, Any]:
    """The configured weights file and its sha256 (from its card, else hashed; None without a file)."""
    path = weights_path(cfg)
    if not path.is_file():
        return {"weights": str(path), "sha256": None}
    return {"weights": str(path), "sha256": read_card(path).get("sha256") or sha256_of(path)}
