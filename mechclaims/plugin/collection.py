"""`CLAIMS` in a claims module -> one item per claim and model, `<claim-id>[<model>]`, running the
generic claim test; anything in CLAIMS that is not a Claim is a collection error. A claim with its own
subjects (the suite's trained models) gets one item per subject instead, whatever --model names. Slow
claims carry the `slow` marker and are deselected without --slow-claims. Items of one model share an
xdist group, so `-n N --dist loadgroup` loads each model in one worker."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest

from mechclaims.catalogue import claims_of, load_claims
from mechclaims.claim import Claim, Verdict
from mechclaims.errors import MechclaimsError, did_you_mean
from mechclaims.plugin.options import OPTIONS, Options
from mechclaims.plugin.session import SESSION
from mechclaims.pool import ModelPool
from mechclaims.results import NEW

CLAIM_KEY = pytest.StashKey[tuple[Claim, str]]()
COLLECTED = pytest.StashKey[dict[str, Claim]]()
"""Every claim of the collected claims modules, by id, also those -k, -m or --slow-claims deselect."""
CLAIM_ITEM_ID = re.compile(r"^([a-z0-9_]+\.[a-z0-9_]+)\[")


class Hooks:
    """Hooks other mechclaims modules implement."""

    @pytest.hookspec
    def pytest_mechclaims_extra_items(self, collector: pytest.Collector, claims: list[Claim], spec: str) -> list[pytest.Item]:
        """More items for these claims on model `spec`, collected after the claim items (e.g. regressions)."""


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(Hooks)


def claim_item(collector: pytest.Collector, name: str, test: Any, claim: Claim, spec: str) -> pytest.Item:
    item = pytest.Function.from_parent(collector, name=name, callobj=test)
    item.stash[CLAIM_KEY] = (claim, spec)
    item.add_marker(pytest.mark.xdist_group(spec))
    return item


def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> list[pytest.Item] | None:
    if name != "CLAIMS" or not isinstance(collector, pytest.Module):
        return None
    try:
        claims = claims_of(obj, collector.nodeid)
    except MechclaimsError as exc:
        raise collector.CollectError(str(exc)) from None
    collector.config.stash.setdefault(COLLECTED, {}).update({claim.id: claim for claim in claims})
    session = collector.config.stash[SESSION]
    session.resolve_auto()
    by_subject: dict[str, list[Claim]] = {spec: [c for c in claims if not c.subjects] for spec in session.models}
    for claim in claims:
        for subject in claim.subjects:
            by_subject.setdefault(subject, []).append(claim)
    items: list[pytest.Item] = []
    for spec, chosen in by_subject.items():
        items += [claim_item(collector, f"{claim.id}[{spec}]", run_claim, claim, spec) for claim in chosen]
        for extra in collector.ihook.pytest_mechclaims_extra_items(collector=collector, claims=chosen, spec=spec):
            items += extra
    return items


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow claims (and their regression items) are marked `slow`, and deselected without --slow-claims."""
    slow = [item for item in items if CLAIM_KEY in item.stash and item.stash[CLAIM_KEY][0].slow]
    for item in slow:
        item.add_marker(pytest.mark.slow)
    if slow and not config.stash[OPTIONS].slow_claims:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if item not in slow]


def check_claim_names(options: Options, known: set[str]) -> None:
    """--threshold, --sweep and --param must name claims of the collected modules, selected or not (a usage error
    names the closest and all the choices)."""
    if not known:
        return
    for option, names in options.named_claims():
        unknown = sorted(names - known)
        if unknown:
            raise pytest.UsageError(f"{option} names unknown claim {unknown[0]!r}{did_you_mean(unknown[0], known)}: "
                                    f"choose from {', '.join(sorted(known))}")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Checked where items are collected, except in pytest-xdist workers: their controller checks names.
    --param names and values are checked against each claim's measure."""
    if hasattr(session.config, "workerinput"):
        return
    options = session.config.stash[OPTIONS]
    claims = session.config.stash.get(COLLECTED, {})
    check_claim_names(options, set(claims))
    for claim_id, value in options.thresholds.items():
        if claim_id in claims:
            try:
                replace(claims[claim_id].threshold, value=value)
            except MechclaimsError as exc:
                raise pytest.UsageError(f"--threshold {claim_id}={value:g}: {exc}") from None
    for claim_id, overrides in options.params.items():
        if claim_id in claims:
            try:
                claims[claim_id].with_params(overrides)
            except MechclaimsError as exc:
                raise pytest.UsageError(str(exc)) from None


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """The controller's check, against every claim of the claims folders a worker collected claim items from (item
    ids `<file>::<claim-id>[<model>]`), read without pytest: so claims that -k deselected on the workers, even a
    whole module's, are known too."""
    folders = {(node.config.rootpath / item_id.partition("::")[0]).parent for item_id in ids
               if CLAIM_ITEM_ID.match(item_id.rpartition("::")[2])}
    known = {claim_id for folder in sorted(folders) for claim_id in load_claims(folder)}
    check_claim_names(node.config.stash[OPTIONS], known)


@pytest.fixture(scope="session")
def mechclaims_models(request: pytest.FixtureRequest) -> ModelPool:
    """The session's loaded models (each spec loads once)."""
    return request.config.stash[SESSION].settings.models


def run_claim(request: pytest.FixtureRequest, mechclaims_models: ModelPool) -> None:
    """The generic claim test: the claim's verdict as a pytest outcome (ERROR and FAIL fail, N/A skips). A failure the
    model's baseline records (a known finding) is a strict expected failure, unless --findings-fail: xfailed while it
    fails, failing the run (XPASS strict) once it passes."""
    claim, spec = request.node.stash[CLAIM_KEY]
    session, options = request.config.stash[SESSION], request.config.stash[OPTIONS]
    result = session.result(claim, spec)
    if result.verdict is Verdict.ERROR:
        pytest.fail(result.reason + (f"\n{result.traceback}" if result.traceback else ""), pytrace=False)
    if result.verdict is Verdict.NA:
        pytest.skip(f"N/A: {result.reason}")
    finding = session.judge(claim, spec)
    if finding is not None and finding.status != NEW and not options.findings_fail:
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=finding.message))
    for key, value in (("verdict", result.verdict.value), ("statistic", result.statistic),
                       ("null_statistic", result.null_statistic), ("threshold", result.threshold.describe()),
                       ("origin", result.threshold.origin)):
        request.node.user_properties.append((key, value))
    if result.verdict is Verdict.FAIL:
        pytest.fail(f"FAIL {result.summary()}", pytrace=False)
    if result.verdict is Verdict.TRIVIAL and options.strict_null:
        pytest.fail(f"TRIVIAL (--strict-null) {result.summary()}: the null baseline passes too", pytrace=False)
