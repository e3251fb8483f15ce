"""Fixtures of the curation tests: synthetic sections with ground-truth classes, measured from the image."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from nclsm_scale.config import SynthConfig
from nclsm_scale.curate import detect_folds
from nclsm_scale.curate.driver import fold_counts
from nclsm_scale.grid import lowres_window
from nclsm_scale.measure import measure_fibres
from nclsm_scale.segment.regions import tissue_mask

LOW = 8  # low-resolution factor (8 um/px), like the regions level of segment

#: Three seeds with default appearance ranges, and a dim, noisy slide.
SECTIONS = [
    dict(seed=1),
    dict(seed=2),
    dict(seed=3),
    dict(seed=4, signal_range=(800.0, 3000.0), read_noise_range=(40.0, 60.0)),
]

#: Further seeds and looks for the slow evaluation (blurred thick membranes, strong shading, dim).
MORE_SECTIONS = [
    dict(seed=5),
    dict(seed=6),
    dict(seed=7),
    dict(seed=21, blur_sigma_um_range=(1.0, 1.6), membrane_width_um_range=(1.2, 2.0)),
    dict(seed=31, illumination_range=(0.3, 0.45)),
    dict(seed=11, signal_range=(800.0, 3000.0), read_noise_range=(40.0, 60.0)),
]


def measure_section(**kw) -> tuple[pd.DataFrame, np.ndarray]:
    """Measure a 2048 px synthetic section the way the pipeline will; return (table, gt_class).

    ``table.attrs["far_from_border"]``: fibres not on the image border with no true
    non-tissue within 15 um (whole fibres deep inside the section: never EDGE).
    """
    from nclsm_scale.synth import generate_section

    cfg = SynthConfig(size_px=(2048, 2048), pixel_size_um=1.0, fam_fraction=0.1, folds=2, **kw)
    s = generate_section(cfg)
    n = 2048 // LOW
    low = s.image.astype(np.float32).reshape(2, n, LOW, n, LOW).mean(axis=(2, 4))
    tissue = tissue_mask(low, float(LOW), 25.0) > 0
    background = [float(np.median(low[c][~tissue])) for c in range(2)]
    folds = detect_folds(low, tissue, pixel_size_um=float(LOW), background=background)
    t = measure_fibres(
        s.fibres,
        s.image,
        pixel_size_um=1.0,
        channel_roles={"membrane": 0, "mito": 1},
        tissue_mask=lowres_window(tissue, LOW, (0, 0), s.fibres.shape),
        background=background,
    )
    ids, counts = fold_counts(s.fibres, lowres_window(folds, LOW, (0, 0), s.fibres.shape))
    in_fold = np.zeros(len(t), np.int64)
    in_fold[t["fibre_id"].searchsorted(ids)] = counts
    t["fold_fraction"] = in_fold / t["area_px"].to_numpy(np.float64)
    near = ndimage.binary_dilation(s.regions == 0, iterations=15)
    on_outline = np.bincount(s.fibres[near], minlength=len(t) + 1)[1:] > 0
    t.attrs["far_from_border"] = ~on_outline & ~s.table["touches_image_border"].to_numpy(bool)
    return t, s.table["gt_class"].astype(str).to_numpy()


@pytest.fixture(scope="session")
def measured_sections():
    return [measure_section(**kw) for kw in SECTIONS]


@pytest.fixture(scope="session")
def more_sections():
    return [measure_section(**kw) for kw in MORE_SECTIONS]
