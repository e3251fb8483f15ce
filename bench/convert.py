"""Benchmark ``nclsm-scale convert``: throughput against a bare tifffile -> zarr copy, and peak memory.

Compared, in the same run and on the same input (a tiled, zlib-compressed uint16
TIFF, 2 channels unless ``--channels`` says otherwise, written tile by tile from a
cheap generator: smooth pattern + 8-bit noise; ``--contiguous``: uncompressed and
memory-mapped instead):

* baseline: level 0 only, region by region (4096 px, whole shards) in a process
  pool of the same size as the Dask cluster, reading with tifffile's zarr store and
  writing a zarr v3 array with zarr-python, same chunks, shards and zstd level;
* ours: ``convert()`` on a LocalCluster of the same size started as the CLI starts
  it, in a fresh driver process: level 0 **plus** the whole mean pyramid, metadata,
  markers, display windows.

What is timed, for both: from the first task submitted to the last result (ours:
the whole ``convert()`` call, so also opening the source, fingerprinting it,
creating the store and finishing it). Excluded for both: starting the processes
(pool, or scheduler + nannies + workers) and importing the modules the tasks need
(``client.run`` / a pool initializer import them before the clock starts).
CPU seconds (user + system of the whole process tree during the timed region) are
reported beside wall seconds: on a shared machine they vary less.
Peak memory is the sampled (10 Hz) RSS sum of ours' driver process tree (client,
scheduler, nannies, workers) over the whole run.

ratio = baseline seconds / ours seconds (target >= 0.8, on the smallest ratio over
sizes); memory target < 1.5 GiB at every size. ``--repeat`` alternates the two and
keeps each one's fastest run. ``--task-channels`` sets ``convert.task_channels`` (the
baseline's shards then hold as many channels), to compare the memory of many-channel
slides converted in channel groups with all channels in one task.

``--codecs`` instead measures the codec choices on the pixels of a synthetic section
(``synth.generate_section``, 1 um/px, 2 uint16 channels, 1024² chunks), one thread:
encode and decode MB/s per core, size on disk (compressed / raw), and the encode cost
in the chain's unit, Mpx/s per core of segmentation-level pixels (all channels of a
pixel; the full mean pyramid adds 1/3 more pixels to encode, so ``with_pyramid`` is
encode Mpx/s per core x 3/4). Codecs: none, zstd levels 1/3/5/9 (numcodecs, as
``convert.compression_level``), blosc lz4 and blosc zstd-1 with byte shuffle.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, python  # noqa: E402

from nclsm_scale.config import ConvertConfig  # noqa: E402

TILE = 512
WORKERS = 2
REGION = 4096


def make_slide(path: Path, size_px: int, channels: int = 2, contiguous: bool = False) -> None:
    """Write a (channels, size, size) uint16 TIFF from a tile iterator (bounded memory).

    Tiled and zlib-compressed, or with ``contiguous`` uncompressed pages in one block.
    """
    import tifffile

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:TILE, 0:TILE]
    base = [(2000 + 1500 * np.sin((yy + 37 * k) / 23.0) * np.cos(xx / 31.0)).astype(np.uint16)
            for k in range(8)]
    noise = [rng.integers(0, 256, (TILE, TILE), dtype=np.uint16) for _ in range(8)]

    def tiles():
        n = size_px // TILE
        for c in range(channels):
            for i in range(n * n):
                yield base[(i + c) % 8] + noise[(i * 3 + c) % 8]

    part = path.with_suffix(".part")
    if contiguous:  # uncompressed pages in one block, as imaging mass cytometry OME-TIFFs: memory-mapped
        mm = tifffile.memmap(part, shape=(channels, size_px, size_px), dtype=np.uint16, photometric="minisblack",
                             metadata={"axes": "CYX"}, bigtiff=True)
        it, n = tiles(), size_px // TILE
        for c in range(channels):
            for i in range(n * n):
                y, x = divmod(i, n)
                mm[c, y * TILE : (y + 1) * TILE, x * TILE : (x + 1) * TILE] = next(it)
        mm.flush()
        del mm
    else:
        tifffile.imwrite(part, tiles(), shape=(channels, size_px, size_px), dtype=np.uint16, tile=(TILE, TILE),
                         compression="zlib", photometric="minisblack", metadata={"axes": "CYX"},
                         bigtiff=True)
    part.rename(path)


def _tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _warm_pool() -> None:
    import tifffile  # noqa: F401
    import zarr  # noqa: F401


def _copy_region(src: str, dst: str, region: tuple[int, int, int, int]) -> None:
    import tifffile
    import zarr

    y0, x0, y1, x1 = region
    with tifffile.imread(src, aszarr=True, series=0, level=0) as store:
        block = zarr.open_array(store, mode="r")[:, y0:y1, x0:x1]
    zarr.open_array(dst, mode="r+")[:, y0:y1, x0:x1] = block


def baseline(src: Path, dst: Path, size_px: int, channels: int, task_channels: int) -> tuple[float, float]:
    """Bare level-0 copy with the same codec, chunks and shards; (wall s, CPU s)."""
    import os

    import zarr
    import zarr.codecs

    regions = [(y, x, min(y + REGION, size_px), min(x + REGION, size_px))
               for y in range(0, size_px, REGION) for x in range(0, size_px, REGION)]
    with ProcessPoolExecutor(WORKERS, initializer=_warm_pool) as pool:
        list(pool.map(time.sleep, [0.5] * WORKERS))  # both processes started and warm
        cpu0, t0 = _tree_cpu_s(os.getpid()), time.perf_counter()
        zarr.create_array(str(dst), shape=(channels, size_px, size_px), dtype=np.uint16,
                          chunks=(1, 1024, 1024), shards=(min(channels, task_channels), REGION, REGION),
                          compressors=[zarr.codecs.ZstdCodec(level=3)], fill_value=0,
                          dimension_names=("c", "y", "x"), overwrite=True)
        list(pool.map(_copy_region, [str(src)] * len(regions), [str(dst)] * len(regions), regions))
        seconds, cpu = time.perf_counter() - t0, _tree_cpu_s(os.getpid()) - cpu0
    shutil.rmtree(dst)
    return seconds, cpu


def drive(src: str, out: str, task_channels: int) -> None:
    """Driver process of ``ours``: start the cluster like the CLI, warm it, time ``convert()``."""
    import importlib
    import os

    from nclsm_scale.cli.convert import worker_config
    from nclsm_scale.cluster import open_client
    from nclsm_scale.config import load_config
    from nclsm_scale.convert import convert

    cfg = load_config([], {"cluster.n_workers": WORKERS, "convert.overwrite": True,
                           "convert.task_channels": task_channels})
    with worker_config(), open_client(cfg.cluster, echo=False) as client:
        for module in ("nclsm_scale.convert", "tifffile", "numcodecs", "imagecodecs"):
            client.run(importlib.import_module, module)
        cpu0, t0 = _tree_cpu_s(os.getpid()), time.perf_counter()
        (result,) = convert([src], out, cfg.convert, client)
        seconds, cpu = time.perf_counter() - t0, _tree_cpu_s(os.getpid()) - cpu0
    print(json.dumps({"status": result.status, "message": result.message, "seconds": seconds,
                      "cpu_s": cpu}))


def ours(src: Path, out: Path, task_channels: int) -> tuple[float, float, float]:
    """Run :func:`drive` in a fresh process; (wall s, CPU s, peak RSS of its tree in GiB)."""
    import psutil

    proc = subprocess.Popen([python(), __file__, "--drive", str(src), str(out), str(task_channels)],
                            stdout=subprocess.PIPE, text=True)
    peak, ps = 0, psutil.Process(proc.pid)

    def sample() -> None:
        nonlocal peak
        while proc.poll() is None:
            total = 0
            try:
                for p in [ps, *ps.children(recursive=True)]:
                    total += p.memory_info().rss
            except psutil.Error:
                pass
            peak = max(peak, total)
            time.sleep(0.1)

    thread = threading.Thread(target=sample)
    thread.start()
    stdout, _ = proc.communicate()
    thread.join()
    report = json.loads(stdout.strip().splitlines()[-1]) if proc.returncode == 0 else {}
    if report.get("status") != "converted":
        raise RuntimeError(f"convert failed: {stdout}")
    shutil.rmtree(out)
    return report["seconds"], report["cpu_s"], peak / 2**30


def run_size(work: Path, size: int, repeat: int, channels: int, task_channels: int, contiguous: bool) -> dict:
    """Measure one slide size; keep each side's fastest of ``repeat`` alternating runs."""
    src = work / f"slide{size}c{channels}{'u' if contiguous else ''}.tif"
    if not src.exists():
        t0 = time.perf_counter()
        make_slide(src, size, channels, contiguous)
        print(f"made {src} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    base, mine = [], []
    for _ in range(repeat):
        base.append(baseline(src, work / f"base{size}.zarr", size, channels, task_channels))
        mine.append(ours(src, work / "out", task_channels))
    b_s, b_cpu = min(base)
    o_s, o_cpu, _ = min(mine)
    raw_mb = channels * size * size * 2 / 1e6
    return {
        "size_px": size, "channels": channels, "task_channels": task_channels, "contiguous": contiguous,
        "raw_mb": raw_mb,
        "file_mb": round(src.stat().st_size / 1e6, 1),
        "baseline_s": round(b_s, 2), "ours_s": round(o_s, 2), "ratio": round(b_s / o_s, 3),
        "baseline_cpu_s": round(b_cpu, 2), "ours_cpu_s": round(o_cpu, 2),
        "cpu_ratio": round(b_cpu / o_cpu, 3), "ours_mb_per_s": round(raw_mb / o_s, 1),
        "peak_rss_gib": round(max(m[2] for m in mine), 3),
        "all_baseline_s": [round(b[0], 2) for b in base], "all_ours_s": [round(m[0], 2) for m in mine],
    }


def codecs(size_px: int, repeats: int = 3) -> dict:
    """Encode/decode MB/s per core and size of each codec on a synthetic section's chunks."""
    import numcodecs
    from numcodecs import Blosc, Zstd

    from nclsm_scale.config import SynthConfig
    from nclsm_scale.synth import generate_section

    numcodecs.blosc.set_nthreads(1)
    image = generate_section(SynthConfig(size_px=(size_px, size_px), pixel_size_um=1.0, seed=5)).image
    chunks = [np.ascontiguousarray(image[c, y:y + 1024, x:x + 1024]) for c in range(image.shape[0])
              for y in range(0, size_px, 1024) for x in range(0, size_px, 1024)]
    raw = sum(c.nbytes for c in chunks)
    choices = {"none": None, **{f"zstd-{lv}": Zstd(level=lv) for lv in (1, 3, 5, 9)},
               "blosc-lz4-shuffle": Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE),
               "blosc-zstd1-shuffle": Blosc(cname="zstd", clevel=1, shuffle=Blosc.SHUFFLE)}
    bytes_per_px = image.shape[0] * image.dtype.itemsize
    rows = {}
    for name, codec in choices.items():
        if codec is None:
            rows[name] = {"size_ratio": 1.0}
            continue
        enc = min(_timed(lambda k=codec: [k.encode(c) for c in chunks]) for _ in range(repeats))
        blobs = [codec.encode(c) for c in chunks]
        dec = min(_timed(lambda k=codec, bs=blobs: [k.decode(b) for b in bs]) for _ in range(repeats))
        mb_s = raw / 1e6 / enc
        rows[name] = {"encode_mb_per_s_per_core": round(mb_s, 1),
                      "decode_mb_per_s_per_core": round(raw / 1e6 / dec, 1),
                      "size_ratio": round(sum(len(b) for b in blobs) / raw, 3),
                      "encode_mpx_per_s_per_core": round(mb_s / bytes_per_px, 1),
                      "with_pyramid_mpx_per_s_per_core": round(mb_s / bytes_per_px * 0.75, 1)}
    return {"codec_section_px": size_px, "channels": int(image.shape[0]), "codecs": rows}


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16384, 49152],
                        help="slide edges in pixels, multiples of 512 (default: 16384 49152)")
    parser.add_argument("--quick", action="store_true", help="smoke run: one 8192 px slide, once")
    parser.add_argument("--repeat", type=int, default=1, help="alternating runs per size (best kept)")
    parser.add_argument("--workdir", default=None,
                        help="where test slides are made and kept for later runs (default: a temp dir)")
    parser.add_argument("--channels", type=int, default=2, help="channels of the test slides (default 2)")
    parser.add_argument("--task-channels", type=int, default=ConvertConfig().task_channels,
                        help="convert.task_channels (default: the config's)")
    parser.add_argument("--contiguous", action="store_true",
                        help="uncompressed contiguous test slides (memory-mapped, as many IMC OME-TIFFs)")
    parser.add_argument("--name", default="convert", help="result name (bench/results/<name>.json)")
    parser.add_argument("--codecs", action="store_true", help="measure codec choices only (see the docstring)")
    parser.add_argument("--drive", nargs=3, metavar=("SRC", "OUT", "TASK_CHANNELS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        drive(args.drive[0], args.drive[1], int(args.drive[2]))
        return
    if args.codecs:
        import os

        load = round(os.getloadavg()[0], 2)
        out = codecs(2048 if args.quick else 4096)
        best = max((r.get("encode_mb_per_s_per_core", 0), k) for k, r in out["codecs"].items())
        emit({"bench": "convert-codecs" if args.name == "convert" else args.name, "ratio": None, "target": None,
              "metric": "codec encode/decode MB/s per core (1 thread) and size ratio on synthetic pixels",
              **out, "fastest_encode": best[1], "load_at_start": load, "quick": args.quick})
        return
    sizes, repeat = ([8192], 1) if args.quick else (args.sizes, args.repeat)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-convert-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        runs = [run_size(work, size, repeat, args.channels, args.task_channels, args.contiguous) for size in sizes]
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    emit({
        "bench": args.name,
        "ratio": min(r["ratio"] for r in runs),
        "target": 0.8,
        "cpu_ratio": min(r["cpu_ratio"] for r in runs),
        "peak_rss_gib": max(r["peak_rss_gib"] for r in runs),
        "rss_target_gib": 1.5,
        "workers": WORKERS,
        "repeat": repeat,
        "compared": "baseline = bare level-0 tifffile->zarr copy (same codec/chunks/shards, process "
                    "pool of the same size); ours = convert() incl. pyramid and metadata; both timed "
                    "from first task to last result on started, warmed processes",
        "runs": runs,
        "quick": args.quick,
    })


if __name__ == "__main__":
    main()
