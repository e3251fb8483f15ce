"""The slide viewer (``nclsm-scale view``): pan and zoom a run's slides with their fibre classes, correct them.

Public API::

    from nclsm_scale.view import RunView, make_server

- :class:`RunView` (run_dir, cfg, client=None): tiles from the slides' OME-Zarr pyramids
  (image composite with the run's normalisation, fibre outlines in class colours, folds),
  the fibre under a point, class overrides and re-aggregation (:mod:`~nclsm_scale.view.run_view`).
- :func:`make_server` (view, host, port) -> a :class:`ViewServer` serving the page
  (OpenSeadragon, vendored in ``static/openseadragon``) and its JSON API (:mod:`~nclsm_scale.view.server`).
- :mod:`~nclsm_scale.view.tiles`: the pure functions that draw one tile.

The viewer reruns ``curate`` and ``aggregate`` for edited slides, as ``run`` does,
so it sits on ``run``'s layer of the package.
"""

from nclsm_scale.view.run_view import RunView
from nclsm_scale.view.server import ViewServer, make_server

__all__ = ["RunView", "ViewServer", "make_server"]
