"""Rendering images on real NCL-SM fibre geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from nclsm_scale.errors import ValidationError
from nclsm_scale.synth import render_from_mask
from nclsm_scale.synth.from_mask import resample_labels

S60 = Path("/work/shared/data/ncl-sm/S60_fibres.tiff")


@pytest.fixture(scope="module")
def s60_crop() -> np.ndarray:
    """Return a 2048 x 2048 crop (0.25 um/px) of the real S60 mask."""
    if not S60.exists():
        pytest.skip("NCL-SM sample masks not available")
    with tifffile.TiffFile(S60) as tif:
        return tif.asarray()[4000:6048, 4000:6048]


def test_render_from_s60_crop(s60_crop: np.ndarray) -> None:
    """Labels survive 4x resampling; fibres are membrane-rimmed; the table matches the labels."""
    sec = render_from_mask(s60_crop, seed=3, mask_pixel_size_um=0.25, pixel_size_um=1.0)
    assert sec.image.shape == (2, 512, 512) and sec.image.dtype == np.uint16
    assert sec.pixel_size_um == 1.0
    n = len(sec.table)
    assert sec.fibres.max() == n and set(np.unique(sec.fibres)) == set(range(n + 1))
    source = sec.table["source_label"].to_numpy()
    back = np.concatenate([[0], source])[sec.fibres]
    nearest = s60_crop[2::4, 2::4]
    assert (back == nearest).mean() > 0.97  # identical up to resampling at boundaries
    assert set(source) <= set(np.unique(s60_crop)) - {0}
    fg = sec.fibres > 0
    inner = (
        fg & (np.roll(sec.fibres, 3, 0) == sec.fibres) & (np.roll(sec.fibres, -3, 0) == sec.fibres)
    )
    rim = fg & ~inner
    assert sec.image[0][rim].mean() > 1.5 * sec.image[0][inner].mean()
    # the crop is all tissue (gaps between fibres are interstitium): compare with non-fibre pixels
    assert sec.image[1][fg].mean() > 1.5 * sec.image[1][~fg].mean()


def test_same_pixel_size_keeps_labels(s60_crop: np.ndarray) -> None:
    """Without resampling the dense labels are the input labels renumbered."""
    crop = s60_crop[:600, :700]
    sec = render_from_mask(
        crop, seed=1, mask_pixel_size_um=0.25, pixel_size_um=0.25, fam_fraction=0.5
    )
    back = np.concatenate([[0], sec.table["source_label"].to_numpy()])[sec.fibres]
    np.testing.assert_array_equal(back, crop)
    assert (sec.table["gt_class"] == "FAM").any()


def test_resample_mode_and_errors() -> None:
    """Shrinking takes the majority label of each footprint; bad input is a ValidationError."""
    lab = np.zeros((8, 8), np.uint16)
    lab[:, :5] = 3
    np.testing.assert_array_equal(resample_labels(lab, 0.25), [[3, 0], [3, 0]])
    lab[:, :7] = 3
    np.testing.assert_array_equal(resample_labels(lab, 0.25), [[3, 3], [3, 3]])
    np.testing.assert_array_equal(resample_labels(lab, 2.0)[::2, ::2], lab)
    with pytest.raises(ValidationError):
        render_from_mask(
            np.zeros((4, 4), np.float32), seed=0, mask_pixel_size_um=1, pixel_size_um=1
        )
