"""evaluate(claim, subject, settings) -> Result: load, check applicability, measure (cached) the model
and its null, decide, sweep, compare with the baseline. No pytest: the plugin, the CLI, notebooks and
any other runner call this one function.

    >>> import mechclaims
    >>> result = mechclaims.evaluate("knittel2024.embed_raw_orthogonal", "minilm-l6")
    >>> result.verdict, result.statistic, result.null_statistic
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mechclaims.baselines import Baselines
from mechclaims.cache import MeasurementCache, cache_key
from mechclaims.catalogue import DEFAULT_DIR, find_claim
from mechclaims.claim import Claim, Grid, Verdict, not_applicable
from mechclaims.datasets import load_dataset
from mechclaims.errors import MechclaimsError, NotApplicable
from mechclaims.measurement import Measurement
from mechclaims.models import Model
from mechclaims.models.family import Family
from mechclaims.nulls import MeasurementNull, ModelNull, WeightNull
from mechclaims.pool import ModelPool
from mechclaims.results import Result, model_recipe
from mechclaims.sweeps import sweeps_for


@dataclass
class Settings:
    """What a run sets beyond the claims' own data: threshold values (claim -> value), parameters
    (claim -> {name: value}), sweeps (claim -> grid; claim -> (parameter, grid)), the measurement
    cache, the models loaded so far, the baselines to compare with, and where claims modules live."""

    thresholds: dict[str, float] = field(default_factory=dict)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    sweeps: dict[str, Grid] = field(default_factory=dict)
    param_sweeps: dict[str, tuple[str, Grid]] = field(default_factory=dict)
    cache: MeasurementCache = field(default_factory=MeasurementCache)
    models: ModelPool = field(default_factory=ModelPool)
    baselines: Baselines | None = None
    claims_dir: Path = DEFAULT_DIR


def configured(claim: Claim, settings: Settings) -> tuple[Claim, bool]:
    """The claim with this run's --param and --threshold applied, and whether its threshold was overridden."""
    overrides = settings.params.get(claim.id)
    if overrides:
        claim = claim.with_params(overrides)
    if claim.id in settings.thresholds:
        return replace(claim, threshold=replace(claim.threshold, value=settings.thresholds[claim.id])), True
    return claim, False


def _measure(settings: Settings, claim: Claim, source: Any, fingerprint: str, role: str, inputs: Any,
             more: dict[str, Any] | None = None) -> tuple[Measurement, bool]:
    """(measurement, served from the cache); `more` are parameters a measurement null sets."""
    params = {**claim.params, **(more or {})}
    key = cache_key(fingerprint, claim.measure, params, role, source, _fingerprint_of(inputs))
    cached = settings.cache.get(key)
    if cached is not None:
        return cached, True
    measurement = claim.measure(source, **params, **({} if inputs is None else {"inputs": inputs}))
    settings.cache.put(key, measurement)
    return measurement, False


def _fingerprint_of(inputs: Any) -> str | None:
    """The data set's fingerprint; several data sets' joined in order."""
    if inputs is None:
        return None
    return "+".join(one.fingerprint for one in inputs) if isinstance(inputs, tuple) else inputs.fingerprint


def _load_inputs(claim: Claim) -> Any:
    """The claim's data set, or a tuple of them when it reads several; None without inputs."""
    loaded = tuple(load_dataset(one.dataset, **one.options) for one in claim.input_list)
    if not loaded:
        return None
    return loaded if isinstance(claim.inputs, tuple) else loaded[0]


def _null(settings: Settings, claim: Claim, model: Model, inputs: Any) -> Measurement | None:
    """The claim's null measurement: weight, model or measurement null (nulls.py)."""
    null = claim.null_baseline
    if null is None:
        return None
    if isinstance(null, WeightNull):
        source: Any = settings.models.weight_null(model, null)
    elif isinstance(null, ModelNull):
        source = settings.models.get(null.spec_of(model.name))
    else:
        source = model
    more = {null.param: null.value} if isinstance(null, MeasurementNull) else None
    return _measure(settings, claim, source, model.fingerprint, null.role, inputs, more)[0]


