"""Per-fibre measurements in physical units (``measure`` stage).

Public API::

    from nclsm_scale.measure import measure_fibres, measure_block, context_px

- :func:`measure_fibres` (labels, image, *, pixel_size_um, channel_roles, ...) -> DataFrame,
  one row per fibre, columns :data:`COLUMNS` (:data:`nclsm_scale.tables.MEASURE_COLUMNS`, the
  curation features included).
- :func:`measure_block`: the same for a block's owned fibres, checking the halo.
- :func:`context_px`: context (px) a window needs around each fibre's bounding box.
"""

from nclsm_scale.measure.fibres import (
    COLUMNS,
    ROLES,
    context_px,
    measure_block,
    measure_fibres,
)

__all__ = ["COLUMNS", "ROLES", "context_px", "measure_block", "measure_fibres"]
