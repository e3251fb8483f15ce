"""Fixtures of the curation tests: synthetic sections with ground-truth classes, measured from the image."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sections import measure_section

#: Sections of the design set (bench/curation.py DESIGN): default looks, a dim noisy slide, and
#: membrane + myosin stains without a mito channel.
SECTIONS = [
    dict(seed=1),
    dict(seed=2),
    dict(seed=4, signal_range=(800.0, 3000.0), read_noise_range=(40.0, 60.0)),
    dict(seed=5, stains=["membrane", "myh1", "myh2a", "myh2x"]),
]

#: The rest of the design set for the slow evaluation (0.5 um/px, blurred, mouse-sized fibres).
MORE_SECTIONS = [
    dict(seed=3),
    dict(seed=6, pixel_size_um=0.5, size_px=3072),
    dict(seed=7, blur_sigma_um_range=(1.0, 1.6)),
    dict(seed=8, mean_csa_um2=2000.0),
]


def _measured(kw: dict) -> tuple[pd.DataFrame, np.ndarray, float]:
    return measure_section(**kw)


@pytest.fixture(scope="session")
def measured_sections():
    """(table, gt_class, pixel size) of each of SECTIONS."""
    return [_measured(kw) for kw in SECTIONS]


@pytest.fixture(scope="session")
def more_sections():
    return [_measured(kw) for kw in MORE_SECTIONS]
