"""Torch device selection: CUDA, then MPS, then CPU."""

from __future__ import annotations

from nclsm_scale.errors import ConfigError


def select_device(requested: str = "auto") -> str:
    """Return the torch device string to use.

    Parameters
    ----------
    requested : {"auto", "cpu", "cuda", "mps"}
        ``auto`` picks CUDA, then MPS, then CPU.

    >>> select_device("cpu")
    'cpu'
    """
    import torch

    if requested == "cpu":
        return "cpu"
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if requested == "auto":
        return "cuda" if cuda else ("mps" if mps else "cpu")
    if requested == "cuda" and not cuda:
        raise ConfigError("model.device is 'cuda' but torch finds no CUDA device; use 'auto' or 'cpu'.")
    if requested == "mps" and not mps:
        raise ConfigError("model.device is 'mps' but torch finds no MPS device; use 'auto' or 'cpu'.")
    return requested
