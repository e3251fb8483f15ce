"""Fibre segmentation network: architecture, weights, training and tiled inference.

- :mod:`~nclsm_scale.model.net`: :class:`FibreNet` (compact U-Net, downsampling 16)
  and :func:`measure_receptive_field`.
- :mod:`~nclsm_scale.model.weights`: :func:`load_net` / :func:`save_net`, the bundled
  ``weights/default.pt`` and its model card ``default.json``.
- :mod:`~nclsm_scale.model.infer`: :data:`MAP_CHANNELS`, :class:`Engine` (exact,
  region-independent tiled inference), :func:`load_engine`.
- :mod:`~nclsm_scale.model.worker`: :class:`ModelPlugin` and :func:`get_engine` for Dask.
- :mod:`~nclsm_scale.model.targets`, :mod:`~nclsm_scale.model.instances`: the per-pixel
  meaning of the maps and whole-image instance extraction.
- :mod:`~nclsm_scale.model.data`, :mod:`~nclsm_scale.model.augment`,
  :mod:`~nclsm_scale.model.train`, :mod:`~nclsm_scale.model.heldout`: training and
  held-out evaluation; :mod:`~nclsm_scale.model.baseline`: the classical baseline.
"""
