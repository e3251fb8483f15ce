"""Per-fibre measurements in physical units (``measure`` stage).

Public API::

    from nclsm_scale.measure import measure_fibres, measure_block, context_px

- :func:`measure_fibres` (labels, image, *, pixel_size_um, channel_roles, channel_names, ...) ->
  DataFrame, one row per fibre, columns :func:`nclsm_scale.tables.measure_columns` (geometry, the
  curation features and every channel's statistics).
- :func:`measure_block`: the same for a block's owned fibres, checking the halo.
- :func:`context_px`: context (px) a window needs around each fibre's bounding box.
"""

from nclsm_scale.measure.fibres import context_px, measure_block, measure_fibres

__all__ = ["context_px", "measure_block", "measure_fibres"]