def _measured(settings: Settings, claim: Claim, model: Model, base: dict[str, Any]) -> Result:
    inputs = _load_inputs(claim)
    real, hit = _measure(settings, claim, model, model.fingerprint, "real", inputs)
    gated = claim.not_met(real)
    if gated:
        return Result(verdict=Verdict.NA, reason=gated, cache_hit=hit, measurement=real, **base)
    null = _null(settings, claim, model, inputs)
    threshold = claim.threshold
    sweep, grid_sweep = sweeps_for(threshold, real, null, claim.trivial_if_null_passes, settings.sweeps.get(claim.id),
                                   settings.param_sweeps.get(claim.id))
    verdict, statistic, null_statistic = claim.decide(real, null)
    return Result(verdict=verdict, statistic=statistic, null_statistic=null_statistic,
                  interval=threshold.interval_of(real), null_interval=threshold.interval_of(null), cache_hit=hit,
                  measurement=real, null=null, sweep=sweep, param_sweep=grid_sweep, **base)


def _configured_base(claim: Claim, settings: Settings) -> tuple[Claim, dict[str, Any]]:
    """The configured claim and the Result fields it sets: its id, threshold and parameters, and what this run
    overrode."""
    claim, overridden = configured(claim, settings)
    return claim, {"claim": claim.id, "threshold": claim.threshold, "params": claim.params,
                   "threshold_overridden": overridden,
                   "params_overridden": tuple(sorted(settings.params.get(claim.id, {})))}


def unmeasured(claim: Claim, spec: str, settings: Settings, reason: str) -> Result:
    """The ERROR Result of a claim on `spec` that no measurement answered (e.g. a cluster task that failed)."""
    return Result(model=spec, verdict=Verdict.ERROR, reason=reason, **_configured_base(claim, settings)[1])


def evaluate(claim: Claim | str, subject: str | Model | Family, settings: Settings | None = None) -> Result:
    """The claim's Result on the subject (a model spec, or a Model or Family already loaded). A model that cannot
    load, a claim that does not apply, and a measurement that fails are Results (ERROR, N/A), not raised;
    an unknown claim id or a bad --param is a MechclaimsError."""
    settings = settings or Settings()
    if isinstance(claim, str):
        claim = find_claim(claim, settings.claims_dir)
    claim, base = _configured_base(claim, settings)
    spec = subject if isinstance(subject, str) else subject.name
    started = time.perf_counter()
    if isinstance(subject, str):
        null = claim.null_baseline
        settings.models.prepare([spec, *([null.spec_of(spec)] if isinstance(null, ModelNull) else [])])
    try:
        model = settings.models.get(spec) if isinstance(subject, str) else settings.models.add(subject)
    except NotApplicable as exc:
        return Result(model=spec, verdict=Verdict.NA, reason=str(exc), **base)
    except MechclaimsError as exc:
        return Result(model=spec, verdict=Verdict.ERROR, reason=str(exc), **base)
    base["model"] = model.name
    reason = not_applicable(claim, model.capabilities)
    if reason:
        result = Result(verdict=Verdict.NA, reason=reason, **base)
    else:
        try:
            result = _measured(settings, claim, model, base)
        except NotApplicable as exc:
            result = Result(verdict=Verdict.NA, reason=str(exc), **base)
        except MechclaimsError as exc:
            result = Result(verdict=Verdict.ERROR, reason=str(exc), **base)
        except Exception as exc:  # recorded, not raised: one broken claim must not lose the run's other results
            result = Result(verdict=Verdict.ERROR, reason=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc(),
                            **base)
    result = replace(result, seconds=time.perf_counter() - started)
    if settings.baselines is not None:
        result = replace(result, baseline=settings.baselines.compare(result, model.fingerprint, claim.tolerance,
                                                                     model_recipe(model.name)))
    return result
