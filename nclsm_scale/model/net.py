"""The fibre network: a compact fully convolutional U-Net and its receptive field.

The network maps a normalised ``(2, y, x)`` image (membrane, mito) to three dense
maps (logits): fibre interior, boundary, and a per-fibre normalised distance to the
boundary. Its total downsampling factor is ``2 ** depth``; inputs must have sides
that are multiples of it. Batch normalisation is folded to a per-channel affine
map in eval mode, so every output pixel depends only on a bounded neighbourhood.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["FibreNet", "NetSpec", "measure_receptive_field"]


@dataclass(frozen=True)
class NetSpec:
    """Architecture hyper-parameters (stored with the weights)."""

    in_channels: int = 2
    out_channels: int = 3
    base_channels: int = 8
    depth: int = 4
    max_width_factor: int = 16

    def to_dict(self) -> dict[str, int]:
        """Plain dict for JSON and the weights file."""
        return asdict(self)


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class FibreNet(nn.Module):
    """U-Net with ``depth`` 2x poolings, nearest upsampling and skip concatenation."""

    def __init__(self, spec: NetSpec = NetSpec()) -> None:
        super().__init__()
        self.spec = spec
        widths = [
            spec.base_channels * min(2**i, spec.max_width_factor) for i in range(spec.depth + 1)
        ]
        self.down = nn.ModuleList()
        c_prev = spec.in_channels
        for w in widths:
            self.down.append(_double_conv(c_prev, w))
            c_prev = w
        self.pool = nn.MaxPool2d(2)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.up = nn.ModuleList(
            _double_conv(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(spec.depth))
        )
        self.head = nn.Conv2d(widths[0], spec.out_channels, 1)

    @property
    def downsampling(self) -> int:
        """Total downsampling factor; window sides must be multiples of it."""
        return 2**self.spec.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(n, out_channels, y, x)`` for a batch ``(n, in_channels, y, x)``."""
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < self.spec.depth:
                skips.append(x)
                x = self.pool(x)
        for block in self.up:
            x = block(torch.cat([self.upsample(x), skips.pop()], dim=1))
        return self.head(x)


def measure_receptive_field(
    net: FibreNet, *, size_px: int = 384, mass: float = 0.999, seed: int = 0
) -> dict[str, int]:
    """Measure the receptive field radius of ``net`` from its impulse response.

    The gradient of the centre output pixel (sum over channels) with respect to a
    random input gives the influence of every input pixel. ``support_radius_px``
    is the half-width of the square holding every non-zero gradient (the exact
    dependence range for this input); ``effective_radius_px`` the half-width of
    the smallest centred square holding ``mass`` of the total absolute gradient.

    Returns
    -------
    dict
        ``{"support_radius_px", "effective_radius_px", "size_px"}``.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((1, net.spec.in_channels, size_px, size_px), generator=gen, requires_grad=True)
    was_training = net.training
    net.eval()
    try:
        out = net(x)
        c = size_px // 2
        out[0, :, c, c].sum().backward()
    finally:
        net.train(was_training)
    if x.grad is None:
        raise RuntimeError("no gradient reached the input; the network does not depend on it")
    grad = x.grad.detach().abs().sum(dim=(0, 1)).numpy().astype(np.float64)
    ys, xs = np.nonzero(grad)
    support = int(max(np.abs(ys - c).max(), np.abs(xs - c).max())) if ys.size else 0
    total = grad.sum()
    effective = support
    for r in range(support + 1):
        if grad[c - r : c + r + 1, c - r : c + r + 1].sum() >= mass * total:
            effective = r
            break
    return {"support_radius_px": support, "effective_radius_px": effective, "size_px": size_px}
