"""Synthetic muscle sections with exact ground truth.

Public API::

    from nclsm_scale.synth import (
        SyntheticSection, generate_section, write_section, render_from_mask,
    )

- :func:`generate_section` (cfg) -> :class:`SyntheticSection`, in memory, chunk-invariant.
- :func:`write_section` (path, cfg, progress=False) -> dict of written paths; O(chunk) memory.
- :func:`render_from_mask` (labels, seed=, mask_pixel_size_um=, pixel_size_um=, stains=, **appearance)
  -> :class:`SyntheticSection` rendered on a given instance mask.

Modules: ``geometry`` and ``lattice`` (fascicles, fibres, folds, dropout), ``appearance``
(the fluorescence model), ``texture`` (noise fields, holes, cracks), ``structures``
(vessels, nerves, nuclei), ``stains`` (channel layouts, fibre types), ``noise`` (hashes).
"""

from nclsm_scale.synth.from_mask import render_from_mask
from nclsm_scale.synth.generate import SyntheticSection, generate_section
from nclsm_scale.synth.write import write_section

__all__ = ["SyntheticSection", "generate_section", "render_from_mask", "write_section"]
