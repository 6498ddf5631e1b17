"""Timing shared by the benchmarks: a result with the median seconds it took, measured in this process."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


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
