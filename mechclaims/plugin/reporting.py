"""results.json, report.html and (with --update-baselines) the baselines, written once at the end of the
run from the session's Results. An interrupted run (Ctrl-C) writes its partial results, marked, to
results.interrupted.json and report.interrupted.html instead, and records no baseline: the last complete run's
files stay. Under pytest-xdist each worker hands its results to the controller
(`workeroutput`), which merges them and is the only process that writes files."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mechclaims.baselines import update_baselines
from mechclaims.plugin.options import OPTIONS
from mechclaims.plugin.session import SESSION, Session
from mechclaims.results import CHANGED, KNOWN, NEW, Result, RunRecord, json_default, model_entry

WORKER_OUTPUT = "mechclaims"
RECORD = pytest.StashKey[RunRecord]()
WRITTEN = pytest.StashKey[list[Path]]()


def _model_info(session: Session, name: str) -> dict[str, Any] | None:
    """The model's results.json entry: from this process's loaded models, else as a cluster task reported it."""
    model = next((m for m in session.settings.models.models.values() if m.name == name), None)
    if model is not None:
        return model_entry(model, session.resolved_from.get(name))
    entry = session.model_entries.get(name)
    return None if entry is None else {**entry, "resolved_from": entry["resolved_from"] or session.resolved_from.get(name)}


def _collect(record: RunRecord, session: Session) -> None:
    """This process's results, models and claims into the record."""
    for result in session.results.values():
        info = _model_info(session, result.model)
        if info is not None:
            record.models[result.model] = info
        record.claims.setdefault(result.claim, session.claims[result.claim].to_json())
    record.results.extend(session.results.values())


def _merge(record: RunRecord, data: dict[str, Any]) -> None:
    """A worker's models, claims and results (pytest-xdist controller)."""
    record.models.update(data["models"])
    for claim_id, claim in data["claims"].items():
        record.claims.setdefault(claim_id, claim)
    record.results.extend(Result.from_json(row) for row in data["results"])


def pytest_configure(config: pytest.Config) -> None:
    config.stash[RECORD] = RunRecord(argv=sys.argv[1:])
    config.stash[WRITTEN] = []


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    state, record = config.stash[SESSION], config.stash[RECORD]
    _collect(record, state)
    worker_output = getattr(config, "workeroutput", None)
    if worker_output is not None:
        worker_output[WORKER_OUTPUT] = json.dumps(
            {"models": record.models, "claims": record.claims, "results": [r.to_json() for r in record.results],
             "auto_note": state.auto_note}, default=json_default)
        return
    if not record.results:
        return
    options = config.stash[OPTIONS]
    record.interrupted = exitstatus == pytest.ExitCode.INTERRUPTED
    stem = ".interrupted" if record.interrupted else ""
    written = [options.report_dir / f"results{stem}.json", options.report_dir / f"report{stem}.html"]
    data = record.write(written[0])
    from mechclaims.report import render_report

    render_report(data, written[1])
    if options.update_baselines and options.baseline_dir is not None and not record.interrupted:
        written += update_baselines(options.baseline_dir, record)
    config.stash[WRITTEN] = written


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    output = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT)
    if output is not None:
        data = json.loads(output)
        _merge(node.config.stash[RECORD], data)
        state = node.config.stash[SESSION]
        state.auto_note = state.auto_note or data["auto_note"]


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    note = config.stash[SESSION].auto_note
    if note:
        terminalreporter.write_line(f"mechclaims: {note}")
    findings = Counter(result.finding.status for result in config.stash[RECORD].results if result.finding)
    if findings:
        terminalreporter.write_line(f"mechclaims: findings against the baselines: {findings[KNOWN]} known (expected "
                                    f"failures), {findings[CHANGED]} changed since baseline, {findings[NEW]} new")
    for path in config.stash[WRITTEN]:
        terminalreporter.write_line(f"mechclaims: wrote {path}")


def pytest_unconfigure(config: pytest.Config) -> None:
    for key in (RECORD, WRITTEN):
        if key in config.stash:
            del config.stash[key]
