"""What every benchmark records beside its numbers: the product kernel, threads and versions (bench.json)."""

from __future__ import annotations

import importlib.metadata
from typing import Any, Iterator

import numba
import pytest
import torch

from mechclaims.kernels import product_kernel

VERSIONS = ("torch", "numpy", "numba", "faiss-cpu", "transformer-lens", "pytest-benchmark")


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    machine_info["mechclaims"] = {
        "product_kernel": product_kernel().to_json(),
        "torch_threads": torch.get_num_threads(),
        "numba_threads": numba.get_num_threads(),
        "versions": {name: importlib.metadata.version(name) for name in VERSIONS},
    }


@pytest.fixture(autouse=True)
def _record_kernel_and_threads(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    benchmark = request.node.funcargs.get("benchmark")
    if benchmark is not None:
        benchmark.extra_info.setdefault("kernel", product_kernel().name)
        benchmark.extra_info.setdefault("threads", torch.get_num_threads())
