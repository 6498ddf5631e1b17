"""`--cluster [ADDRESS]`: the run's models measured on a Dask cluster (`mechclaims.cluster`), one task per model,
submitted once the items are collected; each item then takes its Result from its model's task, so the report,
results.json, baselines and regression items are those of a serial run. Without an address: `$DASK_SCHEDULER_ADDRESS`,
else a local cluster on this machine. results.json's `run.cluster` and the terminal summary say where each task ran
and which were retried."""

from __future__ import annotations

import functools
import os
from dataclasses import replace

import pytest

from mechclaims.claim import Claim
from mechclaims.cluster import ADDRESS_ENV, LOCAL, Cluster, check_address
from mechclaims.engine import Settings, unmeasured
from mechclaims.errors import MechclaimsError
from mechclaims.plugin.collection import CLAIM_KEY
from mechclaims.plugin.reporting import RECORD
from mechclaims.plugin.session import SESSION, Session
from mechclaims.results import Result

ADDRESS = pytest.StashKey[str]()
CLUSTER = pytest.StashKey[Cluster]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("mechclaims").addoption(
        "--cluster", dest="mechclaims_cluster", nargs="?", const=LOCAL, default=None, metavar="ADDRESS",
        help=f"measure each model in a task on a Dask cluster: the scheduler at ADDRESS (tcp://host:port), else "
             f"${ADDRESS_ENV}, else a local cluster of worker processes on this machine")


def pytest_configure(config: pytest.Config) -> None:
    address = config.getoption("mechclaims_cluster")
    if address is None or hasattr(config, "workerinput"):
        return
    if config.getoption("numprocesses", None):
        raise pytest.UsageError("--cluster and pytest-xdist's -n both run models in parallel: choose one")
    if address == LOCAL:
        address = os.environ.get(ADDRESS_ENV) or LOCAL
    try:
        config.stash[ADDRESS] = check_address(address)
    except MechclaimsError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_collection_finish(session: pytest.Session) -> None:
    """One task per model of the selected items (claims in item order), submitted before the first item runs."""
    config = session.config
    if ADDRESS not in config.stash:
        return
    wanted: dict[str, dict[str, Claim]] = {}
    for item in session.items:
        if CLAIM_KEY in item.stash:
            claim, spec = item.stash[CLAIM_KEY]
            wanted.setdefault(spec, {}).setdefault(claim.id, claim)
    if not wanted:
        return
    try:
        cluster = config.stash[CLUSTER] = Cluster.connect(config.stash[ADDRESS])
    except MechclaimsError as exc:
        raise pytest.UsageError(str(exc)) from None
    state = config.stash[SESSION]
    for spec, claims in wanted.items():
        cluster.submit(spec, list(claims.values()), state.settings)
    state.evaluator = functools.partial(_from_cluster, cluster, state)


def _from_cluster(cluster: Cluster, state: Session, claim: Claim, spec: str, settings: Settings) -> Result:
    """The claim's Result from its model's task, compared with the baseline here (the driver reads baselines)."""
    run = cluster.wait(spec)
    if isinstance(run, str):
        return unmeasured(claim, spec, settings, run)
    state.model_entries.update(run.models)
    result = next((one for one in run.results if one.claim == claim.id), None)
    if result is None:
        return unmeasured(claim, spec, settings, f"the cluster task measuring {spec} gave no result for {claim.id}")
    entry = run.models.get(result.model)
    if settings.baselines is not None and entry is not None:
        result = replace(result, baseline=settings.baselines.compare(result, entry["fingerprint"], claim.tolerance))
    return result


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Before results.json is written (trylast there): where the tasks ran; then the cluster is let go."""
    config = session.config
    if CLUSTER in config.stash:
        cluster = config.stash[CLUSTER]
        del config.stash[CLUSTER]
        try:
            config.stash[RECORD].cluster = cluster.describe()
        finally:
            cluster.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    record = config.stash.get(RECORD, None)
    described = None if record is None else record.cluster
    if described is None:
        return
    retried = ", ".join(f"{spec} ({described['tasks'][spec]['attempts']} attempts)" for spec in described["retried"])
    terminalreporter.write_line(
        f"mechclaims: measured {len(described['tasks'])} models on the {described['engine']} cluster at "
        f"{described['address']} ({described['workers']} workers); retried: {retried or 'none'}")


def pytest_unconfigure(config: pytest.Config) -> None:
    if CLUSTER in config.stash:
        config.stash[CLUSTER].close()
        del config.stash[CLUSTER]
    if ADDRESS in config.stash:
        del config.stash[ADDRESS]
