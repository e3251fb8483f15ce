"""Session fixtures for the synthetic-section tests (small slides, rendered once)."""

from __future__ import annotations

import pytest

from nclsm_scale.config import SynthConfig
from nclsm_scale.synth import SyntheticSection, generate_section


@pytest.fixture(scope="session")
def small_cfg() -> SynthConfig:
    """Return a small slide with every artefact switched on (coarse pixels: many fibres)."""
    return SynthConfig(
        size_px=(520, 610),
        seed=7,
        pixel_size_um=2.0,
        chunk_px=256,
        ntm_fraction=0.4,
        fam_fraction=0.15,
        folds=1,
        fold_width_um=250.0,
        touching_fraction=0.1,
    )


@pytest.fixture(scope="session")
def small_section(small_cfg: SynthConfig) -> SyntheticSection:
    """``small_cfg`` rendered whole in memory."""
    return generate_section(small_cfg)


@pytest.fixture(scope="session")
def stats_cfg() -> SynthConfig:
    """Return a mid-size slide for statistics (about 700 fibres at 2 um/px)."""
    return SynthConfig(
        size_px=(1280, 1280),
        seed=11,
        pixel_size_um=2.0,
        chunk_px=1280,
        ntm_fraction=0.3,
        fam_fraction=0.05,
        folds=2,
        fold_width_um=200.0,
        mean_csa_um2=4800.0,
    )


@pytest.fixture(scope="session")
def stats_section(stats_cfg: SynthConfig) -> SyntheticSection:
    """``stats_cfg`` rendered whole in memory."""
    return generate_section(stats_cfg)
