"""Peak memory and throughput of ``nclsm-scale synth`` on large slides.

Writes a baseline slide and a 16x larger one with the CLI in subprocesses and
reports the peak RSS of each (target: the ratio stays ~1, memory O(chunk)) and
the generation throughput in Mpx/s. Full run: 8192^2 baseline vs 32768^2
(peak RSS must stay under 2 GiB); ``--quick``: 2048^2 vs 8192^2.

    python bench/synth.py [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, peak_rss_of  # noqa: E402

CLI = str(Path(sys.executable).with_name("nclsm-scale"))
RSS_LIMIT_GIB = 2.0


def _run(size: int, folder: Path) -> tuple[float, float, int]:
    out = folder / f"bench{size}.ome.tiff"
    cmd = [CLI, "--quiet", "synth", str(out), "--size", f"{size}x{size}", "--seed", "1"]
    rss_gib, wall_s = peak_rss_of(cmd)
    written = sum(p.stat().st_size for p in folder.glob(f"bench{size}*"))
    for p in folder.glob(f"bench{size}*"):
        p.unlink()
    return rss_gib, wall_s, written


def main() -> None:
    """Run the benchmark and emit one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="2048^2 vs 8192^2 instead of 8192^2 vs 32768^2"
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help="Scratch folder (default: a temp folder)"
    )
    args = parser.parse_args()
    base, big = (2048, 8192) if args.quick else (8192, 32768)
    folder = Path(tempfile.mkdtemp(prefix="bench-synth-", dir=args.dir))
    try:
        rss_base, wall_base, _ = _run(base, folder)
        rss_big, wall_big, bytes_big = _run(big, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    emit(
        {
            "bench": "synth",
            "mode": "quick" if args.quick else "full",
            "ratio": round(rss_big / rss_base, 3),
            "ratio_is": f"peak RSS {big}^2 / peak RSS {base}^2 (16x more pixels)",
            "target": 1.0,
            "peak_rss_gib": {str(base): round(rss_base, 3), str(big): round(rss_big, 3)},
            "rss_limit_gib": RSS_LIMIT_GIB,
            "under_limit": rss_big < RSS_LIMIT_GIB,
            "wall_s": {str(base): round(wall_base, 1), str(big): round(wall_big, 1)},
            "throughput_mpx_s": {
                str(base): round(base * base / 1e6 / wall_base, 3),
                str(big): round(big * big / 1e6 / wall_big, 3),
            },
            "output_bytes": bytes_big,
            "pixel_size_um": 0.5,
        }
    )


if __name__ == "__main__":
    main()
