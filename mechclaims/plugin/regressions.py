"""regression[<claim>][<model>]: one item per claim for each model with a recorded baseline, failing when
the result moved beyond the claim's tolerance or changed verdict (`-m regression` runs only these)."""

from __future__ import annotations

import pytest

from mechclaims.claim import Claim, Verdict
from mechclaims.plugin.collection import CLAIM_KEY, claim_item
from mechclaims.plugin.options import OPTIONS
from mechclaims.plugin.session import SESSION
from mechclaims.pool import ModelPool
from mechclaims.results import DIFFERENT_WEIGHTS, NOT_RECORDED, REGRESSION


def pytest_mechclaims_extra_items(collector: pytest.Collector, claims: list[Claim], spec: str) -> list[pytest.Item]:
    if not collector.config.stash[SESSION].checks_regressions(spec):
        return []
    items = []
    for claim in claims:
        item = claim_item(collector, f"regression[{claim.id}][{spec}]", check_regression, claim, spec)
        item.add_marker(pytest.mark.regression)
        items.append(item)
    return items


def check_regression(request: pytest.FixtureRequest, mechclaims_models: ModelPool) -> None:
    """Fails on a regression; different weights and claims without a recorded entry are skips that say so."""
    claim, spec = request.node.stash[CLAIM_KEY]
    result = request.config.stash[SESSION].result(claim, spec)
    comparison = result.baseline
    if comparison is None and result.verdict is Verdict.ERROR:
        pytest.fail(result.reason, pytrace=False)
    if comparison is None:
        pytest.skip(f"no baseline for {result.model} in {request.config.stash[OPTIONS].baseline_dir}: record one with "
                    "--update-baselines")
    for key in ("status", "old_statistic", "new_statistic", "tolerance"):
        request.node.user_properties.append((f"baseline_{key}", getattr(comparison, key)))
    if comparison.status == REGRESSION:
        pytest.fail(comparison.message, pytrace=False)
    if comparison.status in (DIFFERENT_WEIGHTS, NOT_RECORDED):
        pytest.skip(comparison.message)
