"""Sweeps from kept distributions: one- and two-parameter, in memory and from a saved results.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mechclaims.__main__ import main
from mechclaims.errors import MechclaimsError
from mechclaims.metrics.bundling import greedy_bundles
from mechclaims.claim import Threshold, Verdict, decide
from mechclaims.measurement import Measurement, ParamAxis
from mechclaims.results import Result, load_results
from mechclaims.sweeps import param_sweep, resweep, threshold_sweep

from helpers import synthetic_results

CLAIM = "paper.bundles"
THRESHOLD = Threshold(statistic="fraction_at_least", at=0.5, op=">", value=0.3, origin="suite")
GRID = [0.3, 0.45, 0.6, 0.75]


def _bundle_measurement(seed: int, max_tokens: int = 6) -> Measurement:
    rng = np.random.default_rng(seed)
    bundles = greedy_bundles(rng.standard_normal((300, 64)), rng.standard_normal((40, 64)), max_tokens=max_tokens)
    return Measurement(statistics={}, distribution=bundles.final,
                       by_param={"max_tokens": ParamAxis(list(range(1, max_tokens + 1)), bundles.best_by_size())})


@pytest.mark.parametrize("seed", range(4))
def test_kept_distributions_equal_measuring_with_that_parameter(seed: int) -> None:
    """Greedy bundles are prefixes of each other: the kept distribution at max_tokens = k is what a run with
    max_tokens = k measures, so the two-parameter sweep needs no re-measurement."""
    rng = np.random.default_rng(seed)
    vectors, targets = rng.standard_normal((300, 64)), rng.standard_normal((40, 64))
    kept = greedy_bundles(vectors, targets, max_tokens=6).best_by_size()
    for k in range(1, 7):
        np.testing.assert_allclose(kept[k - 1], greedy_bundles(vectors, targets, max_tokens=k).final, atol=1e-6)


def test_each_heatmap_row_is_the_threshold_sweep_at_that_parameter() -> None:
    real, null = _bundle_measurement(0), _bundle_measurement(1)
    grid = param_sweep(real, null, THRESHOLD, GRID, "max_tokens", None, True)
    assert grid.y == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0] and grid.x == GRID
    for row, k in enumerate(grid.y):
        points = threshold_sweep(real.at_param("max_tokens", k), null.at_param("max_tokens", k), THRESHOLD, GRID,
                                 True).points
        assert grid.statistic[row] == [p.statistic for p in points]
        assert grid.verdict[row] == [p.verdict for p in points]
    assert grid.statistic[-1] == [p.statistic for p in threshold_sweep(real, null, THRESHOLD, GRID, True).points]
    assert np.all(np.diff(np.asarray(grid.statistic), axis=0) >= 0)
    assert len({v for row in grid.verdict for v in row}) > 1


def test_sweeping_what_was_not_kept_is_a_one_line_error() -> None:
    real = _bundle_measurement(0)
    with pytest.raises(MechclaimsError, match="max_tokens = 9 was not measured"):
        param_sweep(real, None, THRESHOLD, GRID, "max_tokens", [1.0, 9.0], True)
    with pytest.raises(MechclaimsError, match="no distributions by 'layer'"):
        param_sweep(real, None, THRESHOLD, GRID, "layer", None, True)
    single = Threshold(statistic="mean", op=">", value=0.3, origin="suite")
    with pytest.raises(MechclaimsError, match="needs a fraction statistic"):
        param_sweep(real, None, single, GRID, "max_tokens", None, True)


def _saved(tmp_path: Path) -> tuple[Path, Measurement, Measurement]:
    real, null = _bundle_measurement(0), _bundle_measurement(1)
    verdict, statistic, null_statistic = decide(real, null, THRESHOLD)
    row = Result(model="m", claim=CLAIM, verdict=Verdict(verdict), statistic=statistic, null_statistic=null_statistic,
                 threshold=THRESHOLD, params={}, measurement=real, null=null).to_json()
    claim = {**next(iter(synthetic_results()["claims"].values())), "trivial_if_null_passes": True}
    results = {**synthetic_results(), "models": {}, "claims": {CLAIM: claim}, "results": [row]}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    return path, real, null


def test_a_saved_run_sweeps_as_the_run_itself_would(tmp_path: Path) -> None:
    path, real, null = _saved(tmp_path)
    saved = load_results(path)
    swept = resweep(saved, {CLAIM: (0.3, 0.75, 0.15)}, {CLAIM: ("max_tokens", (2.0, 6.0, 2.0))})
    (row,) = swept.results
    expected = threshold_sweep(real, null, THRESHOLD, GRID, True)
    assert [p.x for p in row.sweep.points] == pytest.approx(GRID)
    assert [p.verdict for p in row.sweep.points] == [p.verdict for p in expected.points]
    assert [p.statistic for p in row.sweep.points] == pytest.approx([p.statistic for p in expected.points])
    assert row.param_sweep.y == [2.0, 4.0, 6.0]
    assert saved.results[0].sweep is None


def test_sweep_command_prints_verdicts_and_writes_report_and_json(tmp_path: Path, capsys: Any) -> None:
    path, _, _ = _saved(tmp_path)
    out, swept = tmp_path / "sweep.html", tmp_path / "swept.json"
    code = main(["sweep", str(path), "--sweep", f"{CLAIM}=0.3:0.75:0.15", "--sweep", f"{CLAIM}:max_tokens=1:6:1",
                 "--out", str(out), "--json", str(swept)])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"{CLAIM} on m: 0.3: " in printed and "0.75: " in printed
    assert 'alt="sweep of the cut-off and max_tokens"' in out.read_text()
    assert json.loads(swept.read_text())["results"][0]["param_sweep"]["y"] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ("nobody.claim=0:1:0.5", "which these results do not hold"),
        (f"{CLAIM}:max_tokens=1:9:1", "max_tokens = 7 was not measured"),
        (f"{CLAIM}:=1:2:1", "is malformed"),
    ],
)
def test_sweep_command_errors_are_one_line(tmp_path: Path, capsys: Any, sweep: str, message: str) -> None:
    path, _, _ = _saved(tmp_path)
    assert main(["sweep", str(path), "--sweep", sweep, "--out", str(tmp_path / "x.html")]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error
    assert not (tmp_path / "x.html").exists()


def test_without_a_grid_a_sweep_is_the_thresholds_own_point() -> None:
    """A parameter sweep alone keeps the claim's cut-off (fractions) or value (other statistics)."""
    assert THRESHOLD.sweep_grid().tolist() == [0.5]
    assert Threshold(statistic="mean", op=">", value=0.3, origin="suite").sweep_grid().tolist() == [0.3]
    assert THRESHOLD.sweep_grid((0.1, 0.3, 0.1)).tolist() == [0.1, 0.2, 0.3]
