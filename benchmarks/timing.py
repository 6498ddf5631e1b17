"""Timing shared by the benchmarks: a result with the median seconds it took, measured in this process, and the
large matmuls every GFLOP/s is compared with."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Timed:
    """A result and the median seconds it took."""

    value: Any
    seconds: float


def timed(function: Callable[..., Any], *args: Any, rounds: int = 1, **kwargs: Any) -> Timed:
    """`function`'s result and its median seconds over `rounds` calls, timed in this process."""
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        value = function(*args, **kwargs)
        seconds.append(time.perf_counter() - start)
    return Timed(value, float(np.median(seconds)))


MATMUL = 4096


def matmul_operands(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded (4096 x 4096) factors a, b in `dtype` and an output buffer."""
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(MATMUL, MATMUL, generator=generator).to(dtype) for _ in range(2))
    return a, b, torch.empty(MATMUL, MATMUL, dtype=dtype)


def matmul_gflops() -> dict[str, float]:
    """The large matmul's GFLOP/s per precision ("float32", "bfloat16") in this process, median of 3 after a
    warm-up: the in-run yardstick for every GFLOP/s a benchmark records."""
    speeds = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b, out = matmul_operands(dtype)
        torch.mm(a, b, out=out)
        seconds = timed(torch.mm, a, b, out=out, rounds=3).seconds
        speeds[str(dtype).removeprefix("torch.")] = 2 * MATMUL**3 / seconds / 1e9
    return speeds
