"""Curation: AM or a rejection reason (NTM, FAM, FR, EDGE, DEBRIS) per fibre (``curate`` stage).

Public API::

    from nclsm_scale.curate import curate_fibres, detect_folds, mask_window, apply_overrides, Reason

- :func:`curate_fibres` (table, cfg) -> table with ``curation_class``, ``reasons``, ``confidence``.
- :func:`detect_folds` (image_lowres, tissue_mask, *, pixel_size_um, ...) -> bool fold mask.
- :func:`mask_window`: a low-resolution mask on a full-resolution window (for ``measure``).
- :func:`apply_overrides` (table, csv_path or table): user corrections; :func:`read_overrides` reads
  and checks a CSV, :func:`stored_overrides_path` names the file ``curate`` remembers them in.
"""

from nclsm_scale.curate.folds import detect_folds, mask_window
from nclsm_scale.curate.overrides import apply_overrides, read_overrides, stored_overrides_path
from nclsm_scale.curate.rules import PRIORITY, Reason, curate_fibres, field_elongation, typical_diameter_um

__all__ = [
    "PRIORITY",
    "Reason",
    "apply_overrides",
    "curate_fibres",
    "detect_folds",
    "field_elongation",
    "mask_window",
    "read_overrides",
    "stored_overrides_path",
    "typical_diameter_um",
]
