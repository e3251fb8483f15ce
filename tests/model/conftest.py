"""Shared fixtures for the model tests: a small random network and a toy section."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from nclsm_scale.model.net import FibreNet, NetSpec


@pytest.fixture(scope="session")
def tiny_net() -> FibreNet:
    """A small untrained network with non-trivial batch-norm statistics."""
    torch.manual_seed(0)
    net = FibreNet(NetSpec(base_channels=4, depth=3, max_width_factor=4))
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.fixture(scope="session")
def make_toy():
    """The toy section generator :func:`toy_section`."""
    return toy_section


def toy_section(
    shape_yx: tuple[int, int] = (160, 200), seed: int = 0, cell_px: int = 900
) -> tuple[np.ndarray, np.ndarray]:
    """A toy two-channel section ``(2, y, x)`` float32 in [0, 1] with Voronoi fibres and labels."""
    rng = np.random.default_rng(seed)
    h, w = shape_yx
    n = max(4, h * w // cell_px)
    pts = rng.uniform((0, 0), (h, w), size=(n, 2))
    yy, xx = np.mgrid[:h, :w]
    d = (yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2
    owner = np.argmin(d, axis=-1) + 1
    edge = np.zeros((h, w), bool)
    edge[:-1] |= owner[:-1] != owner[1:]
    edge[:, :-1] |= owner[:, :-1] != owner[:, 1:]
    edge = ndimage.binary_dilation(edge, iterations=1)
    labels = np.where(edge, 0, owner).astype(np.uint32)
    membrane = ndimage.gaussian_filter(edge.astype(np.float32), 1.0)
    mito = np.where(labels > 0, rng.uniform(0.3, 0.8, n + 1)[owner], 0.05).astype(np.float32)
    image = np.stack([membrane, mito]) + rng.normal(0, 0.03, (2, h, w)).astype(np.float32)
    return image.astype(np.float32), labels
