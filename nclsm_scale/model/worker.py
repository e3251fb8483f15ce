"""Load the inference engine once per Dask worker.

>>> register_model(client, cfg.model)                       # doctest: +SKIP
>>> def task(...):
...     engine = get_engine()                               # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
from typing import TYPE_CHECKING, Any

from distributed import WorkerPlugin, get_worker

from nclsm_scale.config import ModelConfig
from nclsm_scale.errors import ModelError
from nclsm_scale.model.infer import Engine

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["PLUGIN_NAME", "ModelPlugin", "get_engine", "register_model"]

log = logging.getLogger(__name__)

PLUGIN_NAME = "nclsm-model"

#: The model config each client has registered (slides of a run share one client from several threads).
_registered: weakref.WeakKeyDictionary[Client, str] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


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


def register_model(client: Client, cfg: ModelConfig) -> None:
    """Register :class:`ModelPlugin` for ``cfg`` on ``client``'s workers, unless this client already did.

    Registering a plugin again replaces it: every worker drops its engine and loads
    it anew, and a network task running meanwhile finds no engine. Slides of one run
    share a client from several threads, so only the first registration of a
    config goes to the workers.
    """
    key = json.dumps(cfg.model_dump(mode="json"), sort_keys=True)
    with _lock:
        if _registered.get(client) == key:
            return
        client.register_plugin(ModelPlugin(cfg))
        _registered[client] = key


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
