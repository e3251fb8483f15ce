"""Inference engine throughput against a bare loop of forward passes over the same tiles.

The engine adds slide reads, the window lattice, fixed-shape batching, sigmoid,
and valid-centre crops; the baseline runs only ``net(batch)`` on the very same
window batches (prepared beforehand) on the same device. ``ratio`` = bare time /
engine time (1.0 = no overhead; target >= 0.9). Also reports output Mpx/s.

    python bench/infer.py [--quick] [--device auto|cpu|cuda]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit  # noqa: E402

from nclsm_scale.config import ModelConfig  # noqa: E402
from nclsm_scale.model.card import BUNDLED_WEIGHTS  # noqa: E402
from nclsm_scale.model.infer import Engine  # noqa: E402
from nclsm_scale.model.net import FibreNet  # noqa: E402
from nclsm_scale.model.weights import load_net  # noqa: E402


def _net() -> tuple[FibreNet, int, str]:
    if BUNDLED_WEIGHTS.is_file():
        net, margin = load_net(None)
        return net, margin, "bundled"
    torch.manual_seed(0)
    return FibreNet().eval(), 32, "random-init"


def _bare_batches(engine: Engine, image: np.ndarray) -> list[torch.Tensor]:
    """Build the engine's own window batches for the whole image in advance."""
    _, h, w = image.shape
    s, m, win = engine.stride_px, engine.margin_px, engine.window_px
    windows = engine.window_origins((h, w), 0, 0, h, w)
    padded = np.zeros((image.shape[0], -(-h // s) * s + 2 * m, -(-w // s) * s + 2 * m), np.float32)
    padded[:, m : m + h, m : m + w] = image
    batches = []
    for start in range(0, len(windows), engine.batch_size):
        batch = np.zeros((engine.batch_size, image.shape[0], win, win), np.float32)
        for k, (i, j) in enumerate(windows[start : start + engine.batch_size]):
            batch[k] = padded[:, i * s : i * s + win, j * s : j * s + win]
        x = torch.from_numpy(batch).to(engine.device)
        if engine.device.type != "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        batches.append(x)
    return batches


def _interleaved(fns, repeats: int) -> list[float]:
    """Best wall time of each function, runs alternated so machine load hits all alike."""
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def main() -> None:
    """Measure and emit the benchmark result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small slide, fewer repeats")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    size = 1024 if args.quick else 2048
    repeats = 3 if args.quick else 5
    net, margin, weights = _net()
    defaults = ModelConfig()
    engine = Engine(
        net,
        device=args.device,
        batch_size=defaults.batch_size,
        window_px=defaults.window_px,
        margin_px=margin,
    )
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (2, size, size)).astype(np.float32)

    def read(y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        return image[:, y0:y1, x0:x1]

    batches = _bare_batches(engine, image)
    amp = torch.autocast(engine.device.type, dtype=torch.float16) if engine.amp else None

    def bare() -> None:
        with torch.inference_mode():
            for x in batches:
                if amp is not None:
                    with amp:
                        engine.net(x)
                else:
                    engine.net(x)
        if engine.device.type == "cuda":
            torch.cuda.synchronize()

    def run_engine() -> None:
        engine.predict_region(read, (size, size), 0, 0, size, size)

    run_engine()  # warm-up
    t_engine, t_bare = _interleaved([run_engine, bare], repeats)
    mpx = size * size / 1e6
    emit(
        {
            "bench": "infer",
            "ratio": round(t_bare / t_engine, 4),
            "target": 0.9,
            "engine_mpx_per_s": round(mpx / t_engine, 4),
            "bare_forward_mpx_per_s": round(mpx / t_bare, 4),
            "slide_px": [size, size],
            "windows": len(engine.window_origins((size, size), 0, 0, size, size)),
            "window_px": engine.window_px,
            "margin_px": engine.margin_px,
            "batch_size": engine.batch_size,
            "device": engine.device.type,
            "torch_threads": torch.get_num_threads(),
            "weights": weights,
        }
    )


if __name__ == "__main__":
    main()
