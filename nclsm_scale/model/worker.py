"""Load the inference engine once per Dask worker.

>>> client.register_plugin(ModelPlugin(cfg.model))          # doctest: +SKIP
>>> def task(...):
...     engine = get_engine()                               # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Any

from distributed import WorkerPlugin, get_worker

from nclsm_scale.config import ModelConfig
from nclsm_scale.errors import ModelError
from nclsm_scale.model.infer import Engine

__all__ = ["PLUGIN_NAME", "ModelPlugin", "get_engine"]

log = logging.getLogger(__name__)

PLUGIN_NAME = "nclsm-model"


class ModelPlugin(WorkerPlugin):
    """Worker plugin holding one :class:`Engine` built from a :class:`ModelConfig`."""

    name = PLUGIN_NAME

    def __init__(self, cfg: ModelConfig) -> None:
        self.cfg = cfg.model_dump()
        self.engine: Engine | None = None

    def setup(self, worker: Any) -> None:
        """Build the engine (weights read once per worker)."""
        from nclsm_scale.model.infer import load_engine

        self.engine = load_engine(ModelConfig(**self.cfg))
        log.info("worker %s: %r", worker.address, self.engine)

    def teardown(self, worker: Any) -> None:
        """Drop the engine."""
        self.engine = None


def get_engine() -> Engine:
    """Return the engine of the worker running the current task.

    Raises
    ------
    ModelError
        If :class:`ModelPlugin` was not registered with the client.
    """
    plugin = get_worker().plugins.get(PLUGIN_NAME)
    if not isinstance(plugin, ModelPlugin) or plugin.engine is None:
        raise ModelError(
            "no inference engine on this worker: register ModelPlugin(cfg.model) "
            "with the client first."
        )
    return plugin.engine
