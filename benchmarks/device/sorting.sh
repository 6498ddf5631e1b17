#!/usr/bin/env bash
# Train the `paper` and `paper-wd0` sorting families (seeds 0-4, each family one batched model) on a GPU and print
# each family's wall time and each run's held-out accuracy, settled step and mode at every checkpoint.
#
#   bash benchmarks/device/sorting.sh                          # fresh machine: a venv, the GPU's torch, the suite
#   STEPS=20 DEVICE=cpu SKIP_INSTALL=1 bash benchmarks/device/sorting.sh   # a quick check with the python on PATH
#
# STEPS cuts every run to that many steps (checkpoints every min(checkpoint_every, STEPS) steps); DEVICE is the torch
# device (cuda); SKIP_INSTALL=1 uses the python on PATH as it is (no venv, no pip).
set -euo pipefail
cd "$(dirname "$0")/../.."

if [[ -z "${SKIP_INSTALL:-}" ]]; then
    venv="$(mktemp -d)/venv"
    python3 -m venv --system-site-packages "$venv"  # sees a torch the machine already has
    . "$venv/bin/activate"
    python -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null || pip install --quiet torch
    pip install --quiet -e .
fi

python - <<'PY'
"""Each family trained into a temporary folder, then its wall time and each run's record."""

from __future__ import annotations

import dataclasses
import itertools
import os
import tempfile
import time
from pathlib import Path

import torch

from mechclaims.training.sorting import CheckpointMode, load_config, read_record, train_family

NAMES, SEEDS = ("paper", "paper-wd0"), range(5)
steps, device = os.environ.get("STEPS"), os.environ.get("DEVICE", "cuda")


def modes(checkpoints: list[CheckpointMode]) -> str:
    """The mode at each checkpoint, consecutive equal modes as one step range: "500-1500 none, 2000 overlapping"."""
    spans = []
    for mode, group in itertools.groupby(checkpoints, key=lambda c: c.mode):
        run = [c.step for c in group]
        spans.append(f"{run[0]}{'' if len(run) == 1 else f'-{run[-1]}'} {mode}")
    return ", ".join(spans)


where = torch.cuda.get_device_name() if device.startswith("cuda") else device
print(f"torch {torch.__version__} on {where}")
with tempfile.TemporaryDirectory() as root:
    for name in NAMES:
        configs = [load_config(name, seed) for seed in SEEDS]
        if steps:
            configs = [dataclasses.replace(c, steps=int(steps), checkpoint_every=min(c.checkpoint_every, int(steps)))
                       for c in configs]
        folders = [Path(root) / name / f"seed{c.seed}" for c in configs]
        start = time.perf_counter()
        train_family(list(zip(configs, folders)), progress=False, device=device)
        print(f"{name}: {len(configs)} runs x {configs[0].steps} steps (weight_decay {configs[0].weight_decay}) in "
              f"{time.perf_counter() - start:.1f} s", flush=True)
        for config, folder in zip(configs, folders):
            record = read_record(folder)
            print(f"  seed {config.seed}: held-out accuracy {record.held_out_accuracy:.4f}, settled step "
                  f"{record.settled_step}, modes {modes(record.checkpoints)}", flush=True)
PY
