"""Real-section features of the generator: each appears when enabled, chunking never changes it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from nclsm_scale.config import SynthConfig
from nclsm_scale.io.readers import assign_roles
from nclsm_scale.synth import SyntheticSection, generate_section, render_from_mask, write_section
from nclsm_scale.synth.appearance import Appearance, shading
from nclsm_scale.synth.generate import keys_to_ids, render_window
from nclsm_scale.synth.geometry import SlidePlan
from nclsm_scale.synth.stains import FIBRE_TYPES, MYHC_POSITIVE, channel_names
from nclsm_scale.synth.structures import sites_in_window

ALL_STAINS = ["membrane", "mito", "myh1", "myh2a", "myh2x", "dapi"]
#: Every feature switched on, strongly: wide perimysium, dropout, dense vessel/nerve sites,
#: wavy outlines, out-of-focus regions, unstained patches, all stains.
FEATURES = dict(
    pixel_size_um=1.0,
    stains=ALL_STAINS,
    fam_fraction=0.2,
    perimysium_um=30.0,
    dropout_fraction_range=(0.1, 0.1),
    outline_wave_um_range=(0.8, 0.8),
    vessel_spacing_um_range=(120.0, 120.0),
    nerve_share_range=(0.4, 0.4),
    defocus_share_range=(0.3, 0.3),
    unstained_share_range=(0.3, 0.3),
    folds=1,
    fold_width_um=150.0,
)


def _defocused_seed() -> int:
    """First seed whose slide draws out-of-focus regions (half of the slides do)."""
    return next(s for s in range(50) if Appearance.draw(SynthConfig(seed=s, **FEATURES)).defocus_share > 0)


@pytest.fixture(scope="module")
def feat_cfg() -> SynthConfig:
    """A small slide with every new feature on."""
    return SynthConfig(size_px=(420, 470), seed=_defocused_seed(), chunk_px=470, **FEATURES)


@pytest.fixture(scope="module")
def feat_section(feat_cfg: SynthConfig) -> SyntheticSection:
    """``feat_cfg`` rendered whole."""
    return generate_section(feat_cfg)


@pytest.fixture(scope="module")
def typed() -> tuple[SynthConfig, SyntheticSection]:
    """Membrane + MyHC + mito at 1 um/px, no folds or FAM: fibre types are clean to measure."""
    cfg = SynthConfig(
        size_px=(700, 700), seed=4, pixel_size_um=1.0, chunk_px=700, stains=ALL_STAINS[:5], folds=0, fam_fraction=0.0,
        mean_csa_um2=3000.0,
    )
    return cfg, generate_section(cfg)


@pytest.mark.parametrize("chunk_px", [128, 199])
def test_chunked_equals_whole_with_features(
    feat_cfg: SynthConfig, feat_section: SyntheticSection, chunk_px: int
) -> None:
    """All features on (defocus, vessels, nuclei, dropout, waves): chunks give identical sections."""
    assert Appearance.draw(feat_cfg).defocus_share > 0
    other = generate_section(feat_cfg.model_copy(update={"chunk_px": chunk_px}))
    np.testing.assert_array_equal(other.image, feat_section.image)
    np.testing.assert_array_equal(other.fibres, feat_section.fibres)
    np.testing.assert_array_equal(other.regions, feat_section.regions)
    assert other.table.equals(feat_section.table)


def test_window_at_odd_offset_with_features(feat_cfg: SynthConfig, feat_section: SyntheticSection) -> None:
    """A window rendered alone equals the crop of the whole slide, labels included."""
    y0, x0, h, w = 117, 203, 141, 173
    win = render_window(SlidePlan(feat_cfg), Appearance.draw(feat_cfg), y0, x0, h, w)
    np.testing.assert_array_equal(win.image, feat_section.image[:, y0 : y0 + h, x0 : x0 + w])
    ids = keys_to_ids(win.keys, feat_section.table["seed_key"].to_numpy(np.uint64))
    np.testing.assert_array_equal(ids, feat_section.fibres[y0 : y0 + h, x0 : x0 + w])


def test_channels_and_types(feat_section: SyntheticSection) -> None:
    """One channel per stain with role-recognisable names; every fibre has a ground-truth type."""
    s = feat_section
    assert s.image.shape[0] == len(ALL_STAINS)
    assert s.channel_names == channel_names(ALL_STAINS)
    assert assign_roles(s.channel_names) == {"membrane": 0, "mito": 1, "myh1": 2, "myh2a": 3, "myh2x": 4, "dapi": 5}
    assert set(s.table["gt_type"]) <= set(FIBRE_TYPES) and s.table["gt_type"].notna().all()


def _sites(cfg: SynthConfig) -> list:
    plan, app = SlidePlan(cfg), Appearance.draw(cfg)
    h, w = cfg.size_px
    return [s for s in sites_in_window(app, 0, 0, h, w, plan.free_at, plan.sites) if 10 < s.cy < h - 10]


def _inside(site, shape: tuple[int, int], scale: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    dy, dx = yy - site.cy, xx - site.cx
    u = (site.cos * dy + site.sin * dx) / (site.a_px * scale)
    v = (-site.sin * dy + site.cos * dx) / (site.b_px * scale)
    return u * u + v * v < 1.0


def test_vessels_and_nerves_lie_outside_fibres() -> None:
    """Vessel and nerve profiles exist, carry no fibre label, sit in tissue and are membrane-bright."""
    cfg = SynthConfig(size_px=(900, 900), seed=8, chunk_px=450, **{**FEATURES, "stains": ["membrane", "mito"]})
    sites = _sites(cfg)
    assert any(s.nerve for s in sites) and any(not s.nerve for s in sites)
    sec = generate_section(cfg)
    membrane = sec.image[0].astype(np.float64)
    for site in sites:
        inside = _inside(site, sec.fibres.shape, 1.0)
        if not inside.any():
            continue
        assert (sec.fibres[inside] == 0).all()
        assert (sec.regions[inside] > 0).all()
        wall = _inside(site, sec.fibres.shape, 1.0) & ~_inside(site, sec.fibres.shape, 0.7)
        core = _inside(site, sec.fibres.shape, 0.4)
        if not site.nerve and wall.sum() > 20 and core.sum() > 5:
            assert np.median(membrane[wall]) > np.median(membrane[core])  # ring wall, dark lumen


def _signal(sec: SyntheticSection, cfg: SynthConfig, channel: int) -> np.ndarray:
    """A channel without camera offset and slide shading (float64)."""
    app = Appearance.draw(cfg)
    h, w = cfg.size_px
    return (sec.image[channel] - app.offset) / shading(app, 0, 0, h, w, cfg.size_px)


def _dark_share(image: np.ndarray, fibres: np.ndarray, ids: np.ndarray, erode_px: int) -> np.ndarray:
    """Per fibre, the share of interior pixels below 0.4 of the fibre's median."""
    out = []
    for i in ids:
        vals = image[ndimage.binary_erosion(fibres == i, iterations=erode_px)]
        out.append((vals < 0.4 * np.median(vals)).mean() if vals.size > 50 else np.nan)
    return np.array(out)


