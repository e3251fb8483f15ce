"""Held-out accuracy of the fibre network against the classical baseline.

Renders the held-out bottom rows of the NCL-SM masks (never trained on) at the
default segmentation level (1 um/px) with several appearance seeds, segments
them with the network (tiled engine + whole-image instance extraction) and with
the classical baseline, and scores both against the masks. ``ratio`` = model
mean matched IoU / baseline mean matched IoU. Writes a markdown table with
``--markdown PATH``.

    python bench/model_eval.py [--quick] [--weights W.pt] [--ncl-sm DIR] [--markdown OUT.md]
        [--cpu-path eager|fused|bf16|compile] [--look varied|clean]

``--cpu-path`` evaluates one CPU inference path (``model.cpu_path``) through the same
engine; the result records it. ``--look clean`` renders the held-out parts clean
(``nclsm_scale.model.data.CLEAN_LOOK``: no interstitium, connective tissue, vessels,
tears or broken membranes), as a well-stained section looks; the default ``varied``
draws each seed's appearance from the renderer's full ranges.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine  # noqa: E402

from nclsm_scale.config import ModelConfig, TrainConfig  # noqa: E402
from nclsm_scale.evaluate import InstanceMetrics  # noqa: E402
from nclsm_scale.model.card import BUNDLED_WEIGHTS, read_card  # noqa: E402
from nclsm_scale.model.data import heldout_samples  # noqa: E402
from nclsm_scale.model.heldout import evaluate_samples, pooled  # noqa: E402
from nclsm_scale.model.infer import load_engine  # noqa: E402

DEFAULT_NCL_SM = Path(os.environ.get("NCLSM_DATA", "/work/shared/data/ncl-sm"))


def _row(name: str, m: dict) -> str:
    f1 = m["f1"]
    return (
        f"| {name} | {m['n_gt']} | {m['n_pred']} | {f1['0.5']:.4f} | {f1['0.75']:.4f} | {f1['0.9']:.4f} "
        f"| {m['precision']['0.5']:.4f} | {m['recall']['0.5']:.4f} | {m['mean_matched_iou']:.4f} "
        f"| {m['splits']} | {m['merges']} |"
    )


def _training_line(card: dict) -> str:
    t = card.get("trained", {})
    if not t:
        return "unknown (no model card)."
    return (
        f"{t['steps']} steps of {t['batch_size']} patches of {t['patch_px']} px, seed {t['seed']}, "
        f"on {', '.join(card['data']['sources'])} ({len(card['data']['images'])} images: synthetic "
        "sections and renders of the top rows of the NCL-SM masks), CPU "
        f"({t.get('wall_minutes', '?')} min); receptive-field margin {card['margin_px']} px."
    )


def _markdown(result: dict, per_seed: list[dict], weights: str, seconds: float) -> str:
    head = (
        "| method | GT fibres | predicted | F1@0.5 | F1@0.75 | F1@0.9 | precision@0.5 | recall@0.5 "
        "| mean matched IoU | splits | merges |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [
        "# Fibre network: held-out evaluation",
        "",
        f"Data: images rendered (`nclsm_scale.synth.render_from_mask`) at 1 um/px from the bottom "
        f"{result['holdout_fraction']:.0%} of the rows of the real NCL-SM masks S11 and S60 "
        "(0.25 um/px annotations), never rendered for training; "
        f"{len(per_seed)} appearance seeds, {result['look']} look. Sizes: "
        + ", ".join(
            f"{s['name']} {s['shape_yx'][0]}x{s['shape_yx'][1]} px" for s in per_seed[0]["samples"]
        )
        + ".",
        f"Training: {result['trained']}",
        f"Weights: `{weights}` (sha256 {result['sha256'][:16]}...). Machine: {machine()}; "
        f"device {result['device']}; total {seconds:.0f} s.",
        "",
        "Pooled over all images and seeds:",
        "",
        head,
        _row("network (tiled engine + seeded watershed)", result["model"]),
        _row("classical baseline (threshold + distance + watershed)", result["baseline"]),
        "",
        "Per image (network | baseline):",
        "",
        "| image | seed | GT | F1@0.5 | F1@0.9 | mean IoU | baseline F1@0.5 | baseline F1@0.9 | baseline mean IoU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for block in per_seed:
        for s in block["samples"]:
            m, b = s["model"], s["baseline"]
            lines.append(
                f"| {s['name']} | {block['seed']} | {m['n_gt']} | {m['f1']['0.5']:.4f} | {m['f1']['0.9']:.4f} "
                f"| {m['mean_matched_iou']:.4f} | {b['f1']['0.5']:.4f} | {b['f1']['0.9']:.4f} "
                f"| {b['mean_matched_iou']:.4f} |"
            )
    lines += [
        "",
        "Human inter-annotator agreement on NCL-SM (13 + 10 duplicated fibres): mean IoU 0.958.",
        "Metric definitions: `nclsm_scale/evaluate.py` (one-to-one matching; split = >= 2 predictions "
        "each >= 50 % inside one GT fibre; merge = >= 2 GT fibres each >= 50 % inside one prediction).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    """Evaluate, write the markdown table, emit the result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one appearance seed instead of three")
    parser.add_argument("--weights", default=None, help="weights file (default: bundled)")
    parser.add_argument("--ncl-sm", default=str(DEFAULT_NCL_SM), help="folder with *_fibres.tiff")
    parser.add_argument("--markdown", default=None, help="write the table here")
    parser.add_argument("--cpu-path", default=ModelConfig().cpu_path, help="model.cpu_path to evaluate")
    parser.add_argument("--look", choices=("varied", "clean"), default="varied", help="appearance of the renders")
    args = parser.parse_args()
    t0 = time.perf_counter()
    cfg = TrainConfig()
    engine = load_engine(ModelConfig(weights=args.weights, cpu_path=args.cpu_path))
    seeds = [12345] if args.quick else [12345, 777, 2024]
    per_seed = []
    for seed in seeds:
        samples = heldout_samples(args.ncl_sm, cfg, seed=seed, clean=args.look == "clean")
        per_seed.append({"seed": seed, **evaluate_samples(engine, samples)})
    all_model = [InstanceMetrics(**s["model"]) for b in per_seed for s in b["samples"]]
    all_base = [InstanceMetrics(**s["baseline"]) for b in per_seed for s in b["samples"]]
    weights = args.weights or str(BUNDLED_WEIGHTS)
    card = read_card(weights)
    result = {
        "bench": "model_eval",
        "ratio": None,
        "target": 1.0,
        "model": pooled(all_model),
        "baseline": pooled(all_base),
        "seeds": seeds,
        "look": args.look,
        "holdout_fraction": cfg.holdout_fraction,
        "device": engine.device.type,
        "path": engine.path,
        "sha256": card.get("sha256", "?"),
        "trained": _training_line(card),
        "weights": weights,
    }
    result["ratio"] = round(
        result["model"]["mean_matched_iou"] / max(result["baseline"]["mean_matched_iou"], 1e-9), 4
    )
    seconds = time.perf_counter() - t0
    result["seconds"] = round(seconds, 1)
    if args.markdown:
        Path(args.markdown).write_text(
            _markdown(result, per_seed, weights, seconds), encoding="utf-8"
        )
    emit(result)


if __name__ == "__main__":
    main()
