"""The mechclaims command-line options, parsed and validated once, before any model loads: a bad value, or a
folder the run could not write its results, baselines or cache into, is a one-line usage error (exit 4). The
parsed `Options` live in `config.stash[OPTIONS]`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mechclaims.arguments import parse_params, parse_sweeps, parse_thresholds
from mechclaims.baselines import DEFAULT_DIR as DEFAULT_BASELINE_DIR
from mechclaims.cache import CACHE_ENV, default_cache_dir
from mechclaims.claim import Grid
from mechclaims.errors import MechclaimsError
from mechclaims.models import specs
from mechclaims.outputs import writable_folder
from mechclaims.run import DEVICE_ENV, target_device


@dataclass(frozen=True)
class Options:
    """Parsed options. `baseline_dir` is where baselines are compared (and, with `update_baselines`,
    written); None: no comparison."""

    models: tuple[str, ...]
    thresholds: dict[str, float]
    params: dict[str, dict[str, Any]]
    sweeps: dict[str, Grid]
    param_sweeps: dict[str, tuple[str, Grid]]
    report_dir: Path
    strict_null: bool
    cache_dir: Path | None
    no_cache: bool
    baseline_dir: Path | None
    update_baselines: bool
    slow_claims: bool = False
    device: str | None = None
    findings_fail: bool = False

    @classmethod
    def from_config(cls, config: pytest.Config) -> Options:
        models = [*(config.getoption("mechclaims_models") or []),
                  *read_models_file(config.getoption("mechclaims_models_file"))] or ["auto"]
        distinct: dict[tuple[Any, ...], str] = {}
        for spec in models:
            for parsed in specs.expanded(specs.parse(spec)):
                specs.check(parsed, probe_hub=False)
                distinct.setdefault(specs.same_model(parsed), parsed.text)
        sweeps, param_sweeps = parse_sweeps(config.getoption("mechclaims_sweeps") or [])
        update = bool(config.getoption("mechclaims_update_baselines"))
        baseline = config.getoption("mechclaims_baseline")
        if baseline is not None and not update and not Path(baseline).is_dir():
            raise MechclaimsError(f"--baseline {baseline} is not a directory: pass the folder holding <model>.json "
                                  f"baselines (default {DEFAULT_BASELINE_DIR} when present), or record them with "
                                  "--update-baselines")
        cache_dir = config.getoption("mechclaims_cache_dir")
        no_cache = bool(config.getoption("mechclaims_no_cache"))
        report_dir = writable_folder(config.getoption("mechclaims_report_dir"), "--report-dir")
        if update:
            writable_folder(baseline or DEFAULT_BASELINE_DIR, "--baseline (with --update-baselines)")
        if not no_cache:
            writable_folder(cache_dir or default_cache_dir(),
                            "--cache-dir" if cache_dir else f"the cache folder (${CACHE_ENV})")
        device = config.getoption("mechclaims_device")
        if device is not None:
            target_device(device)
        return cls(
            models=tuple(distinct.values()),
            thresholds=parse_thresholds(config.getoption("mechclaims_thresholds") or []),
            params=parse_params(config.getoption("mechclaims_params") or []),
            sweeps=sweeps,
            param_sweeps=param_sweeps,
            report_dir=report_dir,
            strict_null=bool(config.getoption("mechclaims_strict_null")),
            cache_dir=None if cache_dir is None else Path(cache_dir),
            no_cache=no_cache,
            baseline_dir=Path(baseline) if baseline else (
                DEFAULT_BASELINE_DIR if update or DEFAULT_BASELINE_DIR.is_dir() else None),
            update_baselines=update,
            slow_claims=bool(config.getoption("mechclaims_slow_claims")),
            device=device,
            findings_fail=bool(config.getoption("mechclaims_findings_fail")),
        )

    def named_claims(self) -> list[tuple[str, set[str]]]:
        """(option, claims it names), for checking them against the collected claims."""
        return [("--threshold", set(self.thresholds)), ("--sweep", set(self.sweeps) | set(self.param_sweeps)),
                ("--param", set(self.params))]


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


OPTIONS = pytest.StashKey[Options]()
PREVIOUS_DEVICE = pytest.StashKey[str | None]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mechclaims", "mechanistic-interpretability claims")
    group.addoption("--model", action="append", dest="mechclaims_models", metavar="SPEC",
                    help="model spec (repeatable): a Hugging Face name (name@revision for a branch or step), a "
                         "checkpoint folder (a folder of checkpoint-<step> folders: every step), smollm2-135m, "
                         "minilm-l6, random:<spec>, or auto (default)")
    group.addoption("--models-file", dest="mechclaims_models_file", default=None, metavar="FILE",
                    help="a file of model specs, one per line (# comments), added to --model")
    group.addoption("--threshold", action="append", dest="mechclaims_thresholds", metavar="CLAIM=VALUE",
                    help="override a claim's threshold value (repeatable)")
    group.addoption("--param", action="append", dest="mechclaims_params", metavar="CLAIM:NAME=VALUE",
                    help="override a claim parameter (JSON value or text; checked against the measurement's "
                         "signature; repeatable)")
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
    group.addoption("--findings-fail", action="store_true", dest="mechclaims_findings_fail",
                    help="fail on every claim that fails, also those the model's baseline records failing (known "
                         "findings, by default strict expected failures: xfailed while they fail, failing the run "
                         "once they pass)")
    group.addoption("--no-cache", action="store_true", dest="mechclaims_no_cache",
                    help="measure everything afresh and write nothing to the measurement cache")
    group.addoption("--slow-claims", action="store_true", dest="mechclaims_slow_claims",
                    help="also run the claims marked slow (e.g. those that train many models); without it they "
                         "are deselected")
    group.addoption("--device", dest="mechclaims_device", default=None, metavar="DEVICE",
                    help="run the forward passes on DEVICE: cpu or cuda[:N] (default: $MECHCLAIMS_DEVICE, else cpu); "
                         "weight statistics stay on the CPU")
    group.addoption("--cache-dir", dest="mechclaims_cache_dir", default=None, metavar="DIR",
                    help="measurement cache directory (default: the user cache dir or $MECHCLAIMS_CACHE_DIR)")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    try:
        config.stash[OPTIONS] = options = Options.from_config(config)
    except MechclaimsError as exc:
        raise pytest.UsageError(str(exc)) from None
    if options.device is not None:
        config.stash[PREVIOUS_DEVICE] = os.environ.get(DEVICE_ENV)
        os.environ[DEVICE_ENV] = options.device


def pytest_unconfigure(config: pytest.Config) -> None:
    if OPTIONS in config.stash:
        del config.stash[OPTIONS]
    if PREVIOUS_DEVICE in config.stash:
        previous = config.stash[PREVIOUS_DEVICE]
        if previous is None:
            os.environ.pop(DEVICE_ENV, None)
        else:
            os.environ[DEVICE_ENV] = previous
        del config.stash[PREVIOUS_DEVICE]
