"""Tiled inference with exact, region-independent results.

Windows of ``window_px`` lie on a lattice anchored at the slide origin with
stride ``window_px - 2 * margin_px``; window ``(i, j)`` reads the slide at
``(i * stride - margin, j * stride - margin)`` (zeros outside the slide) and
contributes only its valid centre ``[i * stride, (i + 1) * stride)``. The valid
centres partition the slide, so every output pixel is computed by exactly one
window whose input depends only on the slide: any region gives the same values
as the whole slide, bit for bit. Batches always hold ``batch_size`` windows
(zero windows pad the last one), so the batch shape never depends on the region,
and every CPU path computes each window of a batch alike whatever windows share it.

On the CPU the network runs one of four paths (``model.cpu_path``): ``eager`` (the
trained module, fp32), ``fused`` (batch norm folded into the convolutions by
``torch.fx``, channels-last, fp32), ``bf16`` (``fused`` under bfloat16 autocast) and
``compile`` (``fused`` compiled by TorchInductor with frozen weights, compiled once
when the engine is built); ``auto`` is ``bf16`` on CPUs with native bfloat16
instructions (AVX512-BF16 or AMX), where it is fastest, else ``fused``. CUDA and MPS
run channels-last with float16 autocast.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch
from torch import nn

from nclsm_scale.config import ModelConfig
from nclsm_scale.errors import ConfigError, ModelError
from nclsm_scale.model.device import select_device
from nclsm_scale.model.net import FibreNet

__all__ = ["CPU_PATHS", "MAP_CHANNELS", "Engine", "ReadFn", "load_engine", "resolve_cpu_path"]

log = logging.getLogger(__name__)

#: Output maps, in order: fibre-interior probability, boundary probability and
#: per-fibre normalised distance to the boundary (1 at the fibre's centre).
MAP_CHANNELS: tuple[str, ...] = ("foreground", "boundary", "distance")

#: ``read(y0, x0, y1, x1) -> (C, y1 - y0, x1 - x0)`` normalised float32 image.
ReadFn = Callable[[int, int, int, int], np.ndarray]


#: CPU inference paths, as ``model.cpu_path`` names them (``auto`` picks one of them).
CPU_PATHS: tuple[str, ...] = ("eager", "fused", "bf16", "compile")


def resolve_cpu_path(requested: str) -> str:
    """The CPU path ``requested`` stands for: ``auto`` is ``bf16`` with native bfloat16, else ``fused``.

    >>> resolve_cpu_path("eager")
    'eager'
    """
    if requested != "auto":
        return requested
    # torch's own CPU feature probes (private, so a torch without them counts as no native bfloat16)
    probes = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    native = any(probe() for probe in probes if probe is not None)
    return "bf16" if native else "fused"


def _round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def _fuse(net: FibreNet) -> nn.Module:
    """A copy of ``net`` (eval mode) with every batch norm folded into the convolution before it."""
    from torch.fx.experimental.optimization import fuse

    return fuse(net.eval()).to(memory_format=torch.channels_last)  # type: ignore[call-overload]


class Engine:
    """Run a :class:`FibreNet` over any region of a slide on a global window lattice.

    Parameters
    ----------
    net : FibreNet
        The network (moved to the device, set to eval mode).
    device : str
        ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda`` or ``mps``.
    batch_size : int
        Windows per forward pass (fixed: the last batch is padded).
    window_px : int
        Window edge; a multiple of the network's downsampling factor.
    amp : bool
        float16 autocast on CUDA/MPS (ignored on CPU).
    margin_px : int, optional
        Discarded border of each window; by default the measured effective
        receptive field radius rounded up to the downsampling factor.
    cpu_path : {"auto", "eager", "fused", "bf16", "compile"}
        How the network runs on the CPU (see the module docstring).
    """

    def __init__(
        self,
        net: FibreNet,
        *,
        device: str = "auto",
        batch_size: int = 4,
        window_px: int = 512,
        amp: bool = True,
        margin_px: int | None = None,
        cpu_path: str = "auto",
    ) -> None:
        from nclsm_scale.model.net import measure_receptive_field

        self.factor = net.downsampling
        if margin_px is None:
            margin_px = measure_receptive_field(net)["effective_radius_px"]
        self.margin_px = _round_up(max(int(margin_px), 0), self.factor)
        if window_px % self.factor:
            raise ConfigError(
                f"model.window_px={window_px} must be a multiple of the network's downsampling "
                f"factor {self.factor}."
            )
        self.window_px = int(window_px)
        self.stride_px = self.window_px - 2 * self.margin_px
        if self.stride_px < self.factor:
            raise ConfigError(
                f"model.window_px={window_px} leaves no valid centre with a margin of "
                f"{self.margin_px} px on each side; "
                f"use at least {2 * self.margin_px + self.factor}."
            )
        self.batch_size = int(batch_size)
        self.device = torch.device(select_device(device))
        self.amp = bool(amp) and self.device.type in ("cuda", "mps")
        if cpu_path != "auto" and cpu_path not in CPU_PATHS:
            raise ConfigError(f"model.cpu_path={cpu_path!r} is not one of auto, {', '.join(CPU_PATHS)}.")
        self.path = resolve_cpu_path(cpu_path) if self.device.type == "cpu" else "channels_last"
        if self.device.type == "cuda":
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        self.in_channels = net.spec.in_channels
        net = net.to(self.device).eval()
        self.net: nn.Module = net
        self.channels_last = self.path != "eager"
        if self.path == "channels_last":
            self.net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        elif self.path != "eager":
            self.net = _fuse(net)
        self.compile_seconds = 0.0
        if self.path == "compile":
            self.net = torch.compile(self.net, dynamic=False, options={"freezing": True})  # type: ignore[assignment]
            t0 = time.perf_counter()
            try:
                self.forward(np.zeros((self.batch_size, self.in_channels, window_px, window_px), np.float32))
            except torch._dynamo.exc.BackendCompilerFailed as exc:
                raise ModelError(
                    f"model.cpu_path 'compile' could not compile the network ({type(exc.inner_exception).__name__}); "
                    "it needs a C++ compiler on every worker: install one or set model.cpu_path: fused."
                ) from exc
            self.compile_seconds = time.perf_counter() - t0
            log.info("compiled the network for %d x %d px windows in %.1f s",
                     window_px, window_px, self.compile_seconds)

    def __repr__(self) -> str:
        return (
            f"Engine(device={self.device.type}, window_px={self.window_px}, "
            f"margin_px={self.margin_px}, "
            f"stride_px={self.stride_px}, batch_size={self.batch_size}, amp={self.amp}, "
            f"path={self.path})"
        )

    def forward(self, windows: np.ndarray) -> np.ndarray:
        """Run one batch of windows ``(n, C, W, W)``; return maps ``(n, K, W, W)`` float32."""
        x = torch.from_numpy(windows).to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            with self.autocast():
                logits = self.net(x)
            return logits.float().sigmoid_().cpu().numpy()

    def autocast(self) -> AbstractContextManager[object]:
        """The autocast context of this engine's path (float16 on GPU, bfloat16 on ``bf16``), else a no-op."""
        if self.amp:
            return torch.autocast(self.device.type, dtype=torch.float16)
        if self.path == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return nullcontext()

    def window_origins(
        self, shape_yx: tuple[int, int], y0: int, x0: int, y1: int, x1: int
    ) -> list[tuple[int, int]]:
        """Lattice indices ``(i, j)`` of the windows whose valid centres meet the region."""
        s = self.stride_px
        rows = range(y0 // s, -(-y1 // s))
        cols = range(x0 // s, -(-x1 // s))
        return [(i, j) for i in rows for j in cols]

    def predict_windows(
        self, read: ReadFn, shape_yx: tuple[int, int], windows: list[tuple[int, int]]
    ) -> np.ndarray:
        """Valid centres ``(n, K, stride, stride)`` float32 of lattice windows ``(i, j)``, in order.

        Batches run across the whole list, so ``n`` windows cost ``ceil(n / batch_size)``
        forward passes wherever they lie. Consecutive windows of one lattice row, and
        consecutive such rows with the same columns, are read in one call of ``read``
        (clipped to the slide, zeros outside). A centre reaching past the slide's edge
        holds the network's output there.
        """
        height, width = int(shape_yx[0]), int(shape_yx[1])
        s, m, w = self.stride_px, self.margin_px, self.window_px
        runs: list[list[int]] = []  # [i0, j0, rows, cols]: rectangles of windows, in list order
        for i, j in windows:
            last = runs[-1] if runs else None
            if last and last[2] == 1 and i == last[0] and j == last[1] + last[3]:
                last[3] += 1
            else:
                runs.append([i, j, 1, 1])
            if len(runs) > 1 and runs[-1][2] == 1 and runs[-2][0] + runs[-2][2] == runs[-1][0] \
                    and runs[-2][1] == runs[-1][1] and runs[-2][3] == runs[-1][3]:
                runs[-2][2] += 1  # a complete row under a rectangle of the same columns joins it
                runs.pop()
        canvases: list[tuple[np.ndarray, int, int]] = []  # per window: its canvas, offset in it
        for i0, j0, rows, cols in runs:
            ry0, rx0 = i0 * s - m, j0 * s - m
            ry1, rx1 = ry0 + (rows - 1) * s + w, rx0 + (cols - 1) * s + w
            cy0, cx0, cy1, cx1 = max(ry0, 0), max(rx0, 0), min(ry1, height), min(rx1, width)
            canvas = np.zeros((self.in_channels, ry1 - ry0, rx1 - rx0), dtype=np.float32)
            block = np.asarray(read(cy0, cx0, cy1, cx1), dtype=np.float32)
            if block.shape != (self.in_channels, cy1 - cy0, cx1 - cx0):
                raise ValueError(
                    f"read({cy0}, {cx0}, {cy1}, {cx1}) returned shape {block.shape}, expected "
                    f"{(self.in_channels, cy1 - cy0, cx1 - cx0)}"
                )
            canvas[:, cy0 - ry0 : cy1 - ry0, cx0 - rx0 : cx1 - rx0] = block
            canvases.extend((canvas, a * s, b * s) for a in range(rows) for b in range(cols))
        out = np.empty((len(windows), len(MAP_CHANNELS), s, s), dtype=np.float32)
        batch = np.zeros((self.batch_size, self.in_channels, w, w), dtype=np.float32)
        for first in range(0, len(windows), self.batch_size):
            n = min(self.batch_size, len(windows) - first)
            batch[n:] = 0.0
            for k in range(n):
                canvas, oy, ox = canvases[first + k]
                batch[k] = canvas[:, oy : oy + w, ox : ox + w]
            out[first : first + n] = self.forward(batch)[:n, :, m : m + s, m : m + s]
        return out

    def predict_region(
        self, read: ReadFn, shape_yx: tuple[int, int], y0: int, x0: int, y1: int, x1: int
    ) -> np.ndarray:
        """Compute maps ``(K, y1 - y0, x1 - x0)`` float32 for a region of a slide.

        Parameters
        ----------
        read : callable
            ``read(y0, x0, y1, x1)`` returns the normalised float32 ``(C, h, w)``
            image of any window inside the slide.
        shape_yx : (int, int)
            Slide size at this level.
        y0, x0, y1, x1 : int
            Region, half-open, inside the slide.
        """
        height, width = int(shape_yx[0]), int(shape_yx[1])
        if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
            raise ValueError(
                f"region ({y0}, {x0}, {y1}, {x1}) is empty or outside the slide of shape {shape_yx}"
            )
        s = self.stride_px
        windows = self.window_origins(shape_yx, y0, x0, y1, x1)
        centres = self.predict_windows(read, shape_yx, windows)
        out = np.empty((len(MAP_CHANNELS), y1 - y0, x1 - x0), dtype=np.float32)
        for (i, j), maps in zip(windows, centres, strict=True):
            vy0, vx0 = max(i * s, y0), max(j * s, x0)
            vy1, vx1 = min((i + 1) * s, y1), min((j + 1) * s, x1)
            out[:, vy0 - y0 : vy1 - y0, vx0 - x0 : vx1 - x0] = maps[
                :, vy0 - i * s : vy1 - i * s, vx0 - j * s : vx1 - j * s
            ]
        return out

    def predict_image(self, image: np.ndarray) -> np.ndarray:
        """Compute maps ``(K, y, x)`` of a whole normalised in-memory image ``(C, y, x)``."""
        image = np.asarray(image, dtype=np.float32)

        def read(a: int, b: int, c: int, d: int) -> np.ndarray:
            return image[:, a:c, b:d]

        return self.predict_region(read, image.shape[1:], 0, 0, *image.shape[1:])


def load_engine(cfg: ModelConfig) -> Engine:
    """Build an :class:`Engine` for ``cfg`` (bundled weights when ``cfg.weights`` is None)."""
    from nclsm_scale.model.weights import load_net

    net, margin_px = load_net(cfg.weights)
    engine = Engine(
        net,
        device=cfg.device,
        batch_size=cfg.batch_size,
        window_px=cfg.window_px,
        amp=cfg.amp,
        margin_px=cfg.margin_px if cfg.margin_px is not None else margin_px,
        cpu_path=cfg.cpu_path,
    )
    log.info("inference engine: %r", engine)
    return engine
