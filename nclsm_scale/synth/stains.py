"""Stains (channel layouts) and ground-truth fibre types.

A slide renders the channels listed in ``SynthConfig.stains``: ``membrane``
(dystrophin, laminin or WGA), ``mito`` (VDAC), the myosin heavy-chain channels
``myh1``, ``myh2a``, ``myh2x`` (MyHC I, IIa, IIx) and ``dapi`` (nuclei). Every
fibre has a ground-truth type among :data:`FIBRE_TYPES`, drawn from a hash of its
identity with the slide's type shares; MyHC channels are bright exactly in the
fibres whose type contains theirs (hybrids in both).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from nclsm_scale.config import FibreType, SynthConfig
from nclsm_scale.synth.noise import hash_ints, salt, slide_uniform, uniform_k

#: Channel name written into the OME-TIFF for each stain. The converter maps names to
#: roles by words (``nclsm_scale.io.readers.assign_roles``): "dystrophin" is a membrane
#: word and "VDAC" a mito word; the MyHC and DAPI names match no role yet.
CHANNEL_NAMES = {
    "membrane": "dystrophin",
    "mito": "VDAC",
    "myh1": "MyHC I (BA-D5)",
    "myh2a": "MyHC IIa (SC-71)",
    "myh2x": "MyHC IIx (6H1)",
    "dapi": "DAPI",
}
#: Display colour (R, G, B) of each stain in previews.
STAIN_COLOURS = {
    "membrane": (1.0, 0.0, 0.0),
    "mito": (0.0, 1.0, 0.0),
    "myh1": (0.15, 0.35, 1.0),
    "myh2a": (0.1, 0.9, 0.1),
    "myh2x": (0.9, 0.7, 0.0),
    "dapi": (0.0, 0.8, 0.9),
}
FIBRE_TYPES: tuple[FibreType, ...] = ("I", "IIa", "IIx", "I/IIa", "IIa/IIx")
MYHC_STAINS = ("myh1", "myh2a", "myh2x")
#: Which fibre types (indices into FIBRE_TYPES) each MyHC channel marks.
MYHC_POSITIVE = {"myh1": (0, 3), "myh2a": (1, 3, 4), "myh2x": (2, 4)}
#: Position of each type on the oxidative scale, 0 = type I, 1 = type IIx (IIa lies at 0.5:
#: mito mass I > IIa > IIx in human muscle; hybrids lie between their two types).
OXIDATIVE_RANK = np.array([0.0, 0.5, 1.0, 0.25, 0.75])


def channel_names(stains: Sequence[str]) -> tuple[str, ...]:
    """OME channel names of a stain list (see :data:`CHANNEL_NAMES`).

    >>> channel_names(["membrane", "mito"])
    ('dystrophin', 'VDAC')
    """
    return tuple(CHANNEL_NAMES[s] for s in stains)


def fibre_hash(key: np.ndarray, seed: int) -> np.ndarray:
    """Per-fibre appearance hash of fibre identities (0 stays meaningless)."""
    return hash_ints(salt(seed, "fibre-look"), key)


def type_shares(cfg: SynthConfig) -> tuple[float, ...]:
    """Shares of :data:`FIBRE_TYPES` on slide ``cfg.seed``: the configured shares, jittered.

    Each share is scaled by ``exp(u)``, ``u`` uniform in ``+-type_share_jitter``, then
    all are renormalised: slides range from type-I-rich (soleus-like) to type-II-rich.
    """
    j = cfg.type_share_jitter
    raw = [
        cfg.fibre_type_shares.get(t, 0.0) * math.exp(j * (2.0 * slide_uniform(cfg.seed, "type-share", k) - 1.0))
        for k, t in enumerate(FIBRE_TYPES)
    ]
    total = sum(raw)
    return tuple(r / total for r in raw)


def fibre_types(key: np.ndarray, seed: int, shares: tuple[float, ...]) -> np.ndarray:
    """Type index (into :data:`FIBRE_TYPES`) of fibres with these identities, int8."""
    u = uniform_k(fibre_hash(np.asarray(key, np.uint64), seed), 0)
    edges = np.cumsum(shares)[:-1]
    return np.searchsorted(edges, u, side="right").astype(np.int8)


def type_names(types: np.ndarray) -> np.ndarray:
    """Type names of type indices (object array of str)."""
    return np.asarray(FIBRE_TYPES, dtype=object)[np.asarray(types, np.intp)]


__all__ = [
    "CHANNEL_NAMES",
    "FIBRE_TYPES",
    "MYHC_POSITIVE",
    "MYHC_STAINS",
    "OXIDATIVE_RANK",
    "STAIN_COLOURS",
    "channel_names",
    "fibre_hash",
    "fibre_types",
    "type_names",
    "type_shares",
]
