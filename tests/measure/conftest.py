"""Fixtures of the measure tests: a small synthetic section measured once."""

from __future__ import annotations

import numpy as np
import pytest

from nclsm_scale.config import SynthConfig
from nclsm_scale.synth import generate_section


@pytest.fixture(scope="session")
def section():
    """A 768 x 768 px synthetic section at 1 um/px (~80 fibres, some touching the border)."""
    return generate_section(
        SynthConfig(size_px=(768, 768), pixel_size_um=1.0, seed=5, fam_fraction=0.2)
    )


@pytest.fixture(scope="session")
def tissue(section):
    return section.regions > 0


@pytest.fixture(scope="session")
def rng():
    return np.random.default_rng(0)
