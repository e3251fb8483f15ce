"""Hash every output of ``run`` on fixed inputs, to show that a change leaves results identical.

Makes the inputs once (two demo-sized synthetic sections and renders of the real
NCL-SM S11/S60 masks), runs ``nclsm-scale run`` on them for each block size and
prints one sha256 per output: the fibre labels and the region masks (every
pyramid level), each slide's fibre table and the slide table. Run it on two
checkouts and compare the lines. Only the command line is used, so the script
works across versions of the package:

- the block size is set with ``--set grid.block_px`` where the config has a
  ``grid`` section, else with ``--set segment.block_px``;
- the region mask is hashed as tissue 1 / fold 2, combining ``labels/folds``
  with ``labels/regions`` where folds have a label image of their own;
- tables are hashed by content (column names, dtypes and values in file order),
  not by file bytes, since the Parquet metadata holds the run's own paths.

    python bench/identity.py WORK_DIR [--block-sizes 512 1024] [--ncl-sm DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

DEFAULT_NCL_SM = Path(os.environ.get("NCLSM_DATA", "/work/shared/data/ncl-sm"))
CLI = [sys.executable, "-m", "nclsm_scale"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True)


def make_inputs(folder: Path, ncl_sm: Path) -> None:
    """Two 3072^2 synthetic sections at 0.5 um/px (seeds 0 and 1) and 1 um/px renders of S11 and S60."""
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [
        ("demo1", ["--size", "3072x3072", "--seed", "0", "--pixel-size", "0.5"]),
        ("demo2", ["--size", "3072x3072", "--seed", "1", "--pixel-size", "0.5"]),
        ("S11", ["--from-mask", str(ncl_sm / "S11_fibres.tiff"), "--mask-pixel-size", "0.25",
                 "--pixel-size", "1.0", "--seed", "2"]),
        ("S60", ["--from-mask", str(ncl_sm / "S60_fibres.tiff"), "--mask-pixel-size", "0.25",
                 "--pixel-size", "1.0", "--seed", "3"]),
    ]
    for name, args in jobs:
        out = folder / f"{name}.ome.tiff"
        if not out.is_file():
            res = _cli("synth", str(out), *args)
            if res.returncode:
                raise SystemExit(f"synth {name} failed:\n{res.stderr}")


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.hexdigest()[:16]


def _array_hash(arr: np.ndarray) -> str:
    return _digest(str(arr.dtype).encode(), str(arr.shape).encode(), np.ascontiguousarray(arr).tobytes())


def table_hash(path: Path) -> str:
    """sha256 of a table's column names, dtypes and values (in file order)."""
    df = pd.read_parquet(path)
    parts = [",".join(df.columns).encode(), ",".join(str(t) for t in df.dtypes).encode()]
    parts += [pd.util.hash_pandas_object(df[c], index=False).to_numpy().tobytes() for c in df.columns]
    return _digest(*parts)


def _levels(store: Path, name: str) -> list[np.ndarray]:
    group = zarr.open_group(str(store / "labels" / name), mode="r")
    paths = [d["path"] for d in group.attrs["ome"]["multiscales"][0]["datasets"]]
    return [np.asarray(zarr.open_array(str(store / "labels" / name / p), mode="r")) for p in paths]


def slide_hashes(store: Path) -> dict[str, str]:
    """Hashes of the fibre labels and the tissue/fold regions, every level."""
    out = {}
    for i, arr in enumerate(_levels(store, "fibres")):
        out[f"labels/fibres/{i}"] = _array_hash(arr)
    regions = _levels(store, "regions")
    folds = _levels(store, "folds") if (store / "labels" / "folds").is_dir() else [None] * len(regions)
    for i, (reg, fold) in enumerate(zip(regions, folds, strict=True)):
        combined = reg if fold is None else np.where(fold > 0, 2, reg).astype(reg.dtype)
        out[f"labels/regions/{i}"] = _array_hash(combined)
    return out


def run_hashes(run_dir: Path) -> dict[str, str]:
    """Every hashed output of one run directory."""
    out = {}
    for store in sorted((run_dir / "slides").glob("*.ome.zarr")):
        name = store.name.removesuffix(".ome.zarr")
        out.update({f"{name} {k}": v for k, v in slide_hashes(store).items()})
        out[f"{name} tables/fibres"] = table_hash(run_dir / "tables" / "fibres" / f"{name}.parquet")
    out["tables/slides"] = table_hash(run_dir / "tables" / "slides.parquet")
    return out


def block_key() -> str:
    """``grid.block_px`` where the config has a grid section, else ``segment.block_px``."""
    return "grid.block_px" if _cli("config", "grid").returncode == 0 else "segment.block_px"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", type=Path, help="Folder for the inputs and the runs.")
    ap.add_argument("--block-sizes", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--ncl-sm", type=Path, default=DEFAULT_NCL_SM)
    args = ap.parse_args()
    inputs = args.work / "inputs"
    make_inputs(inputs, args.ncl_sm)
    key = block_key()
    for block in args.block_sizes:
        run_dir = args.work / f"run-{block}"
        res = _cli("run", str(inputs), "--out", str(run_dir), "--set", f"{key}={block}")
        if res.returncode:
            raise SystemExit(f"run with {key}={block} failed:\n{res.stdout}\n{res.stderr}")
        for name, digest in run_hashes(run_dir).items():
            print(f"block {block} {name} {digest}", flush=True)


if __name__ == "__main__":
    main()
