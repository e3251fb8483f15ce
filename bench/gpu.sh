#!/usr/bin/env bash
# One GPU check (issue 17), under 8 minutes on a machine with a CUDA GPU; installs nothing.
#
#   bash bench/gpu.sh            # from the repository root, in the project venv with a CUDA torch
#   PYTHON=/path/to/python bash bench/gpu.sh
#
# 1. nvidia-smi -L;
# 2. pytest -m gpu: the tests marked gpu (CUDA maps independent of the region; segmentation with the
#    network on the device in Dask workers, bit-identical labels across block sizes and = one block);
# 3. bench/infer.py --device cuda: the engine's Mpx/s on the device (bench/results/infer.json);
# 4. bench/chain.py --size 4096 --device cuda: the CPU chain after the network, Mpx/s per core per
#    stage, and the CPU cores needed to keep the device busy (bench/results/chain-gpu.json).
# Without a CUDA device it prints one line and exits 2.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1 \
   || ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "bench/gpu.sh: no CUDA device (nvidia-smi or torch.cuda.is_available() says no); nothing run" >&2
  exit 2
fi

nvidia-smi -L
"$PYTHON" -c 'import torch; print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")'
start=$SECONDS

echo "== pytest -m gpu"
timeout 150 "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider tests

echo "== bench/infer.py --device cuda"
timeout 90 "$PYTHON" bench/infer.py --device cuda > /dev/null

echo "== bench/chain.py --size 4096 --device cuda"
timeout 220 "$PYTHON" bench/chain.py --size 4096 --device cuda --name chain-gpu > /dev/null

"$PYTHON" - <<'PY'
import json
from pathlib import Path

r = Path("bench/results")
inf = json.loads((r / "infer.json").read_text())
ch = json.loads((r / "chain-gpu.json").read_text())
print(f"network on {inf['device']} ({inf['path']}): engine {inf['engine_mpx_per_s']:.1f} Mpx/s, "
      f"bare forward {inf['bare_forward_mpx_per_s']:.1f} Mpx/s, engine/bare {inf['ratio']:.3f}")
per = ", ".join(f"{k} {v:.3f}" for k, v in ch["mpx_per_s_per_core"].items())
print(f"chain {ch['size_px']}² on {ch['cores']} cores, Mpx/s per core: {per}; "
      f"overall {ch['overall_mpx_per_s_per_core']:.3f}")
print(f"network in the chain run: {ch['network_mpx_per_s']:.1f} Mpx/s on {ch['network_device']} "
      f"({ch['network_path']}) -> CPU cores needed to keep it busy: {ch['cores_to_feed_network']:.1f}")
PY
echo "bench/gpu.sh: done in $((SECONDS - start)) s"
