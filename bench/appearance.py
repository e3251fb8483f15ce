"""How close synthetic renders come to real muscle sections: region statistics side by side.

For the two real images in ``/work/shared/data/real`` (NCL-SM figure: membrane + mito,
~3.5 um/px; FiberSight: membrane + MyHC I/IIa/IIx, 0.922 um/px), for procedural
sections rendered at the same pixel size and fibre size, and for ``render_from_mask``
on the real label images (identical geometry), it computes after the same per-image
normalisation ((x - p0.5) / (p99.5 - p0.5) per channel):

- region quantiles (p10/p50/p90) per channel: fibre interior (label eroded by 2 px),
  membrane ring (signed distance to the label outline in [-2, +1] px), background
  (farther than max(4 px, 10 um) from every label);
- median ratios ring / interior and interior / background;
- the texture of fibre interiors (relative deviation from each fibre's mean; fibres
  brighter than the median fibre only): its CV and its radially averaged power spectrum
  as shares of the variance in bands of cycles/um;
- the membrane width: FWHM (um) of the mean membrane profile across label outlines,
  and where its peak lies (um, > 0 inside the label);
- the share of tissue (within 25 um of a fibre) that is dark non-fibre (every channel
  below 0.1).

"before" renders with the code at ``--before`` (default 3d8f854, checked out into a
temporary folder with ``git archive``, run in a subprocess), "after" with this tree.
The before code renders membrane + mito only, so its MyHC rows are empty. The JSON
line's ``ratio`` is the mean |log(ours / real)| distance to real over the scalar
metrics (ratios, CVs, widths, shares) that before and after both have, after divided
by before (< 1: closer to real). These two images show which phenomena exist; they
are not a target to fit.

    python bench/appearance.py [--seeds 4] [--before 3d8f854]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, python  # noqa: E402

REAL = Path("/work/shared/data/real")
REPO = Path(__file__).resolve().parent.parent
BANDS_CYC_UM = ((0.01, 0.03), (0.03, 0.07), (0.07, 0.14), (0.14, 0.3), (0.3, 0.54))
DATASETS = {
    # name: (pixel size um, stains of our renders)
    "ncl": (3.5, ("membrane", "mito")),
    "fibersight": (0.922, ("membrane", "myh1", "myh2a", "myh2x")),
}


def load_real() -> dict[str, tuple[dict[str, np.ndarray], np.ndarray]]:
    """Real images as ({stain: channel}, labels)."""
    import tifffile
    from PIL import Image

    rgb = np.asarray(Image.open(REAL / "ncl-sm-figure-left" / "image.png"))
    ncl = {"membrane": rgb[..., 0], "mito": rgb[..., 1]}
    ncl_labels = tifffile.imread(REAL / "ncl-sm-figure-left" / "labels.tif")
    fs = tifffile.imread(REAL / "fibersight-human" / "skm_hs_cw.tif")
    fs_ch = {"membrane": fs[3], "myh1": fs[0], "myh2a": fs[1], "myh2x": fs[2]}
    fs_labels = tifffile.imread(REAL / "fibersight-human" / "skm_hs_cw_labels.tif")
    return {"ncl": (ncl, ncl_labels), "fibersight": (fs_ch, fs_labels)}


# --- rendering (runs with whichever nclsm_scale is importable: this tree or the old one) ---
def render_all(seeds: int, out: Path) -> None:
    """Render synthetic sections and mask renders of both datasets into ``out`` (npz)."""
    from nclsm_scale.config import SynthConfig
    from nclsm_scale.synth import generate_section, render_from_mask

    has_stains = "stains" in SynthConfig.model_fields
    real = load_real()
    arrays: dict[str, np.ndarray] = {}
    for name, (px, stains) in DATASETS.items():
        stains = stains if has_stains else ("membrane", "mito")
        extra = {"stains": list(stains)} if has_stains else {}
        _, labels = real[name]
        areas = np.bincount(labels.ravel())[1:]
        area_um2 = float(np.median(areas[areas > 0])) * px * px  # fibres as large (in px) as the real ones
        for s in range(seeds):
            cfg = SynthConfig(
                size_px=(512, 512), seed=100 + s, pixel_size_um=px, chunk_px=512, mean_csa_um2=area_um2, **extra
            )
            sec = generate_section(cfg)
            arrays[f"{name}/synth{s}/image"], arrays[f"{name}/synth{s}/labels"] = sec.image, sec.fibres
            mextra = {"stains": stains} if has_stains else {}
            msec = render_from_mask(labels, seed=200 + s, mask_pixel_size_um=px, pixel_size_um=px, **mextra)
            arrays[f"{name}/mask{s}/image"], arrays[f"{name}/mask{s}/labels"] = msec.image, msec.fibres
        arrays[f"{name}/stains"] = np.array(stains)
    np.savez_compressed(out, **arrays)


def render_before(rev: str, seeds: int, folder: Path) -> Path:
    """Render with the package at ``rev`` (extracted with git archive) in a subprocess."""
    blob = subprocess.run(["git", "-C", str(REPO), "archive", rev, "nclsm_scale"], check=True, capture_output=True)
    src = folder / "before"
    with tarfile.open(fileobj=BytesIO(blob.stdout)) as tar:
        tar.extractall(src, filter="data")
    out = folder / "before.npz"
    code = (
        f"import sys, pathlib; sys.path.insert(0, {str(Path(__file__).parent)!r}); import appearance; "
        f"appearance.render_all({seeds}, pathlib.Path({str(out)!r}))"
    )
    subprocess.run([python(), "-c", code], check=True, cwd=folder, env={**os.environ, "PYTHONPATH": str(src)})
    return out


# --- metrics -------------------------------------------------------------------------
def normalise(x: np.ndarray) -> np.ndarray:
    """(x - p0.5) / (p99.5 - p0.5), float32."""
    lo, hi = np.percentile(x, [0.5, 99.5])
    return ((x.astype(np.float32) - lo) / max(hi - lo, 1e-6)).astype(np.float32)


def signed_distance(labels: np.ndarray) -> np.ndarray:
    """Distance (px) to the label outline: > 0 inside a label, < 0 outside."""
    fg = labels > 0
    return np.where(fg, ndimage.distance_transform_edt(fg) - 0.5, 0.5 - ndimage.distance_transform_edt(~fg))


def regions(labels: np.ndarray, px: float) -> dict[str, np.ndarray]:
    """Interior, ring and background masks (see the module docstring)."""
    same = ndimage.minimum_filter(labels, 5) == ndimage.maximum_filter(labels, 5)
    d = signed_distance(labels)
    far = max(4.0, 10.0 / px)
    return {"interior": (labels > 0) & same, "ring": (d >= -2.0) & (d <= 1.0), "background": d < -far}


def spectrum(x: np.ndarray, labels: np.ndarray, interior: np.ndarray, px: float) -> list[float | None]:
    """Shares of interior texture variance per band of :data:`BANDS_CYC_UM` (None above Nyquist)."""
    lab = np.where(interior, labels, 0)
    n = int(lab.max()) + 1
    mean = ndimage.mean(x, lab, np.arange(n))
    mean = np.where(np.arange(n) > 0, np.maximum(mean, 1e-3), 1.0)
    rel = np.where(interior, x / mean[lab] - 1.0, 0.0)
    power = np.abs(np.fft.fft2(rel)) ** 2
    fy = np.fft.fftfreq(x.shape[0])[:, None]
    fx = np.fft.fftfreq(x.shape[1])[None, :]
    f = np.sqrt(fy * fy + fx * fx) / px  # cycles/um
    total = power[f > 0].sum()
    nyquist = 0.5 / px
    return [
        round(float(power[(f >= lo) & (f < hi)].sum() / total), 3) if hi <= nyquist * 1.01 else None
        for lo, hi in BANDS_CYC_UM
    ]


def membrane_profile(m: np.ndarray, labels: np.ndarray, px: float) -> tuple[float | None, float | None]:
    """(FWHM um, peak position um) of the mean membrane profile across label outlines."""
    d = signed_distance(labels)
    step = 0.5
    edges = np.arange(-6.0, 6.0 + step, step)
    sel = (d >= edges[0]) & (d < edges[-1])
    idx = np.digitize(d[sel], edges) - 1
    prof = np.bincount(idx, weights=m[sel], minlength=len(edges) - 1) / np.maximum(
        np.bincount(idx, minlength=len(edges) - 1), 1
    )
    centres = 0.5 * (edges[:-1] + edges[1:])
    k = int(np.argmax(prof))
    base = float(min(prof[: k + 1].min(), prof[k:].min()))
    half = base + 0.5 * (prof[k] - base)
    if prof[k] - base < 0.05:
        return None, None

    def cross(rng: range) -> float:
        prev = k
        for i in rng:
            if prof[i] < half:
                t = (prof[prev] - half) / max(prof[prev] - prof[i], 1e-9)
                return centres[prev] + t * (centres[i] - centres[prev])
            prev = i
        return centres[prev]

    width = cross(range(k + 1, len(prof))) - cross(range(k - 1, -1, -1))
    return round(width * px, 2), round(float(centres[k]) * px, 2)


def measure(channels: dict[str, np.ndarray], labels: np.ndarray, px: float) -> dict[str, object]:
    """Every metric of one image (``channels``: stain -> raw channel)."""
    norm = {s: normalise(c) for s, c in channels.items()}
    reg = regions(labels, px)
    out: dict[str, object] = {}
    for s, x in norm.items():
        q = {r: np.percentile(x[m], [10, 50, 90]) if m.any() else [np.nan] * 3 for r, m in reg.items()}
        out[f"{s}:quantiles"] = {r: [round(float(v), 3) for v in q[r]] for r in q}
        med = {r: max(float(q[r][1]), 0.005) for r in q}
        out[f"{s}:ring/interior"] = round(med["ring"] / med["interior"], 2)
        out[f"{s}:interior/background"] = round(med["interior"] / med["background"], 2)
        if s != "membrane":
            bright = _bright_interior(x, labels, reg["interior"])
            out[f"{s}:spectrum"] = spectrum(x, labels, bright, px)
            out[f"{s}:interior_cv"] = round(float(np.std(_relative(x, labels, bright))), 3)
    width, peak = membrane_profile(norm["membrane"], labels, px)
    out["membrane:fwhm_um"], out["membrane:peak_um"] = width, peak
    fg = labels > 0
    tissue = ndimage.distance_transform_edt(~fg) * px <= 25.0
    dark = np.max(np.stack(list(norm.values())), axis=0) < 0.1
    out["dark_nonfibre_share"] = round(float((tissue & ~fg & dark).sum() / max(tissue.sum(), 1)), 3)
    return out


def _bright_interior(x: np.ndarray, labels: np.ndarray, interior: np.ndarray) -> np.ndarray:
    """Interiors of the fibres brighter than the median fibre (positive fibres of a type channel).

    Texture of dim, negative fibres is mostly noise around the offset; relative to their
    near-zero means it would swamp the statistics.
    """
    lab = np.where(interior, labels, 0)
    mean = ndimage.mean(x, lab, np.arange(int(lab.max()) + 1))
    cut = np.nanmedian(mean[1:])
    return interior & (mean[lab] > max(cut, 0.05))


def _relative(x: np.ndarray, labels: np.ndarray, interior: np.ndarray) -> np.ndarray:
    lab = np.where(interior, labels, 0)
    mean = ndimage.mean(x, lab, np.arange(int(lab.max()) + 1))
    return x[interior] / np.maximum(mean[lab[interior]], 1e-3) - 1.0


def measure_renders(npz: Path, name: str, kind: str, px: float) -> list[dict[str, object]]:
    """Metrics of every render ``kind`` (synth or mask) of dataset ``name``."""
    data = np.load(npz)
    stains = [str(s) for s in data[f"{name}/stains"]]
    out = []
    k = 0
    while f"{name}/{kind}{k}/image" in data:
        image = data[f"{name}/{kind}{k}/image"]
        out.append(measure(dict(zip(stains, image, strict=True)), data[f"{name}/{kind}{k}/labels"], px))
        k += 1
    return out


def median_of(results: list[dict[str, object]]) -> dict[str, object]:
    """Per-metric median over renders (element-wise for lists and quantile tables)."""
    keys = results[0].keys()
    out: dict[str, object] = {}
    for key in keys:
        vals = [r.get(key) for r in results]
        if isinstance(vals[0], dict):
            out[key] = {
                r: [round(float(np.nanmedian([v[r][i] for v in vals])), 3) for i in range(3)] for r in vals[0]
            }
        elif isinstance(vals[0], list):
            out[key] = [
                None if vals[0][i] is None else round(float(np.median([v[i] for v in vals])), 3)
                for i in range(len(vals[0]))
            ]
        else:
            nums = [v for v in vals if v is not None]
            out[key] = round(float(np.median(nums)), 3) if nums else None
    return out


def scalars(m: dict[str, object]) -> dict[str, float]:
    """The scalar metrics of a result (ratios, widths, shares, CVs), for the distance."""
    return {k: float(v) for k, v in m.items() if isinstance(v, int | float) and not k.endswith("peak_um")}


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, dict):  # quantiles: the medians of interior / ring / background
        return "/".join(f"{q[1]:.2f}" for q in v.values())
    if isinstance(v, list):
        return " ".join("-" if x is None else f"{x:.2f}" for x in v)
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def print_table(name: str, columns: dict[str, dict[str, object]]) -> None:
    """One line per metric, one column per source."""
    keys: list[str] = []
    for col in columns.values():
        keys += [k for k in col if k not in keys]
    width = 26
    print(f"\n== {name} ==  quantiles: p50 of interior/ring/background; spectrum: variance shares in {BANDS_CYC_UM}")
    print(f"  {'metric':<30}" + "".join(f"{c:<{width}}" for c in columns))
    for key in keys:
        cells = "".join(f"{_fmt(col.get(key)):<{width}}" for col in columns.values())
        print(f"  {key.replace(':quantiles', ' p50 i/r/b'):<30}{cells}")


def distance(ours: dict[str, object], real: dict[str, object], keys: set[str]) -> float:
    """Mean |log(ours / real)| over ``keys`` (values floored at 0.01)."""
    a, b = scalars(ours), scalars(real)
    return float(np.mean([abs(math.log(max(a[k], 0.01) / max(b[k], 0.01))) for k in sorted(keys)]))


def main() -> None:
    """Render, measure, print the table and emit one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4, help="renders per dataset and kind")
    parser.add_argument("--before", default="3d8f854", help="git revision of the 'before' renderer")
    args = parser.parse_args()
    real = load_real()
    result: dict[str, object] = {"bench": "appearance", "before": args.before, "seeds": args.seeds}
    with tempfile.TemporaryDirectory(prefix="bench-appearance-") as tmp:
        folder = Path(tmp)
        after = folder / "after.npz"
        render_all(args.seeds, after)
        before = render_before(args.before, args.seeds, folder)
        dist: dict[str, list[float]] = {"before": [], "after": [], "after_all": []}
        tables = {}
        for name, (px, _) in DATASETS.items():
            channels, labels = real[name]
            cols = {"real": measure(channels, labels, px)}
            for tag, npz in (("before", before), ("after", after)):
                for kind in ("synth", "mask"):
                    cols[f"{tag}-{kind}"] = median_of(measure_renders(npz, name, kind, px))
            for kind in ("synth", "mask"):
                b_, a_, r_ = (scalars(cols[c]) for c in (f"before-{kind}", f"after-{kind}", "real"))
                common = set(b_) & set(a_) & set(r_)  # the before code has no MyHC channels
                dist["before"].append(distance(cols[f"before-{kind}"], cols["real"], common))
                dist["after"].append(distance(cols[f"after-{kind}"], cols["real"], common))
                dist["after_all"].append(distance(cols[f"after-{kind}"], cols["real"], set(a_) & set(r_)))
            print_table(name, cols)
            tables[name] = cols
    result["distance_before"] = round(float(np.mean(dist["before"])), 3)
    result["distance_after"] = round(float(np.mean(dist["after"])), 3)
    result["distance_after_all_metrics"] = round(float(np.mean(dist["after_all"])), 3)
    result.update(
        ratio=round(result["distance_after"] / result["distance_before"], 3),
        ratio_is="mean |log(ours/real)| over the scalar metrics before and after both have, after / before",
        target=1.0,
        tables=json.loads(json.dumps(tables, default=float)),
    )
    emit(result)


if __name__ == "__main__":
    main()
