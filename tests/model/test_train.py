"""Training: deterministic loss sequence, checkpoint resume, model card."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nclsm_scale.config import TrainConfig
from nclsm_scale.model.card import sha256_of
from nclsm_scale.model.data import Sample, split_holdout
from nclsm_scale.model.train import train
from nclsm_scale.model.weights import load_net


@pytest.fixture(scope="module")
def samples(make_toy):
    out = []
    for seed in (1, 2):
        image, labels = make_toy((128, 128), seed=seed)
        out.append(Sample(f"toy{seed}", image, labels, 1.0))
    return out


def _cfg(**kw):
    base = dict(
        steps=3, batch_size=2, patch_px=64, base_channels=4, depth=2, seed=7, checkpoint_every=2
    )
    base.update(kw)
    return TrainConfig(**base)


def _same_weights(a, b) -> bool:
    sa, sb = load_net(a)[0].state_dict(), load_net(b)[0].state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_training_is_deterministic_and_writes_a_card(tmp_path, samples):
    a = train(_cfg(), tmp_path / "a.pt", samples, sources=["toy"])
    b = train(_cfg(), tmp_path / "b.pt", samples, sources=["toy"])
    assert a["trained"]["loss_first_20"] == b["trained"]["loss_first_20"]
    assert a["trained"]["loss_every_100"] == b["trained"]["loss_every_100"]
    assert _same_weights(tmp_path / "a.pt", tmp_path / "b.pt")
    card = json.loads((tmp_path / "a.json").read_text())
    assert card["sha256"] == sha256_of(tmp_path / "a.pt")
    assert card["receptive_field"]["margin_px"] % 4 == 0
    assert card["data"]["images"][0]["name"] == "toy1" and card["data"]["sources"] == ["toy"]
    net, margin = load_net(tmp_path / "a.pt")
    assert margin == card["margin_px"] and net.spec.depth == 2


def test_different_seed_gives_different_losses(tmp_path, samples):
    a = train(_cfg(), tmp_path / "a.pt", samples)
    b = train(_cfg(seed=8), tmp_path / "b.pt", samples)
    assert a["trained"]["loss_first_20"] != b["trained"]["loss_first_20"]


def test_resume_from_checkpoint_reproduces_the_run(tmp_path, samples):
    full = tmp_path / "full.pt"
    card = train(_cfg(steps=4), full, samples)
    resumed = tmp_path / "resumed.pt"
    assert train(_cfg(steps=4), resumed, samples, stop_at_step=2) is None
    assert not resumed.exists()
    assert torch.load(tmp_path / "resumed.pt.ckpt", weights_only=True)["step"] == 2
    again = train(_cfg(steps=4), resumed, samples)
    assert again["trained"]["loss_every_100"] == card["trained"]["loss_every_100"]
    assert _same_weights(full, resumed)


def test_holdout_split_never_overlaps():
    labels = np.arange(30 * 4).reshape(30, 4)
    train_part, test_part = split_holdout(labels, 0.34)
    assert train_part.shape[0] + test_part.shape[0] == 30
    assert not set(train_part.ravel()) & set(test_part.ravel())


def test_train_command_on_tiff_pairs(tmp_path, make_toy):
    import tifffile

    from nclsm_scale.cli.app import main

    data = tmp_path / "pairs"
    data.mkdir()
    for seed in (1, 2):
        image, labels = make_toy((96, 96), seed=seed)
        tifffile.imwrite(data / f"img{seed}.tif", (image * 1000 + 100).astype(np.uint16))
        tifffile.imwrite(data / f"img{seed}_mask.tif", labels)
    out = tmp_path / "w.pt"
    argv = [
        "train",
        "--out",
        str(out),
        "--steps",
        "2",
        "--seed",
        "3",
        "--data",
        str(data),
        "--set",
        "train.batch_size=2",
        "--set",
        "train.patch_px=64",
        "--set",
        "train.base_channels=4",
        "--set",
        "train.depth=2",
    ]
    assert main(argv) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["trained"]["steps"] == 2 and card["data"]["sources"] == [str(data)]
    assert [i["name"] for i in card["data"]["images"]] == ["img1", "img2"]
    assert main(["train", "--out", str(out), "--data", str(tmp_path / "missing")]) == 2


def test_ome_zarr_with_labels_is_a_training_source(tmp_path, make_toy):
    from nclsm_scale.io.ome_zarr import create_image, create_labels
    from nclsm_scale.model.data import load_sources

    image, labels = make_toy((128, 128), seed=6)
    raw = (image * 1000 + 100).clip(0, 65535).astype(np.uint16)
    store = tmp_path / "s.ome.zarr"
    levels = create_image(
        store,
        raw.shape,
        np.uint16,
        pixel_size_um=1.0,
        channel_names=["dystrophin", "VDAC"],
        chunk_px=64,
        min_level_px=64,
    )
    levels[0][...] = raw
    label_levels = create_labels(store, "fibres")
    label_levels[0][...] = labels[None]
    (sample,) = load_sources([str(store)], TrainConfig())
    assert sample.image.shape == (2, 128, 128) and sample.image.dtype == np.float32
    assert np.array_equal(sample.labels, labels)
