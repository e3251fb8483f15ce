"""The model worker plugin on a real LocalCluster: one engine per worker, same maps, registered once per config."""

from __future__ import annotations

import os

import numpy as np
import pytest
from distributed import Client, LocalCluster

from nclsm_scale.config import ModelConfig
from nclsm_scale.errors import ModelError
from nclsm_scale.model.infer import load_engine
from nclsm_scale.model.weights import save_net
from nclsm_scale.model.worker import get_engine, register_model


def _task(image: np.ndarray) -> tuple[int, int, np.ndarray]:
    engine = get_engine()
    return os.getpid(), id(engine), engine.predict_image(image)


def _batch_size() -> int:
    return get_engine().batch_size


def _no_plugin() -> None:
    get_engine()


def test_engine_is_loaded_once_per_worker_and_gives_identical_maps(tmp_path, tiny_net, make_toy):
    weights = save_net(tiny_net, tmp_path / "w.pt", margin_px=16)
    cfg = ModelConfig(weights=str(weights), device="cpu", window_px=64, batch_size=2)
    image, _ = make_toy((70, 90), seed=5)
    expected = load_engine(cfg).predict_image(image)
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        with Client(cluster) as client:
            with pytest.raises(ModelError, match="register ModelPlugin"):
                client.submit(_no_plugin, pure=False).result()
            register_model(client, cfg)
            futures = [client.submit(_task, image, pure=False) for _ in range(6)]
            results = client.gather(futures)
            register_model(client, cfg)  # a second slide of the run: the engines stay as they are
            again = client.gather([client.submit(_task, image, pure=False) for _ in range(4)])
            register_model(client, cfg.model_copy(update={"batch_size": 3}))  # another config: reloaded
            other = client.gather([client.submit(_batch_size, pure=False) for _ in range(4)])
    engines: dict[int, set[int]] = {}
    for pid, engine_id, maps in results:
        engines.setdefault(pid, set()).add(engine_id)
        assert np.array_equal(maps, expected)
    assert all(len(ids) == 1 for ids in engines.values())
    assert {(pid, engine_id) for pid, engine_id, _ in again} <= {(p, e) for p, ids in engines.items() for e in ids}
    assert other == [3, 3, 3, 3]


@pytest.mark.slow
def test_a_compiled_engine_is_built_once_per_worker_and_reused_by_its_tasks(tmp_path, tiny_net, make_toy):
    weights = save_net(tiny_net, tmp_path / "w.pt", margin_px=16)
    cfg = ModelConfig(weights=str(weights), device="cpu", window_px=64, batch_size=2, cpu_path="compile")
    image, _ = make_toy((70, 90), seed=5)
    expected = load_engine(cfg).predict_image(image)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with Client(cluster) as client:
            register_model(client, cfg)
            results = client.gather([client.submit(_task, image, pure=False) for _ in range(6)])
    engines: dict[int, set[int]] = {}
    for pid, engine_id, maps in results:
        engines.setdefault(pid, set()).add(engine_id)
        assert np.array_equal(maps, expected)
    assert all(len(ids) == 1 for ids in engines.values())
