"""The pytest plugin: options, one test item per (claim, model), and the reporter.

A claims module declares `CLAIMS = [Claim(...), ...]`; this plugin turns that list into items
named `<claim-id>[<model>]` that all run the same generic test, `_run_claim`.
"""

from __future__ import annotations

import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

import pytest

from mechclaims.cache import MeasurementCache, cache_key, default_cache_dir
from mechclaims.errors import MechclaimsError
from mechclaims.models import GaussianNull, Model, check_spec, load_model, resolve_auto
from mechclaims.registry import (
    Claim,
    NULLS,
    Measurement,
    Threshold,
    Verdict,
    decide,
    not_applicable,
    parse_assignment,
    parse_number,
    parse_sweep,
)
from mechclaims.results import RunRecord, claim_json, measurement_json, threshold_json

NULL_SEED = 0


@dataclass
class Options:
    """Parsed mechclaims command-line options (validated before any model loads)."""

    models: list[str]
    thresholds: dict[str, float]
    sweeps: dict[str, tuple[float, float, float]]
    report_dir: Path
    strict_null: bool
    cache: MeasurementCache
    auto_note: str | None = None
    resolved_from: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: pytest.Config) -> Options:
        models = [*(config.getoption("mechclaims_models") or []),
                  *read_models_file(config.getoption("mechclaims_models_file"))] or ["auto"]
        for spec in models:
            check_spec(spec, probe_hub=False)
        thresholds = {}
        for text in config.getoption("mechclaims_thresholds") or []:
            claim, value = parse_assignment(text, "--threshold")
            thresholds[claim] = parse_number(value, f"--threshold {claim}")
        sweeps = dict(parse_sweep(text) for text in config.getoption("mechclaims_sweeps") or [])
        cache_dir = config.getoption("mechclaims_cache_dir") or default_cache_dir()
        return cls(
            models=list(dict.fromkeys(models)),
            thresholds=thresholds,
            sweeps=sweeps,
            report_dir=Path(config.getoption("mechclaims_report_dir")),
            strict_null=bool(config.getoption("mechclaims_strict_null")),
            cache=MeasurementCache(Path(cache_dir), enabled=not config.getoption("mechclaims_no_cache")),
        )

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


def read_models_file(path: str | None) -> list[str]:
    """Model specs from a file, one per line; blank lines and `#` comments are skipped."""
    if path is None:
        return []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise MechclaimsError(f"--models-file {path} cannot be read ({exc}): pass a text file with one spec per line") from None
    specs = [line.split("#", 1)[0].strip() for line in lines]
    if not any(specs):
        raise MechclaimsError(f"--models-file {path} names no model: write one spec per line")
    return [spec for spec in specs if spec]


@dataclass
class ModelPool:
    """Models loaded once per session, by spec; a failed load is remembered, not retried."""

    models: dict[str, Model] = field(default_factory=dict)
    nulls: dict[str, GaussianNull] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    def get(self, spec: str) -> Model:
        if spec in self.failures:
            raise MechclaimsError(self.failures[spec])
        if spec not in self.models:
            try:
                self.models[spec] = load_model(spec)
            except MechclaimsError as exc:
                self.failures[spec] = str(exc)
                raise
        return self.models[spec]

    def null(self, spec: str, kind: str) -> GaussianNull:
        """The named null (registry.NULLS) of a loaded model, built once."""
        key = f"{kind}:{spec}"
        if key not in self.nulls:
            self.nulls[key] = GaussianNull(self.get(spec), NULL_SEED, NULLS[kind])
        return self.nulls[key]


RESULT_DEFAULTS: dict[str, Any] = dict.fromkeys(
    ("reason", "statistic", "null_statistic", "interval", "null_interval", "seconds", "cache_hit", "measurement", "null",
     "sweep")
)


class Reporter:
    """Collects one record per (claim, model) and writes results.json and report.html at the end."""

    def __init__(self, options: Options, argv: list[str]) -> None:
        self.options = options
        self.record = RunRecord(argv=argv)

    def add_model(self, model: Model) -> None:
        self.record.models[model.name] = {
            "resolved_from": model.resolved_from or self.options.resolved_from.get(model.name),
            "fingerprint": model.fingerprint,
            "capabilities": model.capabilities.to_json(),
        }

    def add(self, claim: Claim, model_name: str, **result: Any) -> None:
        """One result row; every row has every schema key (None where it does not apply)."""
        self.record.claims.setdefault(claim.id, claim_json(claim))
        self.record.results.append({"model": model_name, "claim": claim.id, **RESULT_DEFAULTS, **result})

    def write(self) -> tuple[Path, Path] | None:
        if not self.record.results:
            return None
        results_path = self.options.report_dir / "results.json"
        report_path = self.options.report_dir / "report.html"
        data = self.record.write(results_path)
        from mechclaims.report import render_report

        render_report(data, report_path)
        return results_path, report_path

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.paths = self.write()

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.options.auto_note:
            terminalreporter.write_line(f"mechclaims: {self.options.auto_note}")
        paths = getattr(self, "paths", None)
        if paths:
            terminalreporter.write_line(f"mechclaims: wrote {paths[0]} and {paths[1]}")


