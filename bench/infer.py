"""Inference throughput: engine overhead, and every way of running the network on this machine.

1. Engine against bare forward passes (``ratio`` = bare time / engine time, target >= 0.9):
   the engine on the default ``model.cpu_path`` adds slide reads, the window lattice,
   fixed-shape batching, sigmoid and valid-centre crops to ``net(batch)`` run on the very
   same window batches. ``engine_speedup`` = the eager engine's time / the default engine's
   time, timed interleaved in the same run.
2. ``variants``: one batch (``--batch-size`` x ``--window-px``², default 4 x 512², as issue 17
   measured) through each way of running the bundled network: eager fp32 (the baseline),
   no_grad instead of inference_mode, oneDNN off, channels-last, conv+BN folded (torch.fx),
   the engine's paths (fused, bf16, compile), bf16 autocast, int8 static quantisation (FX
   graph mode, x86 backend, calibrated on a synthetic section), and ONNX Runtime when it is
   installed. Each reports input Mpx/s, the ratio to eager timed interleaved in the same run,
   the largest difference of its output probabilities from eager on a synthetic section, and
   its preparation (compile) time.
3. ``shapes``: eager and the default path at several batch sizes and windows, as output
   (valid-centre) Mpx/s.
4. ``threads_vs_processes``: the default path as one process with 2 torch threads against
   2 processes with 1 thread each (how Dask's local workers run it), total input Mpx/s;
   ``ratio`` = processes / threads.

``load_avg`` is the machine's 1-minute load average at the start and the end.

    python bench/infer.py [--quick] [--device auto|cpu|cuda] [--markdown OUT.md]
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine, python  # noqa: E402

from nclsm_scale.config import ModelConfig  # noqa: E402
from nclsm_scale.model.card import BUNDLED_WEIGHTS  # noqa: E402
from nclsm_scale.model.infer import Engine  # noqa: E402
from nclsm_scale.model.net import FibreNet  # noqa: E402
from nclsm_scale.model.weights import load_net  # noqa: E402

Forward = Callable[[], torch.Tensor]


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
        if engine.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        batches.append(x)
    return batches


def _interleaved(fns: list[Callable[[], Any]], repeats: int) -> list[float]:
    """Best wall time of each function, runs alternated so machine load hits all alike."""
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def _section(size_px: int) -> np.ndarray:
    """A normalised synthetic section ``(2, size, size)`` (not held-out data)."""
    from nclsm_scale.config import TrainConfig
    from nclsm_scale.model.data import load_sources

    cfg = TrainConfig(synth_sections=1, synth_size_px=max(size_px, 256), seed=7)
    return load_sources(["synth"], cfg)[0].image[:, :size_px + 64, :size_px]


def _windows(section: np.ndarray, batch: int, window_px: int) -> np.ndarray:
    """``batch`` windows of the section: its four quadrants in turn, shifted a little each round."""
    out = np.zeros((batch, 2, window_px, window_px), np.float32)
    for k in range(batch):
        shift = (k // 4) * 16 % (section.shape[1] - 2 * window_px + 1)
        y, x = (k % 4) // 2 * window_px + shift, k % 2 * window_px
        out[k] = section[:, y : y + window_px, x : x + window_px]
    return out


def _int8(net: FibreNet, calibration: np.ndarray) -> torch.nn.Module:
    """Static int8 quantisation in FX graph mode (x86 backend), calibrated on ``calibration``."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    x = torch.from_numpy(calibration)
    prepared = prepare_fx(copy.deepcopy(net).eval(), get_default_qconfig_mapping("x86"), (x[:1],))
    with torch.inference_mode():
        for k in range(len(x)):
            prepared(x[k : k + 1])
    return convert_fx(prepared)


