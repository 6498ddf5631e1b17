"""The run's state (`config.stash[SESSION]`): the engine's Settings built from the options, the models
once `auto` is resolved, and each (claim, model)'s Result, evaluated once per run (in this process, or by a
cluster task) and shared by the claim's item and its regression item."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import pytest
import torch

from mechclaims.baselines import Baselines, new_finding
from mechclaims.cache import MeasurementCache
from mechclaims.claim import Claim, Verdict
from mechclaims.engine import Settings, evaluate
from mechclaims.models import resolve_auto
from mechclaims.pool import ModelPool
from mechclaims.plugin.options import OPTIONS, Options
from mechclaims.results import Finding, Result


@dataclass
class Session:
    options: Options
    settings: Settings
    models: list[str]
    auto_note: str | None = None
    resolved_from: dict[str, str] = field(default_factory=dict)
    results: dict[tuple[str, str], Result] = field(default_factory=dict)
    claims: dict[str, Claim] = field(default_factory=dict)
    evaluator: Callable[[Claim, str, Settings], Result] = evaluate
    """In this process by default; the cluster plugin puts its tasks' results here instead."""
    model_entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    """results.json entries of models loaded elsewhere (by cluster tasks), by name."""

    @classmethod
    def start(cls, options: Options) -> Session:
        compare = options.baseline_dir is not None and not options.update_baselines
        settings = Settings(
            thresholds=options.thresholds, params=options.params, sweeps=options.sweeps,
            param_sweeps=options.param_sweeps,
            cache=MeasurementCache(options.cache_dir, enabled=not options.no_cache),
            baselines=Baselines(options.baseline_dir) if compare else None,
            models=ModelPool(remember=not options.no_cache),
        )
        return cls(options=options, settings=settings, models=list(options.models))

    def resolve_auto(self) -> None:
        """Replace `auto` by the model it stands for, once, when claims are collected."""
        if "auto" not in self.models:
            return
        target = resolve_auto()
        self.auto_note = f"--model auto resolved to {target}" + (
            "" if target == "gpt2" else " (gpt2 is not in the Hugging Face cache and the hub did not answer)"
        )
        self.models = list(dict.fromkeys(target if spec == "auto" else spec for spec in self.models))
        self.resolved_from[target] = "auto"

    def checks_regressions(self, spec: str) -> bool:
        """Whether this run compares `spec` with a recorded baseline (one regression item per claim)."""
        return self.settings.baselines is not None and self.settings.baselines.has(spec)

    def judge(self, claim: Claim, spec: str) -> Finding | None:
        """The Result's finding against its model's baseline (`Baselines.finding`; a failure is FAIL, or TRIVIAL under
        --strict-null, and every failure is new where no baselines are compared), kept with the Result for
        results.json and the report."""
        result = self.results[claim.id, spec]
        strict = self.options.strict_null
        fails = result.verdict is Verdict.FAIL or (result.verdict is Verdict.TRIVIAL and strict)
        baselines = self.settings.baselines
        if baselines is not None:
            finding = baselines.finding(result, fails, strict)
        else:
            finding = new_finding(result, None) if fails else None
        self.results[claim.id, spec] = replace(result, finding=finding)
        return finding

    def result(self, claim: Claim, spec: str) -> Result:
        """The claim's Result on `spec`, evaluated on first request."""
        if (claim.id, spec) not in self.results:
            self.claims.setdefault(claim.id, claim)
            self.results[claim.id, spec] = self.evaluator(claim, spec, self.settings)
        return self.results[claim.id, spec]


SESSION = pytest.StashKey[Session]()


def pytest_configure(config: pytest.Config) -> None:
    """After the options (tryfirst there): the session; pytest-xdist workers split the CPU threads."""
    config.addinivalue_line("markers", "regression: a claim's result compared with its recorded baseline")
    if not config.pluginmanager.hasplugin("xdist"):
        config.addinivalue_line("markers", "xdist_group(name): pytest-xdist's grouping (here, one group per model)")
    if hasattr(config, "workeroutput"):
        workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    config.stash[SESSION] = Session.start(config.stash[OPTIONS])


def pytest_unconfigure(config: pytest.Config) -> None:
    if SESSION in config.stash:
        del config.stash[SESSION]

