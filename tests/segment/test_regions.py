"""The tissue mask of labels/regions: its definition on whole arrays, computed one plane at a time."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from nclsm_scale.config import SynthConfig
from nclsm_scale.segment.regions import CLOSE_UM, TISSUE, TISSUE_LEVEL, tissue_mask


def _whole_array_mask(image: np.ndarray, pixel_size_um: float, smooth_um: float) -> np.ndarray:
    """The module's rule written on the whole ``(c, y, x)`` float array at once."""
    img = np.asarray(image, np.float32)
    scale = np.percentile(img.reshape(img.shape[0], -1), 99.0, axis=1)
    signal = ndi.gaussian_filter((img / np.where(scale > 0, scale, 1.0)[:, None, None]).sum(axis=0),
                                 smooth_um / pixel_size_um)
    otsu = threshold_otsu(signal)
    bg, fg = float(np.median(signal[signal <= otsu])), float(np.median(signal[signal > otsu]))
    r = int(round(CLOSE_UM / pixel_size_um))
    disk = np.hypot(*np.mgrid[-r : r + 1, -r : r + 1]) <= r
    closed = ndi.binary_closing(np.pad(signal > bg + TISSUE_LEVEL * (fg - bg), r), disk)[r:-r, r:-r]
    return ndi.binary_fill_holes(closed).astype(np.uint8) * TISSUE


@pytest.mark.parametrize(("n_channels", "dtype"), [(1, np.uint16), (2, np.uint16), (3, np.float32), (4, np.uint8)])
def test_tissue_mask_is_its_whole_array_rule(n_channels, dtype):
    rng = np.random.default_rng(n_channels)
    img = (rng.gamma(2.0, 60.0, (n_channels, 240, 200)) * (np.arange(200) > 50)).astype(dtype)
    img[:, 90:110] = 0  # a gap the closing bridges
    got = tissue_mask(img, 8.0, 25.0)
    assert got.dtype == np.uint8 and 0 < got.sum() < got.size
    assert np.array_equal(got, _whole_array_mask(img, 8.0, 25.0))


def test_a_section_is_tissue_and_a_blank_slide_is_not():
    from nclsm_scale.synth import generate_section

    s = generate_section(SynthConfig(size_px=(1024, 1024), pixel_size_um=1.0, seed=4))
    low = s.image.astype(np.float32).reshape(2, 128, 8, 128, 8).mean(axis=(2, 4))
    tissue = tissue_mask(low, 8.0, 25.0) > 0
    true = (s.regions[::8, ::8] > 0)
    assert (tissue & true).sum() > 0.85 * true.sum() and (tissue & ~true).sum() < 0.1 * true.sum()
    assert not tissue_mask(np.zeros((2, 64, 64), np.uint16), 8.0, 25.0).any()
