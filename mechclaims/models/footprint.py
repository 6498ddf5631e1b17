"""The memory one model's claims need, estimated before the model loads from the parameter count in its files'
headers (safetensors and GGUF headers; no tensor is read), so that a scheduler can place models by memory.

    bytes = COPIES * 4 * parameters + ACTIVATIONS

float32 weights held about COPIES times at once (the bridge, its `random:` or Gaussian null, a compat copy with
folded norms, gradients of a position Jacobian) plus the forward passes' cached activations (`run`'s default
budget). A spec whose files cannot be counted (a planted control, a sorting run still to train, a hub name not
cached) gets UNCOUNTED parameters: the suite's own models are that small or smaller.
"""

from __future__ import annotations

import math
from pathlib import Path

from mechclaims.models import specs
from mechclaims.run import DEFAULT_MEMORY_BUDGET_BYTES

COPIES = 4
FLOAT32_BYTES = 4
ACTIVATIONS = DEFAULT_MEMORY_BUDGET_BYTES
UNCOUNTED = 10_000_000


def _safetensors_count(file: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(file), framework="np") as opened:
        return sum(math.prod(opened.get_slice(name).get_shape()) for name in opened.keys())


def _gguf_count(file: Path) -> int:
    from gguf import GGUFReader

    return sum(int(tensor.n_elements) for tensor in GGUFReader(file).tensors)


COUNTERS = {".safetensors": _safetensors_count, ".gguf": _gguf_count}


def parameter_count(spec: specs.Spec) -> int | None:
    """Elements over the tensors of the weight files the spec loads from (shards summed), or None where it cannot
    say or they hold none."""
    files = specs.sources(spec) if spec.kind != specs.AUTO else None
    return sum(COUNTERS[file.suffix](file) for file in files or () if file.suffix in COUNTERS) or None


def task_bytes(spec: specs.Spec) -> int:
    """The memory, in bytes, that measuring every claim on `spec` needs (the module docstring's estimate)."""
    return COPIES * FLOAT32_BYTES * (parameter_count(spec) or UNCOUNTED) + ACTIVATIONS
