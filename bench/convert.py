"""Benchmark ``nclsm-scale convert``: throughput against a bare tifffile -> zarr copy, and peak memory.

Compared, in the same run and on the same input (a tiled, zlib-compressed 2-channel
uint16 TIFF made by a cheap tile generator, written from an iterator):

* baseline: level 0 only, region by region (4096 px, whole shards) in a process
  pool of the same size as the Dask cluster, reading with tifffile's zarr store and
  writing a zarr v3 array with the same chunks, shards and zstd level;
* ours: the ``convert`` CLI in a fresh process (LocalCluster of the same size), level 0
  **plus** the whole mean pyramid, metadata, markers, windows. Its time is the
  per-slide time the CLI prints (cluster start-up excluded); peak memory is the
  sampled RSS sum of the CLI process tree (scheduler, nannies, workers).

ratio = baseline seconds / ours seconds (target >= 0.8); memory target < 1.5 GiB.
"""

from __future__ import annotations

import argparse
import re
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

TILE = 512
WORKERS = 2


def make_slide(path: Path, size_px: int) -> None:
    """Write a (2, size, size) uint16 tiled TIFF from a tile iterator (bounded memory)."""
    import tifffile

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:TILE, 0:TILE]
    base = [(2000 + 1500 * np.sin((yy + 37 * k) / 23.0) * np.cos(xx / 31.0)).astype(np.uint16) for k in range(8)]
    noise = [rng.integers(0, 256, (TILE, TILE), dtype=np.uint16) for _ in range(8)]

    def tiles():
        n = size_px // TILE
        for c in range(2):
            for i in range(n * n):
                yield base[(i + c) % 8] + noise[(i * 3 + c) % 8]

    tifffile.imwrite(path, tiles(), shape=(2, size_px, size_px), dtype=np.uint16, tile=(TILE, TILE),
                     compression="zlib", photometric="minisblack", metadata={"axes": "CYX"}, bigtiff=True)


def _copy_region(src: str, dst: str, region: tuple[int, int, int, int]) -> None:
    import tifffile
    import zarr

    y0, x0, y1, x1 = region
    with tifffile.imread(src, aszarr=True, series=0, level=0) as store:
        block = zarr.open_array(store, mode="r")[:, y0:y1, x0:x1]
    zarr.open_array(dst, mode="r+")[:, y0:y1, x0:x1] = block


def baseline(src: Path, dst: Path, size_px: int) -> float:
    """Bare level-0 copy with the same codec, chunks and shards; returns seconds."""
    import zarr
    import zarr.codecs

    t0 = time.perf_counter()
    zarr.create_array(str(dst), shape=(2, size_px, size_px), dtype=np.uint16, chunks=(1, 1024, 1024),
                      shards=(2, 4096, 4096), compressors=[zarr.codecs.ZstdCodec(level=3)], fill_value=0,
                      dimension_names=("c", "y", "x"), overwrite=True)
    regions = [(y, x, min(y + 4096, size_px), min(x + 4096, size_px))
               for y in range(0, size_px, 4096) for x in range(0, size_px, 4096)]
    with ProcessPoolExecutor(WORKERS) as pool:
        list(pool.map(_copy_region, [str(src)] * len(regions), [str(dst)] * len(regions), regions))
    return time.perf_counter() - t0


def ours(src: Path, out: Path) -> tuple[float, float]:
    """Run the CLI; return (conversion seconds as printed, peak RSS of the process tree in GiB)."""
    import psutil

    proc = subprocess.Popen([python(), "-m", "nclsm_scale", "-q", "convert", str(src), "--out", str(out),
                             "--workers", str(WORKERS), "--overwrite"], stdout=subprocess.PIPE, text=True)
    peak, ps = 0, psutil.Process(proc.pid)

    def sample() -> None:
        nonlocal peak
        while proc.poll() is None:
            try:
                tree = [ps, *ps.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.1)

    thread = threading.Thread(target=sample)
    thread.start()
    stdout, _ = proc.communicate()
    thread.join()
    if proc.returncode:
        raise RuntimeError(f"convert failed: {stdout}")
    seconds = float(re.search(r"\[([0-9.]+) s\]", stdout).group(1))
    return seconds, peak / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4k and 8k slides instead of 16k and 48k")
    parser.add_argument("--workdir", default=None, help="where to write the test slides (default: a temp dir)")
    args = parser.parse_args()
    sizes = [4096, 8192] if args.quick else [16384, 49152]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-convert-"))
    work.mkdir(parents=True, exist_ok=True)
    runs = []
    try:
        for size in sizes:
            src = work / f"slide{size}.tif"
            if not src.exists():
                make_slide(src, size)
            base_s = baseline(src, work / f"base{size}.zarr", size)
            shutil.rmtree(work / f"base{size}.zarr")
            ours_s, rss = ours(src, work / "out")
            raw_mb = 2 * size * size * 2 / 1e6
            runs.append({"size_px": size, "raw_mb": raw_mb, "baseline_s": round(base_s, 2),
                         "ours_s": round(ours_s, 2), "ratio": round(base_s / ours_s, 3),
                         "ours_mb_per_s": round(raw_mb / ours_s, 1), "peak_rss_gib": round(rss, 3)})
            shutil.rmtree(work / "out")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    emit({
        "bench": "convert",
        "ratio": min(r["ratio"] for r in runs),
        "target": 0.8,
        "peak_rss_gib": max(r["peak_rss_gib"] for r in runs),
        "rss_target_gib": 1.5,
        "workers": WORKERS,
        "compared": "baseline = bare level-0 tifffile->zarr copy (same codec/chunks/shards, process pool of the "
                    "same size); ours = full convert incl. pyramid, timed by the CLI excluding cluster start",
        "runs": runs,
        "quick": args.quick,
    })


if __name__ == "__main__":
    main()
