"""Which precision the large products run in on this machine, chosen once per process by a short probe.

Bundling ranks tokens with a (V x d) @ (d x n) product per step. Where the processor has bfloat16
units (`amx_bf16` or `avx512_bf16` in /proc/cpuinfo) a bfloat16 product can run several times faster
than float32; the bound that keeps the bundles exact is in `metrics/bundling.py`. The probe times
both precisions on one product of the bundling shape class and takes bfloat16 only where it is at
least MIN_SPEEDUP faster, so a machine without such units runs float32 as before. The choice and
the timings go into results.json's provenance and the report. `MECHCLAIMS_PRODUCT_KERNEL` forces one.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from mechclaims.errors import MechclaimsError

KERNEL_ENV = "MECHCLAIMS_PRODUCT_KERNEL"
KERNELS = ("float32", "bfloat16")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
MIN_SPEEDUP = 1.3
PROBE_SHAPE = (4096, 512, 1024)
"""(rows, inner, columns) of the probe product: 4 GFLOP, about 0.03 s in float32 on 2 cores."""


@dataclass(frozen=True)
class ProductKernel:
    """The chosen precision, why, the probe's GFLOP/s per precision, and the CPU's bfloat16 flags."""

    name: str
    reason: str
    gflops: dict[str, float]
    cpu_flags: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "cpu_flags": list(self.cpu_flags)}


def cpu_bf16_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, ...]:
    """The bfloat16 flags the first processor lists (none where /proc/cpuinfo is absent)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return ()
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return tuple(flag for flag in BF16_FLAGS if flag in flags)


def product_gflops(dtype: torch.dtype, shape: tuple[int, int, int] = PROBE_SHAPE, rounds: int = 3) -> float:
    """GFLOP/s of one (rows x inner) @ (inner x columns) product in `dtype`, best of `rounds` after a warm-up."""
    rows, inner, columns = shape
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(rows, inner, generator=generator).to(dtype)
    b = torch.randn(inner, columns, generator=generator).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * rows * inner * columns / best / 1e9


def choose(forced: str | None, flags: tuple[str, ...]) -> ProductKernel:
    """The kernel for `forced` (a KERNEL_ENV value), else by the probe where the CPU has bfloat16 flags."""
    if forced:
        if forced not in KERNELS:
            raise MechclaimsError(f"{KERNEL_ENV}={forced!r} is not a product kernel: use {' or '.join(KERNELS)}")
        return ProductKernel(forced, f"{KERNEL_ENV}={forced}", {}, flags)
    if not flags:
        return ProductKernel("float32", "no bfloat16 units on this CPU", {}, flags)
    gflops = {"float32": product_gflops(torch.float32), "bfloat16": product_gflops(torch.bfloat16)}
    speedup = gflops["bfloat16"] / gflops["float32"]
    name = "bfloat16" if speedup >= MIN_SPEEDUP else "float32"
    return ProductKernel(name, f"probe: bfloat16 products at {speedup:.2f}x float32 (needs {MIN_SPEEDUP}x)",
                         {k: round(v, 1) for k, v in gflops.items()}, flags)


@functools.cache
def product_kernel() -> ProductKernel:
    """This process's choice (probed once)."""
    return choose(os.environ.get(KERNEL_ENV), cpu_bf16_flags())