REPORTER = pytest.StashKey[Reporter]()
POOL = pytest.StashKey[ModelPool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mechclaims", "mechanistic-interpretability claims")
    group.addoption("--model", action="append", dest="mechclaims_models", metavar="SPEC",
                    help="model spec (repeatable): a Hugging Face name, a checkpoint folder, smollm2-135m, "
                         "minilm-l6, random:<spec>, or auto (default)")
    group.addoption("--models-file", dest="mechclaims_models_file", default=None, metavar="FILE",
                    help="a file of model specs, one per line (# comments), added to --model")
    group.addoption("--threshold", action="append", dest="mechclaims_thresholds", metavar="CLAIM=VALUE",
                    help="override a claim's threshold value (repeatable)")
    group.addoption("--sweep", action="append", dest="mechclaims_sweeps", metavar="CLAIM=START:STOP:STEP",
                    help="evaluate a claim over a grid of thresholds (repeatable)")
    group.addoption("--report-dir", dest="mechclaims_report_dir", default="reports", metavar="DIR",
                    help="where results.json and report.html are written (default: reports)")
    group.addoption("--strict-null", action="store_true", dest="mechclaims_strict_null",
                    help="fail a claim whose null baseline also passes (TRIVIAL)")
    group.addoption("--no-cache", action="store_true", dest="mechclaims_no_cache",
                    help="measure everything afresh and write nothing to the measurement cache")
    group.addoption("--cache-dir", dest="mechclaims_cache_dir", default=None, metavar="DIR",
                    help="measurement cache directory (default: the user cache dir or $MECHCLAIMS_CACHE_DIR)")


def pytest_configure(config: pytest.Config) -> None:
    try:
        options = Options.from_config(config)
    except MechclaimsError as exc:
        raise pytest.UsageError(str(exc)) from None
    reporter = Reporter(options, sys.argv[1:])
    config.stash[REPORTER] = reporter
    config.stash[POOL] = ModelPool()
    config.pluginmanager.register(reporter, "mechclaims-reporter")


def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> list[pytest.Item] | None:
    """`CLAIMS` in a claims module becomes one item per claim and model: `<claim-id>[<model>]`."""
    if name != "CLAIMS" or not isinstance(collector, pytest.Module):
        return None
    claims = list(obj)  # type: ignore[call-overload]
    if not all(isinstance(c, Claim) for c in claims):
        return None
    options = collector.config.stash[REPORTER].options
    options.resolve_auto()
    items = []
    for spec in options.models:
        for claim in claims:
            item = pytest.Function.from_parent(collector, name=f"{claim.id}[{spec}]", callobj=_run_claim)
            item.stash[CLAIM_KEY] = (claim, spec)
            items.append(item)
    return items


CLAIM_KEY = pytest.StashKey[tuple[Claim, str]]()


def pytest_collection_finish(session: pytest.Session) -> None:
    options = session.config.stash[REPORTER].options
    known = {item.stash[CLAIM_KEY][0].id for item in session.items if CLAIM_KEY in item.stash}
    if not known:
        return
    for option, names in (("--threshold", options.thresholds), ("--sweep", options.sweeps)):
        unknown = sorted(set(names) - known)
        if unknown:
            raise pytest.UsageError(f"{option} names unknown claim {unknown[0]!r}: choose from {', '.join(sorted(known))}")


@pytest.fixture(scope="session")
def mechclaims_models(request: pytest.FixtureRequest) -> ModelPool:
    """The session's loaded models (each spec loads once)."""
    return request.config.stash[POOL]


def _measure(options: Options, claim: Claim, source: Any, fingerprint: str, role: str) -> tuple[Measurement, bool]:
    key = cache_key(fingerprint, claim.measure, claim.params, role)
    cached = options.cache.get(key)
    if cached is not None:
        return cached, True
    measurement = claim.measure(source, **claim.params)
    options.cache.put(key, measurement)
    return measurement, False


def _sweep(claim: Claim, threshold: Threshold, grid: Any, real: Measurement, null: Measurement | None) -> dict[str, Any]:
    """The verdict at every grid point: over `at` for fraction statistics, over `value` otherwise."""
    points = []
    for x in grid:
        moved = threshold.moved_to(float(x))
        verdict, statistic, null_statistic = decide(claim, real, null, moved)
        points.append({"x": float(x), "statistic": statistic, "null_statistic": null_statistic, "verdict": verdict.value,
                       "interval": moved.interval_of(real), "null_interval": moved.interval_of(null)})
    return {"axis": "at" if threshold.at is not None else "value", "points": points}


def _record_error(reporter: Reporter, claim: Claim, model_name: str, error: str, base: dict[str, Any]) -> NoReturn:
    """An ERROR verdict: recorded for the report, and a one-line test failure without traceback."""
    reporter.add(claim, model_name, verdict=Verdict.ERROR.value, reason=error, **base)
    pytest.fail(error, pytrace=False)


def _measure_with_null(options: Options, claim: Claim, pool: ModelPool, spec: str) -> tuple[Measurement, Measurement | None, bool] | str:
    """(real, null, real served from cache), or the one-line error that stopped the measurement."""
    model = pool.get(spec)
    try:
        real, real_hit = _measure(options, claim, model, model.fingerprint, "real")
        null = None
        if claim.null is not None:
            null, _ = _measure(options, claim, pool.null(spec, claim.null), model.fingerprint, f"{claim.null}:{NULL_SEED}")
    except MechclaimsError as exc:
        return str(exc)
    return real, null, real_hit


def _run_claim(request: pytest.FixtureRequest, mechclaims_models: ModelPool) -> None:
    """The generic claim test: load, check applicability, measure (cached), threshold, record."""
    claim, spec = request.node.stash[CLAIM_KEY]
    reporter = request.config.stash[REPORTER]
    options = reporter.options
    overridden = claim.id in options.thresholds
    threshold = replace(claim.threshold, value=options.thresholds[claim.id]) if overridden else claim.threshold
    base = {"params": claim.params, "threshold": threshold_json(threshold, overridden)}
    started = time.perf_counter()
    try:
        model = mechclaims_models.get(spec)
    except MechclaimsError as exc:
        model, error = None, str(exc)
    if model is None:
        _record_error(reporter, claim, spec, error, base)
    reporter.add_model(model)
    reason = not_applicable(claim, model.capabilities)
    if reason:
        reporter.add(claim, model.name, verdict=Verdict.NA.value, reason=reason, **base)
        pytest.skip(f"N/A: {reason}")
    try:
        measured = _measure_with_null(options, claim, mechclaims_models, spec)
    except Exception as exc:
        reporter.add(claim, model.name, verdict=Verdict.ERROR.value, reason=f"{type(exc).__name__}: {exc}",
                     traceback=traceback.format_exc(), **base)
        raise
    if isinstance(measured, str):
        _record_error(reporter, claim, model.name, measured, base)
    real, null, real_hit = measured
    verdict, statistic, null_statistic = decide(claim, real, null, threshold)
    grid_override = options.sweeps.get(claim.id)
    sweep = _sweep(claim, threshold, threshold.sweep_grid(grid_override), real, null) if (
        grid_override or threshold.sweep) else None
    reporter.add(
        claim, model.name, verdict=verdict.value, statistic=statistic, null_statistic=null_statistic,
        interval=threshold.interval_of(real), null_interval=threshold.interval_of(null),
        seconds=time.perf_counter() - started, cache_hit=real_hit, measurement=measurement_json(real),
        null=measurement_json(null), sweep=sweep, **base,
    )
    for key, value in (("verdict", verdict.value), ("statistic", statistic), ("null_statistic", null_statistic),
                       ("threshold", threshold.describe()), ("origin", threshold.origin)):
        request.node.user_properties.append((key, value))
    summary = (f"{claim.id} on {model.name}: {threshold.statistic} = {statistic:.4g}, threshold "
               f"{threshold.describe()} ({threshold.origin}); null = "
               f"{'n/a' if null_statistic is None else f'{null_statistic:.4g}'}")
    if verdict is Verdict.FAIL:
        pytest.fail(f"FAIL {summary}", pytrace=False)
    if verdict is Verdict.TRIVIAL and options.strict_null:
        pytest.fail(f"TRIVIAL (--strict-null) {summary}: the null baseline passes too", pytrace=False)
