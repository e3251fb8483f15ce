"""Per-slide appearance draws and the layer renderer."""

from __future__ import annotations

import numpy as np

from nclsm_scale.config import SynthConfig
from nclsm_scale.synth.appearance import Appearance, is_fam, render_layer
from nclsm_scale.synth.texture import textures


def test_draws_vary_within_ranges() -> None:
    """Each seed draws its own look, inside the configured ranges; overrides apply."""
    looks = [Appearance.draw(SynthConfig(seed=s, pixel_size_um=1.0)) for s in range(20)]
    sigmas = [a.blur_sigma_px for a in looks]
    lo, hi = SynthConfig().blur_sigma_um_range
    assert min(sigmas) >= lo and max(sigmas) <= hi and len(set(sigmas)) == 20
    assert len({round(a.type_contrast, 6) for a in looks}) == 20
    assert Appearance.draw(SynthConfig(seed=1), blur_sigma_px=2.5).blur_sigma_px == 2.5


def test_layer_rings_types_and_vacuoles() -> None:
    """Rings are brightest near the boundary; FAM fibres get dark vacuoles; gaps stay dim."""
    app = Appearance.draw(SynthConfig(seed=3, pixel_size_um=0.5), fam_fraction=0.5)
    yy, xx = np.mgrid[0:200, 0:400].astype(np.float64)
    key = np.where(xx < 195, 11, np.where(xx > 205, 12, 0)).astype(np.uint64)
    edge = np.where(xx < 200, 195.0 - xx, xx - 205.0)
    edge = np.where(key == 0, -np.minimum(np.abs(xx - 195), np.abs(xx - 205)), np.minimum(edge, 10))
    out = render_layer(
        app, key, edge, np.ones_like(key, bool), textures(app, 0, 0, 200, 400), yy, xx
    )
    assert out.shape == (2, 200, 400) and out.dtype == np.float32
    ring = out[0][:, 193:195].mean()
    assert ring > 3 * out[0][:, 100:150].mean()
    assert out[1][:, 50:150].mean() > 2 * out[1][:, 197:203].mean()
    fam = is_fam(np.array([11, 12], np.uint64), 3, 0.5)
    for label, cols in ((11, np.s_[20:180]), (12, np.s_[220:380])):
        inside = out[1][20:180, cols]
        dark = (inside < 0.4 * np.median(inside)).mean()
        assert (dark > 0.02) == bool(fam[label - 11])
