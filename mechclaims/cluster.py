"""Claims over many models on a Dask distributed cluster: one task per model measures every claim asked of it (with
its nulls and sweeps, through the engine's `evaluate`) in a worker process and returns the engine's Results, which
the driver merges into one run, as a serial run would have recorded them.

- Where: `Cluster.connect(address)` joins a running scheduler (`dask scheduler`, and `dask worker ADDRESS
  --resources MEMORY=<bytes>` on each machine); `Cluster.connect(None)` starts LOCAL_WORKERS worker processes on
  loopback, each declaring an equal share of this machine's available memory.
- Memory: each task asks for `footprint.task_bytes` of the workers' MEMORY resource, so Dask never runs two models
  on one worker whose MEMORY cannot hold both. A model larger than every worker is an ERROR for each of its claims,
  not a task that waits forever. Workers that declare no MEMORY take tasks as they come (the run records that).
- Faults: a task whose worker dies (killed, out of memory) runs again on another worker: Dask reschedules it, up to
  its `distributed.scheduler.allowed-failures`. The scheduler counts the workers that died while they held a task
  (running it, or queued to), and `describe` gives each task's attempts: one more than those deaths. A task that
  fails as a whole is an ERROR for each of its claims. A model that fails to load is already one (the engine's).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from dataclasses import dataclass, replace
from typing import Any

import torch

from mechclaims.claim import Claim
from mechclaims.engine import Settings, evaluate
from mechclaims.errors import MechclaimsError
from mechclaims.memory import GIB, available_bytes
from mechclaims.models import specs
from mechclaims.models.footprint import task_bytes
from mechclaims.pool import ModelPool
from mechclaims.results import Result, model_entry

ADDRESS_ENV = "DASK_SCHEDULER_ADDRESS"
"""Dask's own variable for the scheduler's address, read when --cluster names none."""
LOCAL = "local"
LOCAL_WORKERS = 2
MEMORY = "MEMORY"
"""The worker resource tasks ask for, in bytes."""
CONNECT_SECONDS = 10
ADDRESS = re.compile(r"(?:(?:tcp|tls|inproc|ucx|ws|wss)://)?[\w.\-\[\]:]+:\d+")
INSTALL_HINT = "pip install 'mechclaims[cluster]' (Dask distributed)"


@dataclass(frozen=True)
class ModelRun:
    """What one model's task returns: its Results in the order its claims were given, the results.json entries of
    the models it loaded (the model and its model nulls), and the worker that ran it."""

    spec: str
    results: tuple[Result, ...]
    models: dict[str, dict[str, Any]]
    worker: str | None


def measure_model(spec: str, packed_claims: bytes, settings: Settings, threads: int | None) -> ModelRun:
    """The task: every claim on `spec`, in this worker. Claims travel cloudpickled with their claims modules by value,
    so claims folders need not be importable on the workers (mechclaims must be installed)."""
    import cloudpickle
    from distributed import get_worker

    if threads is not None:
        torch.set_num_threads(threads)
    claims: list[Claim] = cloudpickle.loads(packed_claims)
    results = tuple(evaluate(claim, spec, settings) for claim in claims)
    models = {model.name: model_entry(model) for model in settings.models.models.values()}
    return ModelRun(spec, results, models, get_worker().address)


def _deaths(keys: list[str], dask_scheduler: Any = None) -> dict[str, int]:
    """On the scheduler: how many workers died while they held each task (Dask's `suspicious` count)."""
    return {key: getattr(dask_scheduler.tasks.get(key), "suspicious", 0) for key in keys}


def _packed(claims: list[Claim]) -> bytes:
    """The claims cloudpickled, the functions of claims modules outside the package by value."""
    import cloudpickle

    outside = {claim.measure.__module__ for claim in claims} - {"__main__"}
    modules = [sys.modules[name] for name in sorted(outside)
               if name.split(".")[0] != "mechclaims" and name in sys.modules]
    for module in modules:
        cloudpickle.register_pickle_by_value(module)
    try:
        return cloudpickle.dumps(claims)
    finally:
        for module in modules:
            cloudpickle.unregister_pickle_by_value(module)


def check_address(address: str) -> str:
    """A scheduler address (`tcp://host:port` or `host:port`) or `local`; anything else is a one-line error."""
    if address != LOCAL and not ADDRESS.fullmatch(address):
        raise MechclaimsError(f"--cluster {address!r} is not a scheduler address: pass tcp://HOST:PORT (as `dask "
                              f"scheduler` prints it), or --cluster alone for a local cluster")
    return address


class Cluster:
    """A Dask client on a cluster, the tasks submitted to it (one per model), and what each gave."""

    def __init__(self, client: Any, local: Any | None, threads: int | None) -> None:
        self.client = client
        self.local = local
        self.threads = threads
        self.futures: dict[str, Any] = {}
        self.needs: dict[str, int] = {}
        self.refused: dict[str, str] = {}
        self.runs: dict[str, ModelRun] = {}
        self.attempts: dict[str, int] = {}
        self.errors: dict[str, str] = {}
        self.placed_by_memory = False

    @classmethod
    def connect(cls, address: str | None, workers: int = LOCAL_WORKERS) -> Cluster:
        """Join the scheduler at `address`, or start a local cluster of `workers` processes (None or `local`)."""
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise MechclaimsError(f"--cluster needs Dask distributed: {INSTALL_HINT}") from None
        if address not in (None, LOCAL):
            try:
                return cls(Client(address, timeout=CONNECT_SECONDS), None, None)
            except (OSError, TimeoutError) as exc:
                raise MechclaimsError(f"cannot reach the Dask scheduler at {address} ({type(exc).__name__}): start "
                                      "it with `dask scheduler` and workers with `dask worker ADDRESS --resources "
                                      "MEMORY=<bytes>`, or pass --cluster alone for a local cluster") from None
        free = available_bytes()
        local = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                             dashboard_address=None, silence_logs=logging.CRITICAL,
                             resources=None if free is None else {MEMORY: free // workers})
        return cls(Client(local), local, max(1, (os.cpu_count() or 1) // workers))

    def address(self) -> str:
        return str(self.client.scheduler.address)

    def _capacities(self) -> list[float]:
        workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
        return [worker["resources"][MEMORY] for worker in workers if MEMORY in (worker.get("resources") or {})]

    def submit(self, spec: str, claims: list[Claim], settings: Settings) -> None:
        """One task measuring `claims` on `spec` (with the run's thresholds, parameters, sweeps and cache; the driver
        compares baselines), asking for the memory the model needs."""
        need = self.needs[spec] = task_bytes(specs.parse(spec))
        capacities = self._capacities()
        self.placed_by_memory = bool(capacities)
        if capacities and need > max(capacities):
            self.refused[spec] = (f"{spec} needs about {need / GIB:.1f} GiB (estimated from its parameter count), more "
                                  f"than any worker offers ({max(capacities) / GIB:.1f} GiB of {MEMORY}): start a "
                                  f"worker with --resources {MEMORY}={need} or more")
            return
        task_settings = replace(settings, models=ModelPool(remember=settings.models.remember), baselines=None)
        self.futures[spec] = self.client.submit(
            measure_model, spec, _packed(claims), task_settings, self.threads, pure=False,
            key=f"mechclaims-model-{len(self.futures)}", resources={MEMORY: need} if capacities else None)

    def wait(self, spec: str) -> ModelRun | str:
        """The model's ModelRun once its task has finished, or why it gave none."""
        if spec in self.refused:
            return self.refused[spec]
        if spec not in self.runs and spec not in self.errors:
            future = self.futures[spec]
            try:
                self.runs[spec] = future.result()
            except Exception as exc:  # the task as a whole failed (e.g. it killed every worker it ran on)
                reason = " ".join(str(exc).split())[:300]
                self.errors[spec] = f"the cluster task measuring {spec} failed ({type(exc).__name__}: {reason})"
            self.attempts[spec] = 1 + self.client.run_on_scheduler(_deaths, [future.key])[future.key]
        return self.runs.get(spec) or self.errors[spec]

    def describe(self) -> dict[str, Any]:
        """The run's `cluster` block: where the tasks ran, each task's worker, attempts and memory."""
        import distributed

        tasks = {spec: {"worker": run.worker if (run := self.runs.get(spec)) else None,
                        "attempts": self.attempts.get(spec, 0), "memory_bytes": self.needs[spec],
                        "error": self.refused.get(spec) or self.errors.get(spec)} for spec in self.needs}
        return {"engine": f"dask.distributed {distributed.__version__}", "address": self.address(),
                "local": self.local is not None, "workers": len(self.client.scheduler_info(n_workers=-1)["workers"]),
                "placed_by_memory": self.placed_by_memory, "tasks": tasks,
                "retried": [spec for spec, task in tasks.items() if task["attempts"] > 1]}

    def close(self) -> None:
        self.client.close()
        if self.local is not None:
            self.local.close()
