"""Curation: AM or a rejection reason (NTM, FAM, FR, EDGE, DEBRIS) per fibre (``curate`` stage).

Public API::

    from nclsm_scale.curate import curate_slide, curate_fibres, detect_folds, apply_overrides

- :func:`curate_slide` (slide_path, cfg, client) -> the stage: folds, fold fractions, rules, overrides.
- :func:`curate_fibres` (table, cfg, pixel_size_um=...) -> table with ``curation_class``, ``reasons``,
  calibrated ``confidence`` and ``not_judged`` (FR from the model of :mod:`~nclsm_scale.curate.fr_model`).
- :func:`call_fibre_types` (intensities) -> fibre types with per-slide thresholds.
- :func:`detect_folds` (image_lowres, tissue_mask, *, pixel_size_um, ...) -> bool fold mask.
- :func:`apply_overrides` (table, csv_path or table): user corrections; :func:`read_overrides` reads
  and checks a CSV.

The classes and reasons themselves are :class:`nclsm_scale.tables.FibreClass`.
"""

from nclsm_scale.curate.driver import CurateResult, curate_slide
from nclsm_scale.curate.folds import detect_folds
from nclsm_scale.curate.overrides import apply_overrides, read_overrides
from nclsm_scale.curate.rules import curate_fibres, field_elongation, typical_diameter_um
from nclsm_scale.curate.types import call_fibre_types

__all__ = [
    "CurateResult",
    "apply_overrides",
    "call_fibre_types",
    "curate_fibres",
    "curate_slide",
    "detect_folds",
    "field_elongation",
    "read_overrides",
    "typical_diameter_um",
]
