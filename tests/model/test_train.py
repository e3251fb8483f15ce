"""Training: deterministic loss sequence, checkpoint resume, model card."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nclsm_scale.config import TrainConfig
from nclsm_scale.errors import ModelError
from nclsm_scale.model.augment import Pool, make_batch
from nclsm_scale.model.card import sha256_of
from nclsm_scale.model.data import Sample, split_holdout
from nclsm_scale.model.train import loss_fn, train
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


def test_fine_tuning_starts_from_the_given_weights(tmp_path, samples):
    start = tmp_path / "start.pt"
    train(_cfg(), start, samples)
    cfg = _cfg(steps=1, seed=11, depth=4, base_channels=8, init_weights=str(start))
    card = train(cfg, tmp_path / "tuned.pt", samples)
    # the first loss is the starting network's loss on the first batch of this run
    net, _ = load_net(start)
    net.train()
    pools = [Pool.from_sample(s.image, s.labels, seed=cfg.seed + i) for i, s in enumerate(samples)]
    x, y = make_batch(pools, np.random.default_rng([cfg.seed, 0]), batch_size=cfg.batch_size,
                      patch_px=cfg.patch_px, scale_min=cfg.scale_min, scale_max=cfg.scale_max)
    with torch.no_grad():
        expected = float(loss_fn(net(x), y))
    assert card["trained"]["loss_first_20"] == pytest.approx(expected, rel=1e-6)
    assert card["trained"]["init_weights"] == "start.pt"
    tuned, _ = load_net(tmp_path / "tuned.pt")
    assert tuned.spec == net.spec  # the starting weights' architecture, not the config's
    assert not _same_weights(start, tmp_path / "tuned.pt")


def test_fine_tuning_from_a_missing_file_names_it(tmp_path, samples):
    with pytest.raises(ModelError, match="nowhere.pt: weights file not found"):
        train(_cfg(init_weights=str(tmp_path / "nowhere.pt")), tmp_path / "t.pt", samples)


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
    tuned = tmp_path / "tuned.pt"
    assert main([*argv[:2], str(tuned), *argv[3:], "--init", str(out)]) == 0
    assert json.loads(tuned.with_suffix(".json").read_text())["trained"]["init_weights"] == "w.pt"


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


def test_ncl_sm_masks_render_with_clean_renders_last(tmp_path, make_toy):
    import tifffile
    from scipy import ndimage

    from nclsm_scale.model.data import heldout_samples, load_sources

    _, labels = make_toy((96, 96), seed=4, cell_px=200)
    labels[labels % 3 == 0] = 0  # gaps between fibres, as in NCL-SM masks
    mask = np.kron(labels, np.ones((4, 4), np.uint32))  # a 0.25 um/px mask, rendered at 1 um/px
    tifffile.imwrite(tmp_path / "T1_fibres.tiff", mask)
    cfg = TrainConfig(renders_per_mask=3, clean_renders=1, holdout_fraction=0.25, seed=3)
    samples = load_sources([str(tmp_path)], cfg)
    with pytest.raises(ValueError, match="clean_renders 4 exceeds renders_per_mask 3"):
        TrainConfig(renders_per_mask=3, clean_renders=4)
    assert [s.name for s in samples] == ["T1_fibres[train]#0", "T1_fibres[train]#1", "T1_fibres[train]#2 clean"]
    # the clean render of a seed draws less membrane signal away from the fibres than its normal render
    clean = load_sources([str(tmp_path)], TrainConfig(**{**cfg.model_dump(), "clean_renders": 3}))
    far = ndimage.distance_transform_edt(samples[0].labels == 0) > 4
    for normal, tidy in zip(samples[:2], clean[:2], strict=True):
        assert np.array_equal(normal.labels, tidy.labels)
        assert tidy.image[0][far].mean() < normal.image[0][far].mean()
    # the held-out part renders clean on request too (bench/model_eval --look clean)
    (held,) = heldout_samples(tmp_path, cfg, seed=9)
    (held_clean,) = heldout_samples(tmp_path, cfg, seed=9, clean=True)
    assert held.name == held_clean.name == "T1_fibres[held-out]"
    assert np.array_equal(held.labels, held_clean.labels) and held.labels.shape[0] == 24
    far = ndimage.distance_transform_edt(held.labels == 0) > 4
    assert held_clean.image[0][far].mean() < held.image[0][far].mean()