def _onnxruntime(net: FibreNet, x: torch.Tensor, threads: int) -> Forward | None:
    """ONNX Runtime's CPU session on the exported network, or None when not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    import tempfile

    path = Path(tempfile.mkdtemp()) / "net.onnx"
    torch.onnx.export(net, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    xn = x.numpy()
    return lambda: torch.from_numpy(session.run(None, {"x": xn})[0])


def _variants(
    net: FibreNet, margin: int, x: torch.Tensor, with_compile: bool
) -> dict[str, tuple[Forward, float]]:
    """Every way of running one batch ``x``: name -> (forward, preparation seconds)."""
    from torch.fx.experimental.optimization import fuse

    cl = x.contiguous(memory_format=torch.channels_last)
    n, _, w, _ = x.shape
    out: dict[str, tuple[Forward, float]] = {"eager fp32": (lambda: net(x), 0.0)}

    def no_grad() -> torch.Tensor:
        with torch.inference_mode(False), torch.no_grad():
            return net(x)

    def no_onednn() -> torch.Tensor:
        with torch.backends.mkldnn.flags(enabled=False):
            return net(x)

    out["eager, no_grad (not inference_mode)"] = (no_grad, 0.0)
    out["eager, oneDNN off"] = (no_onednn, 0.0)
    net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    out["channels_last"] = (lambda: net_cl(cl), 0.0)
    folded = fuse(net)
    out["conv+BN folded, contiguous"] = (lambda: folded(x), 0.0)

    def bf16_cl() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return net_cl(cl)

    out["channels_last + bf16 autocast (BN not folded)"] = (bf16_cl, 0.0)
    for path in ("fused", "bf16") + (("compile",) if with_compile else ()):
        t0 = time.perf_counter()
        engine = Engine(net, device="cpu", batch_size=n, window_px=w, margin_px=margin, cpu_path=path)
        prep = time.perf_counter() - t0

        def run(e: Engine = engine) -> torch.Tensor:
            with e.autocast():
                return e.net(cl)

        out[f"engine path '{path}'"] = (run, prep)
    t0 = time.perf_counter()
    try:
        q = _int8(net, _windows(_section(2 * w), 8, w))
        out["int8 static (FX, x86)"] = ((lambda: q(x)), time.perf_counter() - t0)
    except (RuntimeError, NotImplementedError) as exc:  # a torch build without the x86 backend
        print(f"int8: {exc}", file=sys.stderr)
    t0 = time.perf_counter()
    ort = _onnxruntime(net, x, torch.get_num_threads())
    if ort is not None:
        out["ONNX Runtime (CPU EP)"] = (ort, time.perf_counter() - t0)
    return out


def _measure_variants(
    net: FibreNet, margin: int, batch: int, window_px: int, repeats: int, with_compile: bool
) -> list[dict[str, Any]]:
    x = torch.from_numpy(_windows(_section(2 * window_px), batch, window_px))
    with torch.inference_mode():
        variants = _variants(net, margin, x, with_compile)
        ref = net(x).sigmoid()
        diffs = {k: float((f().float().sigmoid() - ref).abs().max()) for k, (f, _) in variants.items()}
        times = _interleaved([f for f, _ in variants.values()], repeats)
    mpx = batch * window_px**2 / 1e6
    return [
        {
            "variant": k,
            "mpx_per_s": round(mpx / t, 4),
            "ratio_to_eager": round(times[0] / t, 3),
            "max_abs_diff": float(f"{diffs[k]:.3g}"),
            "prepare_s": round(prep, 1),
        }
        for (k, (_, prep)), t in zip(variants.items(), times, strict=True)
    ]


def _measure_shapes(net: FibreNet, margin: int, path: str, repeats: int, quick: bool) -> list[dict[str, Any]]:
    shapes = [(1, 512), (4, 512), (1, 1024), (4, 1024)] + ([] if quick else [(16, 256), (8, 512), (1, 2048)])
    rows = []
    for batch, window_px in shapes:
        engines = [Engine(net, device="cpu", batch_size=batch, window_px=window_px, margin_px=margin,
                          cpu_path=p) for p in ("eager", path)]
        windows = _windows(_section(2 * window_px), batch, window_px)

        def run(e: Engine, w: np.ndarray = windows) -> None:
            e.forward(w)

        t_eager, t_path = _interleaved([partial(run, e) for e in engines], repeats)
        valid = batch * engines[0].stride_px**2 / 1e6
        rows.append({"batch": batch, "window_px": window_px,
                     "valid_fraction": round(engines[0].stride_px**2 / window_px**2, 3),
                     "eager_mpx_per_s": round(valid / t_eager, 4),
                     f"{engines[1].path}_mpx_per_s": round(valid / t_path, 4),
                     "ratio": round(t_eager / t_path, 3)})
    return rows


_CHILD = """
import sys, time, numpy as np, torch
torch.set_num_threads(int(sys.argv[1]))
from nclsm_scale.model.infer import Engine
from nclsm_scale.model.weights import load_net
net, margin = load_net(None)
e = Engine(net, device="cpu", batch_size=int(sys.argv[3]), window_px=int(sys.argv[4]), margin_px=margin,
           cpu_path=sys.argv[2])
x = np.random.default_rng(0).uniform(0, 1, (e.batch_size, 2, e.window_px, e.window_px)).astype(np.float32)
e.forward(x)
print("ready", flush=True)
for line in sys.stdin:
    t0 = time.perf_counter()
    for _ in range(int(line)):
        e.forward(x)
    print(time.perf_counter() - t0, flush=True)
