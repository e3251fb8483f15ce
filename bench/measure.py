"""Benchmark: per-fibre measurement throughput (fibres/s) vs skimage.measure.regionprops_table.

Both run on the same synthetic slide (>= 5,000 fibres at 1 um/px; ``--quick``: ~600)
in the same process. ``ratio`` compares the same property set (area, perimeter,
convex area, solidity, eccentricity, ellipse axes, orientation, centroid, bbox,
max Feret; ours adds min Feret and more); ``ratio_full`` compares our full
measurement (intensities, dark blobs, tissue and fold flags) with regionprops
plus per-channel ``intensity_mean``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit  # noqa: E402

GEOMETRY = (
    "label",
    "area",
    "perimeter",
    "area_convex",
    "solidity",
    "eccentricity",
    "axis_major_length",
    "axis_minor_length",
    "orientation",
    "centroid",
    "bbox",
    "feret_diameter_max",
)


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="~600 fibres instead of >= 5,000")
    args = ap.parse_args()
    from skimage.measure import regionprops_table

    from nclsm_scale.config import SynthConfig
    from nclsm_scale.measure import measure_fibres
    from nclsm_scale.synth import generate_section

    size = 2048 if args.quick else 6400
    s = generate_section(SynthConfig(size_px=(size, size), pixel_size_um=1.0, seed=11))
    lab, n = s.fibres, int(s.fibres.max())
    roles = {"membrane": 0, "mito": 1}
    tissue = s.regions > 0
    ours = _best(lambda: measure_fibres(lab, None, pixel_size_um=1.0), 3)
    ours_full = _best(
        lambda: measure_fibres(
            lab,
            s.image,
            pixel_size_um=1.0,
            channel_roles=roles,
            tissue_mask=tissue,
        ),
        2,
    )
    base = _best(lambda: regionprops_table(lab, properties=GEOMETRY), 1)
    image_yxc = np.moveaxis(s.image, 0, -1)
    base_full = _best(
        lambda: regionprops_table(
            lab, intensity_image=image_yxc, properties=GEOMETRY + ("intensity_mean",)
        ),
        1,
    )
    emit(
        {
            "bench": "measure",
            "ratio": round(base / ours, 2),
            "target": 10,
            "ratio_full": round(base_full / ours_full, 2),
            "fibres": n,
            "slide_px": [size, size],
            "pixel_size_um": 1.0,
            "ours_fibres_per_s": round(n / ours, 1),
            "regionprops_fibres_per_s": round(n / base, 1),
            "ours_full_fibres_per_s": round(n / ours_full, 1),
            "regionprops_full_fibres_per_s": round(n / base_full, 1),
            "quick": args.quick,
        }
    )


if __name__ == "__main__":
    main()
