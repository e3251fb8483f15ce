"""A small real run (synth, convert, segment from stored GT maps, measure, curate, aggregate) and a viewer on it."""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path

import pytest

from nclsm_scale.config import RunConfig


@pytest.fixture(scope="module")
def view_run(tmp_path_factory, client, converted_with_truth_maps):
    """A run folder with one 1024^2 px (0.5 um/px) synthetic slide ``V1``, aggregated, and its config."""
    from nclsm_scale.aggregate import aggregate_run
    from nclsm_scale.curate import curate_slide
    from nclsm_scale.layout import RunLayout
    from nclsm_scale.measure.driver import measure_slide
    from nclsm_scale.normalise import slide_norm
    from nclsm_scale.report import build_report
    from nclsm_scale.segment import segment_slide
    from nclsm_scale.slide import open_slide

    root = tmp_path_factory.mktemp("view")
    layout = RunLayout(root / "run")
    cfg = RunConfig.model_validate({
        "synth": {"size_px": [1024, 1024], "seed": 5, "folds": 1, "fold_width_um": 150.0},
        "convert": {"chunk_px": 256, "min_level_px": 64},
        "grid": {"block_px": 256},
        "view": {"tile_px": 256, "port": 0},
        "report": {"geojson": False, "thumbnail_px": 256},
    })
    store, cfg, _, _ = converted_with_truth_maps(root, layout, cfg, "V1")
    segment_slide(store, cfg, client)
    measure_slide(store, cfg, client)
    curate_slide(store, cfg, client)
    aggregate_run(layout.root, cfg.aggregate)
    build_report(layout.root, cfg, client)
    # run.json's normalisation wins over the store's: record one that differs, so the tiles must use it
    norm = slide_norm(open_slide(store)).model_dump(mode="json")
    norm["hi"] = [lo + 0.8 * (hi - lo) for lo, hi in zip(norm["lo"], norm["hi"], strict=True)]
    layout.run_json.write_text(json.dumps({"config": cfg.model_dump(mode="json"), "normalisation": {"V1": norm}}))
    return {"layout": layout, "cfg": cfg, "store": Path(store), "norm": norm}


@pytest.fixture(scope="module")
def viewer(view_run, client):
    """The viewer's server on a free port of 127.0.0.1, serving from a thread; yields its base URL and view."""
    from nclsm_scale.view import RunView, make_server

    view = RunView(view_run["layout"].root, view_run["cfg"], client=client)
    server = make_server(view, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"url": server.url.rstrip("/"), "view": view, "server": server}
    server.shutdown()
    server.server_close()
    view.close()


def _http(url: str, body: dict | None = None) -> tuple[int, bytes, str]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")


@pytest.fixture(scope="session")
def http():
    """``http(url, body=None)``: GET (or POST ``body`` as JSON) ``url``; status, body and content type, errors too."""
    return _http
