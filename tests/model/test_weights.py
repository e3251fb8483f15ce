"""Weights files: round trip, model card, and clear errors for bad files."""

from __future__ import annotations

import json

import pytest
import torch

from nclsm_scale.errors import ModelError
from nclsm_scale.model.card import BUNDLED_WEIGHTS, read_card, sha256_of
from nclsm_scale.model.net import FibreNet, NetSpec
from nclsm_scale.model.weights import load_net, save_net


def test_round_trip_keeps_every_tensor_and_the_margin(tmp_path, tiny_net):
    path = save_net(tiny_net, tmp_path / "w.pt", margin_px=32, card={"note": "x"})
    net, margin = load_net(path)
    assert margin == 32 and net.spec == tiny_net.spec and not net.training
    a, b = tiny_net.state_dict(), net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    card = read_card(path)
    assert card["sha256"] == sha256_of(path) and card["note"] == "x" and card["margin_px"] == 32


def test_truncated_file_is_a_model_error_naming_it(tmp_path, tiny_net):
    path = save_net(tiny_net, tmp_path / "w.pt", margin_px=16)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"w\.pt.*truncated or corrupt"):
        load_net(path)


def test_corrupt_file_is_a_model_error(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ModelError, match="junk.pt"):
        load_net(path)


def test_missing_file_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_net(tmp_path / "nope.pt")


def test_mismatched_weights_are_a_model_error(tmp_path, tiny_net):
    path = save_net(tiny_net, tmp_path / "w.pt", margin_px=16)
    payload = torch.load(path, weights_only=True)
    payload["spec"]["base_channels"] = 6  # tensors no longer fit the architecture
    torch.save(payload, path)
    with pytest.raises(ModelError, match="do not match"):
        load_net(path)


def test_foreign_torch_file_is_rejected(tmp_path):
    path = tmp_path / "other.pt"
    torch.save(FibreNet(NetSpec(base_channels=2, depth=1)).state_dict(), path)
    with pytest.raises(ModelError, match="not an nclsm-scale weights file"):
        load_net(path)


def test_pickled_code_is_not_executed(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "nclsm-fibrenet", "obj": object()}, path)
    with pytest.raises(ModelError, match="evil.pt"):
        load_net(path)


@pytest.mark.skipif(not BUNDLED_WEIGHTS.is_file(), reason="bundled weights not built yet")
def test_bundled_weights_load_and_match_their_card():
    net, margin = load_net(None)
    card = json.loads(BUNDLED_WEIGHTS.with_suffix(".json").read_text())
    assert card["sha256"] == sha256_of(BUNDLED_WEIGHTS)
    assert margin == card["margin_px"] and margin % net.downsampling == 0
    assert BUNDLED_WEIGHTS.stat().st_size < 5 * 2**20
