"""Training the fibre network: deterministic, checkpointed, ends with a model card.

``train`` optimises a :class:`FibreNet` on random augmented patches (see
:mod:`nclsm_scale.model.augment`) with AdamW and a one-cycle learning rate,
writes a checkpoint every ``checkpoint_every`` steps (``<out>.ckpt``; a rerun
resumes from it and reproduces the uninterrupted run), and saves the weights
with a model card: data, steps, losses, receptive field, held-out metrics, sha256.
"""

from __future__ import annotations

import logging
import math
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nclsm_scale.config import TrainConfig
from nclsm_scale.model.augment import Pool, make_batch
from nclsm_scale.model.data import Sample
from nclsm_scale.model.net import FibreNet, NetSpec, measure_receptive_field
from nclsm_scale.model.weights import load_net, save_net

__all__ = ["loss_fn", "train"]

log = logging.getLogger(__name__)

#: Weights of the per-map losses (foreground, boundary, distance).
LOSS_WEIGHTS = (1.0, 0.5, 1.0)


def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Weighted sum of per-map binary cross-entropies (soft targets for the distance)."""
    total = logits.new_zeros(())
    for c, weight in enumerate(LOSS_WEIGHTS):
        pos_weight = torch.tensor(3.0) if c == 1 else None
        total = total + weight * F.binary_cross_entropy_with_logits(
            logits[:, c], targets[:, c], pos_weight=pos_weight
        )
    return total


def _margin(net: FibreNet) -> tuple[int, dict[str, int]]:
    rf = measure_receptive_field(net)
    factor = net.downsampling
    return int(math.ceil(rf["effective_radius_px"] / factor) * factor), rf


def train(
    cfg: TrainConfig,
    out: str | Path,
    samples: list[Sample],
    *,
    heldout: list[Sample] | None = None,
    sources: list[str] | None = None,
    stop_at_step: int | None = None,
) -> dict[str, Any] | None:
    """Train on ``samples``, save ``out`` (+ model card), return the card.

    Parameters
    ----------
    cfg : TrainConfig
        Steps, seed, batch and patch size, learning rate, augmentation ranges.
    out : path
        Weights file to write; ``<out>.ckpt`` holds the resumable checkpoint.
    samples : list of Sample
        Training images (normalised) with instance labels.
    heldout : list of Sample, optional
        Never trained on; evaluated at the end (model and classical baseline).
    sources : list of str, optional
        Data source names recorded in the model card.
    stop_at_step : int, optional
        Checkpoint and return None after this step (a time-boxed session; a
        later call resumes).
    """
    out = Path(out)
    ckpt_path = out.with_name(out.name + ".ckpt")
    torch.manual_seed(cfg.seed)
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        return _train(cfg, out, ckpt_path, samples, heldout, sources, stop_at_step)
    finally:
        torch.use_deterministic_algorithms(deterministic)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a training checkpoint atomically (the resume point)."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _model_card(
    cfg: TrainConfig, losses: list[float], seconds: float, samples: list[Sample], sources: list[str] | None,
    margin_px: int, rf: dict[str, Any],
) -> dict[str, Any]:
    """The model card of a finished training: settings, loss curve, data, receptive field."""
    return {
        "trained": {
            "steps": cfg.steps,
            "seed": cfg.seed,
            "batch_size": cfg.batch_size,
            "patch_px": cfg.patch_px,
            "learning_rate": cfg.learning_rate,
            "init_weights": Path(cfg.init_weights).name if cfg.init_weights else None,
            "scale_range": [cfg.scale_min, cfg.scale_max],
            "loss_first_20": float(np.mean(losses[:20])),
            "loss_last_20": float(np.mean(losses[-20:])),
            "loss_every_100": [
                round(float(np.mean(losses[i : i + 100])), 4) for i in range(0, len(losses), 100)
            ],
            "seconds_this_session": round(seconds, 1),
            "torch": torch.__version__,
            "machine": f"{platform.machine()} {platform.system()}",
        },
        "data": {
            "sources": sources or [],
            "pixel_size_um": cfg.pixel_size_um,
            "holdout_fraction": cfg.holdout_fraction,
            "images": [
                {
                    "name": s.name,
                    "shape_yx": list(s.labels.shape),
                    "fibres": int(np.unique(s.labels[s.labels > 0]).size),
                }
                for s in samples
            ],
        },
        "receptive_field": {
            **rf,
            "margin_px": margin_px,
            "rule": "effective radius (99.9% of |grad|) rounded up to the downsampling",
        },
        "map_channels": ["foreground", "boundary", "distance"],
        "normalisation": "per-channel (x - p1) / (p99.5 - p1) over the whole slide",
    }


def _train(
    cfg: TrainConfig,
    out: Path,
    ckpt_path: Path,
    samples: list[Sample],
    heldout: list[Sample] | None,
    sources: list[str] | None,
    stop_at_step: int | None,
) -> dict[str, Any] | None:
    pools = [Pool.from_sample(s.image, s.labels, seed=cfg.seed + i) for i, s in enumerate(samples)]
    if cfg.init_weights is not None:
        net, _ = load_net(cfg.init_weights)
        log.info("starting from %s (%s)", cfg.init_weights, net.spec)
    else:
        net = FibreNet(NetSpec(base_channels=cfg.base_channels, depth=cfg.depth))
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.learning_rate, total_steps=cfg.steps, pct_start=0.1
    )
    losses: list[float] = []
    start = 0
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        losses, start = list(state["losses"]), int(state["step"])
        log.info("resuming from %s at step %d", ckpt_path, start)
    net.train()
    t0 = time.perf_counter()
    for step in range(start, cfg.steps):
        x, y = make_batch(
            pools,
            np.random.default_rng([cfg.seed, step]),
            batch_size=cfg.batch_size,
            patch_px=cfg.patch_px,
            scale_min=cfg.scale_min,
            scale_max=cfg.scale_max,
        )
        loss = loss_fn(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        done = step + 1
        if done % 20 == 0 or done == cfg.steps:
            rate = (done - start) / (time.perf_counter() - t0)
            log.info(
                "step %d/%d loss %.4f (mean of last 20: %.4f) %.2f steps/s",
                done,
                cfg.steps,
                losses[-1],
                float(np.mean(losses[-20:])),
                rate,
            )
        stop = stop_at_step is not None and stop_at_step <= done < cfg.steps
        if done % cfg.checkpoint_every == 0 or done == cfg.steps or stop:
            _save_checkpoint(ckpt_path, {"net": net.state_dict(), "opt": opt.state_dict(),
                                         "sched": sched.state_dict(), "losses": losses, "step": done})
        if stop:
            log.info("stopped at step %d; rerun to resume", done)
            return None
    net.eval()
    margin_px, rf = _margin(net)
    card = _model_card(cfg, losses, time.perf_counter() - t0, samples, sources, margin_px, rf)
    save_net(net, out, margin_px=margin_px, card=card)
    if heldout:
        from nclsm_scale.model.heldout import evaluate_samples
        from nclsm_scale.model.infer import Engine

        engine = Engine(net, device="auto", margin_px=margin_px)
        card["heldout"] = evaluate_samples(engine, heldout)
        save_net(net, out, margin_px=margin_px, card=card)
    log.info("saved %s (margin %d px)", out, margin_px)
    return card


def train_from_config(cfg: TrainConfig, out: str | Path) -> dict[str, Any] | None:
    """Load ``cfg.data`` (and the NCL-SM held-out parts, if any), train, save ``out``."""
    from nclsm_scale.model.data import heldout_samples, load_sources

    samples = load_sources(list(cfg.data), cfg)
    if not samples:
        from nclsm_scale.errors import ConfigError

        raise ConfigError(
            "no training images: give --data synth, ncl-sm or a folder/OME-Zarr store."
        )
    folder = cfg.ncl_sm_dir
    if folder is None:
        folder = next(
            (d for d in cfg.data if Path(d).is_dir() and any(Path(d).glob("*_fibres.tif*"))), None
        )
    heldout = (
        heldout_samples(folder, cfg) if folder is not None and cfg.holdout_fraction > 0 else None
    )
    return train(cfg, out, samples, heldout=heldout, sources=list(cfg.data))