def test_fam_holes_of_several_sizes_and_normal_fibres_without() -> None:
    """FAM fibres show holes from ~1 um to several um; ordinary fibres have no hole-like dark spots."""
    cfg = SynthConfig(
        size_px=(600, 600), seed=33, pixel_size_um=0.5, chunk_px=600, fam_fraction=0.5, folds=0,
        defocus_share_range=(0.0, 0.0),
    )
    sec = generate_section(cfg)
    t = sec.table[~sec.table["touches_image_border"] & (sec.table["gt_class"] != "DEBRIS")]
    fam = t[t["freeze_artefact"]]["fibre_id"].to_numpy()
    normal = t[~t["freeze_artefact"]]["fibre_id"].to_numpy()
    assert len(fam) >= 2 and len(normal) >= 2
    mito = _signal(sec, cfg, 1)
    assert np.nanmax(_dark_share(mito, sec.fibres, normal, 6)) < 0.002
    assert np.nanmin(_dark_share(mito, sec.fibres, fam, 6)) > 0.01
    diameters_um = []
    for i in fam:
        interior = ndimage.binary_erosion(sec.fibres == i, iterations=6)
        holes, n = ndimage.label(interior & (mito < 0.4 * np.median(mito[interior])))
        area_px = np.bincount(holes.ravel())[1:]
        diameters_um += list(2.0 * np.sqrt(area_px / np.pi) * cfg.pixel_size_um)
    d = np.array(diameters_um)
    assert (d < 1.5).sum() >= 3 and ((d >= 1.5) & (d < 4.0)).sum() >= 3 and (d >= 4.0).sum() >= 1


def _interior_medians(sec: SyntheticSection, cfg: SynthConfig, channel: int) -> np.ndarray:
    interior = ndimage.binary_erosion(sec.fibres > 0, iterations=3) & (
        ndimage.minimum_filter(sec.fibres, 7) == ndimage.maximum_filter(sec.fibres, 7)
    )
    lab = np.where(interior, sec.fibres, 0)
    return np.array(ndimage.median(_signal(sec, cfg, channel), lab, sec.table["fibre_id"].to_numpy()))


