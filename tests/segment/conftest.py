"""Fixtures of the segmentation tests: fibre masks (synthetic and real NCL-SM) and their maps."""

from __future__ import annotations

import numpy as np
import pytest
from segment_fixtures import nclsm_crop, voronoi_fibres

from nclsm_scale.config import SegmentConfig
from nclsm_scale.segment.maps import ArrayMaps, maps_from_labels
from nclsm_scale.segment.seeds import SegmentParams


@pytest.fixture(scope="session")
def params() -> SegmentParams:
    """The config defaults at 1 um/px."""
    return SegmentParams.from_config(SegmentConfig(), 1.0, ("foreground", "boundary", "distance"))


@pytest.fixture(scope="session")
def synth_labels() -> np.ndarray:
    """A 1536 x 1600 synthetic section with fibres of ~60 px, 2 px gaps and 20 % touching."""
    return voronoi_fibres((1536, 1600), 60, 2, seed=1)


@pytest.fixture(scope="session")
def synth_maps(synth_labels: np.ndarray) -> ArrayMaps:
    """Perturbed maps (blur, noise, holes) of the synthetic section."""
    return ArrayMaps(maps_from_labels(synth_labels, seed=2, noise=0.05, blur_px=1.0, holes=30))


@pytest.fixture(scope="session")
def nclsm_maps() -> dict[str, ArrayMaps]:
    """Maps of real fibre geometry: crops of S11 and S60 at about 1 um/px."""
    crops = {"S11": nclsm_crop("S11", 2000, 3000, 1024), "S60": nclsm_crop("S60", 1500, 1500, 1024)}
    return {k: ArrayMaps(maps_from_labels(v, seed=3, noise=0.05, blur_px=1.0, holes=20))
            for k, v in crops.items()}
