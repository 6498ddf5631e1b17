"""The pytest plugin: options, one test item per (claim, model), and the reporter.

A claims module declares `CLAIMS = [Claim(...), ...]`; this plugin turns that list into items
named `<claim-id>[<model>]` that all run the same generic test, `_run_claim`.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import torch

from mechclaims.baselines import (
    DEFAULT_DIR as DEFAULT_BASELINE_DIR,
    DIFFERENT_WEIGHTS,
    NOT_RECORDED,
    REGRESSION,
    Comparison,
    baseline_file,
    compare,
    load_baseline,
    update_baselines,
)
from mechclaims.cache import MeasurementCache, cache_key, default_cache_dir
from mechclaims.errors import MechclaimsError
from mechclaims.models import GaussianNull, Model, check_spec, load_model, resolve_auto
from mechclaims.registry import (
    Claim,
    Grid,
    NULLS,
    Measurement,
    Threshold,
    Verdict,
    not_applicable,
    parse_assignment,
    parse_number,
    parse_sweeps,
    sweep_grid,
)
from mechclaims.results import ROW_DEFAULTS, RunRecord, claim_json, json_default, measurement_json, threshold_json
from mechclaims.sweeps import param_sweep, threshold_sweep

NULL_SEED = 0


@dataclass
class Options:
    """Parsed mechclaims command-line options (validated before any model loads).

    `param_sweeps` maps a claim to the parameter of its two-parameter sweep and that parameter's grid.
    `baseline_dir` is where baselines are compared (and, with `update_baselines`, written); None: no
    comparison. `baselines` holds each model's baseline as read (None: none recorded; a string: why it
    cannot be read).
    """

    models: list[str]
    thresholds: dict[str, float]
    sweeps: dict[str, Grid]
    param_sweeps: dict[str, tuple[str, Grid]]
    report_dir: Path
    strict_null: bool
    cache: MeasurementCache
    baseline_dir: Path | None = None
    update_baselines: bool = False
    auto_note: str | None = None
    resolved_from: dict[str, str] = field(default_factory=dict)
    baselines: dict[str, dict[str, Any] | str | None] = field(default_factory=dict)

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
        sweeps, param_sweeps = parse_sweeps(config.getoption("mechclaims_sweeps") or [])
        update = bool(config.getoption("mechclaims_update_baselines"))
        baseline = config.getoption("mechclaims_baseline")
        if baseline is not None and not update and not Path(baseline).is_dir():
            raise MechclaimsError(f"--baseline {baseline} is not a directory: pass the folder holding <model>.json "
                                  f"baselines (default {DEFAULT_BASELINE_DIR} when present), or record them with "
                                  "--update-baselines")
        baseline_dir = Path(baseline) if baseline else (
            DEFAULT_BASELINE_DIR if update or DEFAULT_BASELINE_DIR.is_dir() else None)
        cache_dir = config.getoption("mechclaims_cache_dir") or default_cache_dir()
        return cls(
            models=list(dict.fromkeys(models)),
            thresholds=thresholds,
            sweeps=sweeps,
            param_sweeps=param_sweeps,
            report_dir=Path(config.getoption("mechclaims_report_dir")),
            strict_null=bool(config.getoption("mechclaims_strict_null")),
            cache=MeasurementCache(Path(cache_dir), enabled=not config.getoption("mechclaims_no_cache")),
            baseline_dir=baseline_dir,
            update_baselines=update,
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

    def checks_regressions(self, spec: str) -> bool:
        """Whether this run compares `spec` with a recorded baseline (one regression item per claim)."""
        return (self.baseline_dir is not None and not self.update_baselines
                and baseline_file(self.baseline_dir, spec).is_file())

    def compare_with_baseline(self, row: dict[str, Any], model: Model, tolerance: float) -> dict[str, Any] | None:
        """The row against the model's baseline (None without one); an unreadable baseline is a regression.
        Each model's baseline file is read once per run."""
        if self.baseline_dir is None:
            return None
        if model.name not in self.baselines:
            try:
                self.baselines[model.name] = load_baseline(self.baseline_dir, model.name)
            except MechclaimsError as exc:
                self.baselines[model.name] = str(exc)
        baseline = self.baselines[model.name]
        if isinstance(baseline, str):
            return Comparison(REGRESSION, baseline).to_json()
        source = baseline_file(self.baseline_dir, model.name)
        return None if baseline is None else compare(row, model.fingerprint, baseline, source, tolerance).to_json()


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


WORKER_OUTPUT = "mechclaims"
CLAIM_ITEM_ID = re.compile(r"^([a-z0-9_]+\.[a-z0-9_]+)\[")