def test_myhc_bright_exactly_in_matching_types(typed: tuple[SynthConfig, SyntheticSection]) -> None:
    """Each MyHC channel separates fibres of its type(s) from all others; hybrids are bright in both."""
    cfg, sec = typed
    t = sec.table
    ok = (t["gt_class"] != "DEBRIS").to_numpy() & (t["area_um2"] > 400).to_numpy()
    types = t["gt_type"].to_numpy()
    assert {"I", "IIa", "IIx"} <= set(types[ok])
    for c, stain in enumerate(["myh1", "myh2a", "myh2x"], start=2):
        level = _interior_medians(sec, cfg, c)
        positive = np.isin(types, [FIBRE_TYPES[k] for k in MYHC_POSITIVE[stain]])
        assert positive[ok].any() and (~positive[ok]).any()
        assert level[ok & positive].min() > level[ok & ~positive].max(), stain


def test_mito_follows_type(typed: tuple[SynthConfig, SyntheticSection]) -> None:
    """Mito brightness by type: I > IIa > IIx (medians; single fibres overlap)."""
    cfg, sec = typed
    mito = _interior_medians(sec, cfg, 1)
    types = sec.table["gt_type"].to_numpy()
    med = {k: np.median(mito[types == k]) for k in ("I", "IIa", "IIx")}
    assert med["I"] > med["IIa"] > med["IIx"]


def test_type_shares_follow_config() -> None:
    """Without per-slide jitter the type shares match the configured ones."""
    cfg = SynthConfig(
        size_px=(1200, 1200), seed=2, pixel_size_um=2.0, chunk_px=1200, type_share_jitter=0.0,
        fibre_type_shares={"I": 0.5, "IIa": 0.3, "IIx": 0.2},
    )
    share = generate_section(cfg).table["gt_type"].value_counts(normalize=True)
    assert set(share.index) == {"I", "IIa", "IIx"}
    for k, v in {"I": 0.5, "IIa": 0.3, "IIx": 0.2}.items():
        assert abs(share[k] - v) < 0.06


def test_dropout_leaves_unlabelled_interstitium() -> None:
    """Dropped-out fibres are missing from the labels but their space stays tissue."""
    base = dict(size_px=(500, 500), seed=6, pixel_size_um=2.0, chunk_px=500, folds=0)
    full = generate_section(SynthConfig(dropout_fraction_range=(0.0, 0.0), **base))
    holey = generate_section(SynthConfig(dropout_fraction_range=(0.2, 0.2), **base))
    assert len(holey.table) < 0.93 * len(full.table)
    deep = ndimage.distance_transform_edt(full.regions > 0) > 60  # away from the outline and holes
    lost = (full.fibres > 0) & (holey.fibres == 0) & deep
    assert lost.sum() > 1000 and (holey.regions[lost] > 0).mean() > 0.95


def test_render_from_mask_places_vessels_off_fibres() -> None:
    """On a given mask, vessels sit in wide gaps (never on a label) and types reach the table."""
    labels = np.zeros((400, 400), np.uint16)
    yy, xx = np.mgrid[:400, :400]
    for k, (cy, cx) in enumerate([(60, 60), (60, 340), (340, 60), (340, 340), (60, 200), (340, 200)], start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 < 45**2] = k
    sec = render_from_mask(
        labels, seed=1, mask_pixel_size_um=1.0, pixel_size_um=1.0, stains=["membrane", "myh1", "myh2a"],
        site_spacing_px=120.0, vessel_diameter_px=(30.0, 30.0), nerve_share=0.0,
    )
    assert sec.image.shape == (3, 400, 400) and set(sec.table["gt_type"]) <= set(FIBRE_TYPES)
    gap = (sec.fibres == 0) & (ndimage.distance_transform_edt(sec.fibres == 0) > 20)
    assert sec.image[0][gap].max() > 4 * np.median(sec.image[0][gap])  # a vessel wall in the gap


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_identical_files_all_stains(tmp_path: Path) -> None:
    """Writing the same multi-stain config twice gives identical files; names and gt_type are written."""
    cfg = SynthConfig(size_px=(300, 340), seed=3, chunk_px=160, tile_px=128, min_level_px=200, **FEATURES)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = write_section(tmp_path / "a" / "s.ome.tiff", cfg)
    b = write_section(tmp_path / "b" / "s.ome.tiff", cfg)
    for kind in a:
        assert _digest(a[kind]) == _digest(b[kind]), kind
    with tifffile.TiffFile(a["image"]) as tif:
        assert tif.series[0].shape == (len(ALL_STAINS), 300, 340)
        for name in channel_names(ALL_STAINS):
            assert f'Name="{name}"' in tif.ome_metadata
    assert "gt_type" in a["csv"].read_text().splitlines()[0]