"""


def _threads_vs_processes(path: str, batch: int, window_px: int, repeats: int) -> dict[str, Any]:
    """Total input Mpx/s of 1 process x 2 threads and of 2 processes x 1 thread, interleaved."""
    root = str(Path(__file__).resolve().parent.parent)
    env = {"PYTHONPATH": root, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}

    def spawn(threads: int) -> subprocess.Popen[str]:
        p = subprocess.Popen([python(), "-c", _CHILD, str(threads), path, str(batch), str(window_px)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        return p

    groups = {"1 process x 2 threads": [spawn(2)], "2 processes x 1 thread": [spawn(1), spawn(1)]}
    passes = 2
    best = dict.fromkeys(groups, float("inf"))
    for _ in range(repeats):
        for name, procs in groups.items():
            t0 = time.perf_counter()
            for p in procs:
                assert p.stdin is not None
                p.stdin.write(f"{passes}\n")
                p.stdin.flush()
            for p in procs:
                assert p.stdout is not None
                p.stdout.readline()
            best[name] = min(best[name], time.perf_counter() - t0)
    for procs in groups.values():
        for p in procs:
            assert p.stdin is not None
            p.stdin.close()
            p.wait()
    mpx = batch * window_px**2 / 1e6
    out: dict[str, Any] = {name: round(len(groups[name]) * passes * mpx / t, 4) for name, t in best.items()}
    out["ratio"] = round(out["2 processes x 1 thread"] / out["1 process x 2 threads"], 3)
    return out


def _markdown(result: dict[str, Any]) -> str:
    lines = [f"Machine: {machine()}; torch {torch.__version__}, {result['torch_threads']} threads; "
             f"batch {result['variant_batch']} x {result['variant_window_px']}² px; "
             f"load average {result['load_avg'][0]} -> {result['load_avg'][1]}.", "",
             "| variant | Mpx/s | ratio to eager | max abs diff | prepare s |", "|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['mpx_per_s']:.3f} | {r['ratio_to_eager']:.2f} | {r['max_abs_diff']:.2g} "
              f"| {r['prepare_s']} |" for r in result["variants"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Measure and emit the benchmark result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small slide, fewer repeats, no compile")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=4, help="batch of the variants table")
    parser.add_argument("--window-px", type=int, default=512, help="window of the variants table")
    parser.add_argument("--markdown", default=None, help="write the variants table here")
    args = parser.parse_args()
    size = 1024 if args.quick else 2048
    repeats = 3 if args.quick else 5
    load_start = os.getloadavg()[0]
    net, margin, weights = _net()
    defaults = ModelConfig()
    engine = Engine(net, device=args.device, batch_size=defaults.batch_size, window_px=defaults.window_px,
                    margin_px=margin, cpu_path=defaults.cpu_path)
    eager = Engine(net, device=args.device, batch_size=defaults.batch_size, window_px=defaults.window_px,
                   margin_px=margin, cpu_path="eager")
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (2, size, size)).astype(np.float32)

    def read(y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        return image[:, y0:y1, x0:x1]

    batches = _bare_batches(engine, image)

    def bare() -> None:
        with torch.inference_mode(), engine.autocast():
            for x in batches:
                engine.net(x)
        if engine.device.type == "cuda":
            torch.cuda.synchronize()

    def run_engine(e: Engine = engine) -> None:
        e.predict_region(read, (size, size), 0, 0, size, size)

    run_engine()  # warm-up
    t_engine, t_bare, t_eager = _interleaved([run_engine, bare, lambda: run_engine(eager)], repeats)
    mpx = size * size / 1e6
    result: dict[str, Any] = {
        "bench": "infer",
        "ratio": round(t_bare / t_engine, 4),
        "target": 0.9,
        "engine_mpx_per_s": round(mpx / t_engine, 4),
        "bare_forward_mpx_per_s": round(mpx / t_bare, 4),
        "eager_engine_mpx_per_s": round(mpx / t_eager, 4),
        "engine_speedup": round(t_eager / t_engine, 3),
        "path": engine.path,
        "slide_px": [size, size],
        "windows": len(engine.window_origins((size, size), 0, 0, size, size)),
        "window_px": engine.window_px,
        "margin_px": engine.margin_px,
        "batch_size": engine.batch_size,
        "device": engine.device.type,
        "torch_threads": torch.get_num_threads(),
        "weights": weights,
    }
    if engine.device.type == "cpu":
        result["variant_batch"], result["variant_window_px"] = args.batch_size, args.window_px
        result["variants"] = _measure_variants(net, margin, args.batch_size, args.window_px, repeats,
                                               with_compile=not args.quick)
        result["shapes"] = _measure_shapes(net, margin, defaults.cpu_path, repeats, args.quick)
        result["threads_vs_processes"] = _threads_vs_processes(
            defaults.cpu_path, args.batch_size, args.window_px, repeats)
    result["load_avg"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    if args.markdown and "variants" in result:
        Path(args.markdown).write_text(_markdown(result), encoding="utf-8")
    emit(result)


if __name__ == "__main__":
    main()