class Reporter:
    """Collects one row per (claim, model) and writes results.json, report.html and, with
    --update-baselines, the baselines, once, at the end.

    Under pytest-xdist each worker hands its rows to the controller (`workeroutput`), which merges
    them and is the only process that writes files.
    """

    def __init__(self, options: Options, argv: list[str], worker_output: dict[str, Any] | None = None) -> None:
        self.options = options
        self.record = RunRecord(argv=argv)
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        self.by_item: dict[tuple[str, str], dict[str, Any]] = {}
        self.worker_output = worker_output
        self.written: list[Path] = []

    def add_model(self, model: Model) -> None:
        self.record.models[model.name] = {
            "resolved_from": model.resolved_from or self.options.resolved_from.get(model.name),
            "fingerprint": model.fingerprint,
            "capabilities": model.capabilities.to_json(),
            "initialised_at_load": list(model.initialised_at_load),
        }

    def add(self, claim: Claim, spec: str, model_name: str, **result: Any) -> dict[str, Any]:
        """One result row (every schema key present, None where it does not apply); a claim measured
        twice on a model (its own item and a regression check elsewhere) keeps one row."""
        self.record.claims.setdefault(claim.id, claim_json(claim))
        row = {"model": model_name, "claim": claim.id, **ROW_DEFAULTS, **result}
        self.rows[model_name, claim.id] = self.by_item[claim.id, spec] = row
        return row

    def merge(self, data: dict[str, Any]) -> None:
        """A worker's models, claims and rows (pytest-xdist controller)."""
        self.record.models.update(data["models"])
        for claim_id, claim in data["claims"].items():
            self.record.claims.setdefault(claim_id, claim)
        self.rows.update({(row["model"], row["claim"]): row for row in data["results"]})
        self.options.auto_note = self.options.auto_note or data["auto_note"]

    def write(self) -> None:
        if not self.rows:
            return
        self.record.results = list(self.rows.values())
        data = self.record.write(self.options.report_dir / "results.json")
        from mechclaims.report import render_report

        render_report(data, self.options.report_dir / "report.html")
        self.written = [self.options.report_dir / "results.json", self.options.report_dir / "report.html"]
        if self.options.update_baselines and self.options.baseline_dir is not None:
            self.written += update_baselines(self.options.baseline_dir, data)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.worker_output is None:
            self.write()
            return
        self.worker_output[WORKER_OUTPUT] = json.dumps(
            {"models": self.record.models, "claims": self.record.claims, "results": list(self.rows.values()),
             "auto_note": self.options.auto_note}, default=json_default)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        output = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT)
        if output is not None:
            self.merge(json.loads(output))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.options.auto_note:
            terminalreporter.write_line(f"mechclaims: {self.options.auto_note}")
        for path in self.written:
            terminalreporter.write_line(f"mechclaims: wrote {path}")


REPORTER = pytest.StashKey[Reporter]()
POOL = pytest.StashKey[ModelPool]()
CLAIM_KEY = pytest.StashKey[tuple[Claim, str]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mechclaims", "mechanistic-interpretability claims")
    group.addoption("--model", action="append", dest="mechclaims_models", metavar="SPEC",
                    help="model spec (repeatable): a Hugging Face name, a checkpoint folder, smollm2-135m, "
                         "minilm-l6, random:<spec>, or auto (default)")
    group.addoption("--models-file", dest="mechclaims_models_file", default=None, metavar="FILE",
                    help="a file of model specs, one per line (# comments), added to --model")
    group.addoption("--threshold", action="append", dest="mechclaims_thresholds", metavar="CLAIM=VALUE",
                    help="override a claim's threshold value (repeatable)")
    group.addoption("--sweep", action="append", dest="mechclaims_sweeps", metavar="CLAIM[:PARAM]=START:STOP:STEP",
                    help="evaluate a claim over a grid of thresholds, or with :PARAM over a grid of a parameter "
                         "the measurement kept (a heatmap against the threshold grid); repeatable")
    group.addoption("--report-dir", dest="mechclaims_report_dir", default="reports", metavar="DIR",
                    help="where results.json and report.html are written (default: reports)")
    group.addoption("--strict-null", action="store_true", dest="mechclaims_strict_null",
                    help="fail a claim whose null baseline also passes (TRIVIAL)")
    group.addoption("--baseline", dest="mechclaims_baseline", default=None, metavar="DIR",
                    help=f"compare every result with DIR/<model>.json: a moved statistic or changed verdict fails "
                         f"regression[<claim>][<model>] (default: {DEFAULT_BASELINE_DIR} when present)")
    group.addoption("--update-baselines", action="store_true", dest="mechclaims_update_baselines",
                    help="record this run's results as the models' baselines (in --baseline DIR)")
    group.addoption("--no-cache", action="store_true", dest="mechclaims_no_cache",
                    help="measure everything afresh and write nothing to the measurement cache")
    group.addoption("--cache-dir", dest="mechclaims_cache_dir", default=None, metavar="DIR",
                    help="measurement cache directory (default: the user cache dir or $MECHCLAIMS_CACHE_DIR)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "regression: a claim's result compared with its recorded baseline")
    if not config.pluginmanager.hasplugin("xdist"):
        config.addinivalue_line("markers", "xdist_group(name): pytest-xdist's grouping (here, one group per model)")
    try:
        options = Options.from_config(config)
    except MechclaimsError as exc:
        raise pytest.UsageError(str(exc)) from None
    worker_output = getattr(config, "workeroutput", None)
    if worker_output is not None:
        workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    reporter = Reporter(options, sys.argv[1:], worker_output)
    config.stash[REPORTER] = reporter
    config.stash[POOL] = ModelPool()
    config.pluginmanager.register(reporter, "mechclaims-reporter")


def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> list[pytest.Item] | None:
    """`CLAIMS` in a claims module becomes one item per claim and model, `<claim-id>[<model>]`, then
    one `regression[<claim-id>][<model>]` per claim for each model with a baseline. Items of one model
    share an xdist group, so `-n N --dist loadgroup` loads each model in one worker."""
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
            items.append(_item(collector, f"{claim.id}[{spec}]", _run_claim, claim, spec))
        if options.checks_regressions(spec):
            for claim in claims:
                item = _item(collector, f"regression[{claim.id}][{spec}]", _check_regression, claim, spec)
                item.add_marker(pytest.mark.regression)
                items.append(item)
    return items


def _item(collector: pytest.Collector, name: str, test: Any, claim: Claim, spec: str) -> pytest.Item:
    item = pytest.Function.from_parent(collector, name=name, callobj=test)
    item.stash[CLAIM_KEY] = (claim, spec)
    item.add_marker(pytest.mark.xdist_group(spec))
    return item


def _check_claim_names(options: Options, known: set[str]) -> None:
    """--threshold and --sweep must name collected claims (a usage error names the choices)."""
    if not known:
        return
    for option, names in (("--threshold", options.thresholds), ("--sweep", options.sweeps),
                          ("--sweep", options.param_sweeps)):
        unknown = sorted(set(names) - known)
        if unknown:
            raise pytest.UsageError(f"{option} names unknown claim {unknown[0]!r}: choose from {', '.join(sorted(known))}")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Checked where items are collected, except in pytest-xdist workers: their controller checks."""
    if not hasattr(session.config, "workerinput"):
        _check_claim_names(session.config.stash[REPORTER].options,
                           {item.stash[CLAIM_KEY][0].id for item in session.items if CLAIM_KEY in item.stash})


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """The controller's check of the claims a worker collected (item ids `<file>::<claim-id>[<model>]`)."""
    names = {CLAIM_ITEM_ID.match(item_id.rpartition("::")[2]) for item_id in ids}
    _check_claim_names(node.config.stash[REPORTER].options, {match.group(1) for match in names if match})


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


def _measure_with_null(options: Options, claim: Claim, pool: ModelPool, spec: str) -> tuple[Measurement, Measurement | None, bool]:
    """(real, null, real served from cache)."""
    model = pool.get(spec)
    real, real_hit = _measure(options, claim, model, model.fingerprint, "real")
    null = None
    if claim.null is not None:
        null, _ = _measure(options, claim, pool.null(spec, claim.null), model.fingerprint, f"{claim.null}:{NULL_SEED}")
    return real, null, real_hit


def _sweeps(options: Options, claim: Claim, threshold: Threshold, real: Measurement,
            null: Measurement | None) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The claim's threshold sweep and two-parameter sweep (None where neither asked nor declared).

    A declared threshold sweep on a measurement that kept distributions by a parameter also gets the
    two-parameter sweep over every kept value."""
    override = options.sweeps.get(claim.id)
    asked = options.param_sweeps.get(claim.id)
    if not (override or threshold.sweep or asked):
        return None, None
    grid = threshold.sweep_grid(override)
    sweep = threshold_sweep(real, null, threshold, grid, claim.trivial_if_null_passes)
    if asked is not None:
        param, param_grid = asked[0], sweep_grid(*asked[1])
    elif threshold.at is not None and len(real.by_param) == 1:
        param, param_grid = next(iter(real.by_param)), None
    else:
        return sweep, None
    return sweep, param_sweep(real, null, threshold, grid, param, param_grid, claim.trivial_if_null_passes)


def _evaluate(request: pytest.FixtureRequest, pool: ModelPool, claim: Claim, spec: str) -> dict[str, Any]:
    """Load, check applicability, measure (cached), threshold, sweep, compare with the baseline and
    record: the claim's results row. An unexpected exception is recorded as ERROR and re-raised."""
    reporter = request.config.stash[REPORTER]
    options = reporter.options
    overridden = claim.id in options.thresholds
    threshold = replace(claim.threshold, value=options.thresholds[claim.id]) if overridden else claim.threshold
    base = {"params": claim.params, "threshold": threshold_json(threshold, overridden)}
    started = time.perf_counter()
    try:
        model = pool.get(spec)
    except MechclaimsError as exc:
        return reporter.add(claim, spec, spec, verdict=Verdict.ERROR.value, reason=str(exc), **base)
    reporter.add_model(model)
    reason = not_applicable(claim, model.capabilities)
    if reason:
        row = {"verdict": Verdict.NA.value, "reason": reason, **base}
    else:
        try:
            row = _measured_row(options, claim, spec, threshold, pool) | base
        except MechclaimsError as exc:
            row = {"verdict": Verdict.ERROR.value, "reason": str(exc), **base}
        except Exception as exc:
            reporter.add(claim, spec, model.name, verdict=Verdict.ERROR.value, reason=f"{type(exc).__name__}: {exc}",
                         traceback=traceback.format_exc(), **base)
            raise
    row = reporter.add(claim, spec, model.name, seconds=time.perf_counter() - started, **row)
    row["baseline"] = options.compare_with_baseline(row, model, claim.tolerance)
    return row


def _measured_row(options: Options, claim: Claim, spec: str, threshold: Threshold, pool: ModelPool) -> dict[str, Any]:
    """Measure (cached) the model and its null, decide and sweep: the row's measured part."""
    real, null, real_hit = _measure_with_null(options, claim, pool, spec)
    sweep, grid_sweep = _sweeps(options, claim, threshold, real, null)
    verdict, statistic, null_statistic = claim.decide(real, null, threshold)
    return {"verdict": verdict.value, "statistic": statistic, "null_statistic": null_statistic,
            "interval": threshold.interval_of(real), "null_interval": threshold.interval_of(null), "cache_hit": real_hit,
            "measurement": measurement_json(real), "null": measurement_json(null), "sweep": sweep,
            "param_sweep": grid_sweep}


def _row(request: pytest.FixtureRequest, pool: ModelPool) -> tuple[Claim, dict[str, Any]]:
    """This item's claim and its row: recorded by an earlier item of this process, else evaluated now."""
    claim, spec = request.node.stash[CLAIM_KEY]
    row = request.config.stash[REPORTER].by_item.get((claim.id, spec))
    return claim, row if row is not None else _evaluate(request, pool, claim, spec)


def _run_claim(request: pytest.FixtureRequest, mechclaims_models: ModelPool) -> None:
    """The generic claim test: the claim's verdict as a pytest outcome (ERROR and FAIL fail, N/A skips)."""
    claim, row = _row(request, mechclaims_models)
    verdict = Verdict(row["verdict"])
    if verdict is Verdict.ERROR:
        pytest.fail(row["reason"], pytrace=False)
    if verdict is Verdict.NA:
        pytest.skip(f"N/A: {row['reason']}")
    threshold = row["threshold"]
    for key, value in (("verdict", verdict.value), ("statistic", row["statistic"]),
                       ("null_statistic", row["null_statistic"]), ("threshold", threshold["describe"]),
                       ("origin", threshold["origin"])):
        request.node.user_properties.append((key, value))
    null = "n/a" if row["null_statistic"] is None else f"{row['null_statistic']:.4g}"
    summary = (f"{claim.id} on {row['model']}: {threshold['statistic']} = {row['statistic']:.4g}, threshold "
               f"{threshold['describe']} ({threshold['origin']}); null = {null}")
    if verdict is Verdict.FAIL:
        pytest.fail(f"FAIL {summary}", pytrace=False)
    if verdict is Verdict.TRIVIAL and _options(request).strict_null:
        pytest.fail(f"TRIVIAL (--strict-null) {summary}: the null baseline passes too", pytrace=False)


def _options(request: pytest.FixtureRequest) -> Options:
    return request.config.stash[REPORTER].options


def _check_regression(request: pytest.FixtureRequest, mechclaims_models: ModelPool) -> None:
    """regression[<claim>][<model>]: fails when the result moved from its baseline beyond tolerance or
    changed verdict; different weights and claims without a recorded entry are skips that say so."""
    _, row = _row(request, mechclaims_models)
    comparison = row["baseline"]
    if comparison is None and row["verdict"] == Verdict.ERROR.value:
        pytest.fail(row["reason"], pytrace=False)
    if comparison is None:
        pytest.skip(f"no baseline for {row['model']} in {_options(request).baseline_dir}: record one with "
                    "--update-baselines")
    for key in ("status", "old_statistic", "new_statistic", "tolerance"):
        request.node.user_properties.append((f"baseline_{key}", comparison[key]))
    if comparison["status"] == REGRESSION:
        pytest.fail(comparison["message"], pytrace=False)
    if comparison["status"] in (DIFFERENT_WEIGHTS, NOT_RECORDED):
        pytest.skip(comparison["message"])
