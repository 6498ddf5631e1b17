"""Baselines end to end (pytester): recording, a deliberate metric change caught as a regression,
different weights, and pytest-xdist workers writing one report."""

from __future__ import annotations

import json
import multiprocessing
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from mechclaims.cache import MeasurementCache
from mechclaims.measurement import Measurement

CLAIM = "toy.embed_ratio"
METRIC = '''
from mechclaims.metrics import orthogonality

SCALE = {scale}


def scaled_embedding_cosines(source, variant="raw"):
    """The VSA-1 measurement with its ratio scaled: SCALE != 1 is the deliberate change under test."""
    measurement = orthogonality.token_embedding_cosines(source, variant=variant)
    measurement.statistics["mean_abs_ratio"] *= SCALE
    return measurement
'''
CLAIMS_MODULE = f'''
import toy_metric
from mechclaims.claim import Claim, Threshold

CLAIMS = [
    Claim(id="{CLAIM}", paper="toy", section="1", statement="Embeddings are nearly orthogonal.",
          measure=toy_metric.scaled_embedding_cosines, params={{"variant": "raw"}},
          threshold=Threshold(statistic="mean_abs_ratio", op="<=", value=2.0, origin="suite"),
          trivial_if_null_passes=False, tolerance=0.01),
]
'''
REGRESSION_ITEM = f"regression[[]{CLAIM}[]]"


@pytest.fixture
def project(pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester project with one claim whose metric lives in the project (so a test can change it)."""
    pytester.makepyfile(toy_metric=METRIC.format(scale=1.0), test_toy_claims=CLAIMS_MODULE)
    monkeypatch.setenv("MECHCLAIMS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return pytester


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "mechclaims.plugin", "-p", "no:cacheprovider", "-rA", *args)


def _results(pytester: pytest.Pytester) -> dict:
    return json.loads((pytester.path / "reports" / "results.json").read_text())


def test_a_deliberate_metric_change_fails_its_regression_item(project: pytest.Pytester, tiny_gpt2_dir: Path) -> None:
    """Record, compare unchanged (pass), change the metric, compare again: regression[<claim>][<model>]
    fails with old, new and tolerance, and the report marks the cell changed since baseline."""
    model = str(tiny_gpt2_dir)
    recorded = _run(project, "--model", model, "--update-baselines")
    recorded.stdout.fnmatch_lines(["*mechclaims: wrote reports?baselines?*tiny-gpt2*.json"])
    (baseline_path,) = (project.path / "reports" / "baselines").iterdir()
    baseline = json.loads(baseline_path.read_text())
    old = baseline["claims"][CLAIM]["statistic"]
    assert baseline["model"] == model and baseline["claims"][CLAIM]["tolerance"] == 0.01

    unchanged = _run(project, "--model", model)
    unchanged.assert_outcomes(passed=2)
    unchanged.stdout.fnmatch_lines([f"PASSED *{REGRESSION_ITEM}[[]*tiny-gpt2*[]]"])
    assert _results(project)["results"][0]["baseline"]["status"] == "unchanged"

    project.makepyfile(toy_metric=METRIC.format(scale=1.5))
    changed = _run(project, "--model", model, "-m", "regression")
    changed.assert_outcomes(failed=1, deselected=1)
    new = old * 1.5
    changed.stdout.fnmatch_lines([
        f"regression of {CLAIM} on *tiny-gpt2*: statistic {old:.6g} -> {new:.6g}, moved +*: old {old:.6g} (*), "
        f"new {new:.6g} (*), tolerance ±0.01 (baseline reports?baselines?*.json*",
        f"FAILED *{REGRESSION_ITEM}[[]*tiny-gpt2*[]]*",
    ])
    assert "Traceback" not in changed.stdout.str()
    row = _results(project)["results"][0]
    assert row["baseline"]["status"] == "regression" and row["statistic"] == pytest.approx(new)
    report = (project.path / "reports" / "report.html").read_text()
    assert "changed since baseline (regression)" in report
    assert json.loads(baseline_path.read_text()) == baseline


def test_new_weights_are_different_weights_not_a_regression(project: pytest.Pytester, tiny_gpt2_dir: Path,
                                                            tmp_path: Path) -> None:
    folder = tmp_path / "variant"
    shutil.copytree(tiny_gpt2_dir, folder)
    _run(project, "--model", str(folder), "--update-baselines")
    weights = load_file(folder / "model.safetensors")
    weights["transformer.wte.weight"] = weights["transformer.wte.weight"] * 3.0 + 1.0
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    result = _run(project, "--model", str(folder), "-m", "regression")
    result.assert_outcomes(skipped=1, deselected=1)
    result.stdout.fnmatch_lines(["SKIPPED *different weights: * now has fingerprint *not compared*"])
    assert _results(project)["results"][0]["baseline"]["status"] == "different weights"


def test_an_unreadable_baseline_fails_the_regression_item_with_the_fix(project: pytest.Pytester,
                                                                      tiny_gpt2_dir: Path) -> None:
    _run(project, "--model", str(tiny_gpt2_dir), "--update-baselines")
    (baseline_path,) = (project.path / "reports" / "baselines").iterdir()
    baseline_path.write_text("{truncated")
    result = _run(project, "--model", str(tiny_gpt2_dir), "-m", "regression")
    result.assert_outcomes(failed=1, deselected=1)
    result.stdout.fnmatch_lines(["*cannot be read*restore it from git or re-record it with --update-baselines",
                                 f"FAILED *{REGRESSION_ITEM}*"])


def test_a_baseline_with_a_broken_body_is_one_regression_and_results_json_agrees(project: pytest.Pytester,
                                                                                  tiny_gpt2_dir: Path) -> None:
    """A baseline of the right schema whose entry lost its verdict: the claim item still passes, its regression
    item fails naming the fault, and results.json records that regression (not "no baseline")."""
    _run(project, "--model", str(tiny_gpt2_dir), "--update-baselines")
    (baseline_path,) = (project.path / "reports" / "baselines").iterdir()
    baseline = json.loads(baseline_path.read_text())
    del baseline["claims"][CLAIM]["verdict"]
    baseline_path.write_text(json.dumps(baseline))
    result = _run(project, "--model", str(tiny_gpt2_dir))
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([f"*is broken (claims[[]'{CLAIM}'[]].verdict is 'missing'*--update-baselines*",
                                 f"FAILED *{REGRESSION_ITEM}*"])
    assert "KeyError" not in result.stdout.str()
    row = _results(project)["results"][0]
    assert row["verdict"] == "PASS" and row["baseline"]["status"] == "regression"
    assert "is broken" in row["baseline"]["message"]


def test_xdist_workers_write_one_report_with_every_model(project: pytest.Pytester, tiny_gpt2_dir: Path,
                                                         tiny_llama_dir: Path) -> None:
    """-n 2 --dist loadgroup: each model in its own worker; the controller merges both workers' rows into
    the one results.json and report.html, equal to a serial run's, and records both baselines."""
    models = ["--model", str(tiny_gpt2_dir), "--model", str(tiny_llama_dir)]
    parallel = _run(project, *models, "-n", "2", "--dist", "loadgroup", "--update-baselines")
    parallel.stdout.fnmatch_lines(["*2 workers*"])
    merged = _results(project)
    assert {row["model"] for row in merged["results"]} == {str(tiny_gpt2_dir), str(tiny_llama_dir)}
    assert set(merged["models"]) == {str(tiny_gpt2_dir), str(tiny_llama_dir)}
    assert len(list((project.path / "reports" / "baselines").iterdir())) == 2
    assert [p.name for p in (project.path / "reports").iterdir() if p.name.startswith(".")] == []
    _run(project, *models, "--report-dir", "serial")
    serial = json.loads((project.path / "serial" / "results.json").read_text())
    statistic = {(r["model"], r["statistic"]) for r in serial["results"]}
    assert {(r["model"], r["statistic"]) for r in merged["results"]} == statistic
    assert all(r["baseline"]["status"] == "unchanged" for r in serial["results"])


def test_unknown_claims_are_a_usage_error_under_xdist_too(project: pytest.Pytester, tiny_gpt2_dir: Path) -> None:
    """Workers collect, the controller names the unknown claim in one line (no INTERNALERROR)."""
    result = _run(project, "--model", str(tiny_gpt2_dir), "-n", "2", "--threshold", "nobody.claim=1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: --threshold names unknown claim 'nobody.claim': choose from {CLAIM}"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


def test_options_for_a_claim_deselected_by_k_are_not_unknown_under_xdist(project: pytest.Pytester,
                                                                        tiny_gpt2_dir: Path) -> None:
    """A second claims module; -k selects only its claim, and --threshold names the first module's claim, which
    every worker collected and deselected: a valid run, not a usage error."""
    project.makepyfile(test_other_claims=CLAIMS_MODULE.replace(CLAIM, "toy.other_ratio"))
    result = _run(project, "--model", str(tiny_gpt2_dir), "-n", "2", "-k", "other_ratio",
                  "--threshold", f"{CLAIM}=1.5")
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()
    assert [row["claim"] for row in _results(project)["results"]] == ["toy.other_ratio"]


def _hammer(directory: str) -> list[int]:
    """Write and read one cache entry many times; returns the sizes of what each read returned."""
    cache = MeasurementCache(Path(directory))
    values = np.arange(20_000, dtype=np.float64)
    sizes = []
    for _ in range(40):
        cache.put("ab" + "0" * 62, Measurement(statistics={"n": 20_000.0}, distribution=values))
        got = cache.get("ab" + "0" * 62)
        sizes.append(-1 if got is None else len(got.distribution))
    return sizes


def test_concurrent_cache_writers_never_expose_a_partial_entry(tmp_path: Path) -> None:
    """Four processes writing and reading the same key: every read is the whole entry."""
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        sizes = pool.map(_hammer, [str(tmp_path)] * 4)
    assert {size for worker in sizes for size in worker} == {20_000}
    assert [p.name for p in (tmp_path / "ab").iterdir()] == ["ab" + "0" * 62 + ".json"]


INTERRUPTING_CLAIMS = f'''
import os

import toy_metric
from mechclaims.claim import Claim, Threshold


def interrupted_when_asked(source, variant="raw"):
    """The toy measurement, or Ctrl-C when $TOY_INTERRUPT is set (a user stopping the run mid-way)."""
    if os.environ.get("TOY_INTERRUPT"):
        raise KeyboardInterrupt
    return toy_metric.scaled_embedding_cosines(source, variant)


CLAIMS = [
    Claim(id="{CLAIM}", paper="toy", section="1", statement="Embeddings are nearly orthogonal.",
          measure=toy_metric.scaled_embedding_cosines, params={{"variant": "raw"}},
          threshold=Threshold(statistic="mean_abs_ratio", op="<=", value=2.0, origin="suite"),
          trivial_if_null_passes=False, tolerance=0.01),
    Claim(id="toy.later_claim", paper="toy", section="2", statement="The same, measured later.",
          measure=interrupted_when_asked, params={{"variant": "centred"}},
          threshold=Threshold(statistic="mean_abs_ratio", op="<=", value=2.0, origin="suite"),
          trivial_if_null_passes=False, tolerance=0.01),
]
'''


def test_an_interrupted_run_keeps_the_last_complete_results_and_marks_its_partial_ones(
    project: pytest.Pytester, tiny_gpt2_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in the second claim: results.json, report.html and the baselines of the last complete run stay as
    they were; the claims measured before the interrupt go to results.interrupted.json, marked, and its report
    says the results are partial."""
    project.makepyfile(test_toy_claims=INTERRUPTING_CLAIMS)
    assert _run(project, "--model", str(tiny_gpt2_dir), "--update-baselines").ret == pytest.ExitCode.OK
    reports = project.path / "reports"
    complete = {path: path.read_bytes() for path in reports.rglob("*") if path.is_file()}
    monkeypatch.setenv("TOY_INTERRUPT", "1")
    stopped = _run(project, "--model", str(tiny_gpt2_dir), "--no-cache", "--update-baselines")
    assert stopped.ret == pytest.ExitCode.INTERRUPTED
    stopped.stdout.fnmatch_lines(["*mechclaims: wrote reports?results.interrupted.json"])
    assert {path: path.read_bytes() for path in complete} == complete
    partial = json.loads((reports / "results.interrupted.json").read_text())
    assert partial["run"]["interrupted"] is True and [row["claim"] for row in partial["results"]] == [CLAIM]
    assert 'id="interrupted"' in (reports / "report.interrupted.html").read_text()
    assert _results(project)["run"]["interrupted"] is False


def _shared_direction(tiny_gpt2_dir: Path, folder: Path) -> Path:
    """The tiny checkpoint with one direction added to every token embedding: far from orthogonal, so the toy
    claim (mean |cos| ratio <= 2) fails on it."""
    shutil.copytree(tiny_gpt2_dir, folder)
    weights = load_file(folder / "model.safetensors")
    embedding = weights["transformer.wte.weight"]
    weights["transformer.wte.weight"] = embedding + 5 * embedding.std() * torch.ones(embedding.shape[1])
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_a_recorded_failure_is_a_strict_expected_failure_until_it_passes_or_moves(
    project: pytest.Pytester, tiny_gpt2_dir: Path, tmp_path: Path
) -> None:
    """Record a baseline where the claim fails (a new finding: the run fails). Rerun: the claim is xfailed as a known
    finding naming the baseline, and the run passes. Change the metric so that it fails differently: still xfailed,
    but its regression item fails the run. Give the model weights on which the claim passes: an unexpected pass
    (strict) fails the run, and the report marks it changed since baseline. --findings-fail fails on the finding;
    another threshold is not the recorded finding."""
    folder = _shared_direction(tiny_gpt2_dir, tmp_path / "variant")
    model = str(folder)
    recorded = _run(project, "--model", model, "--update-baselines")
    recorded.assert_outcomes(failed=1)
    recorded.stdout.fnmatch_lines(["mechclaims: findings against the baselines: 0 known *, 0 changed *, 1 new"])
    assert _results(project)["results"][0]["finding"]["status"] == "new finding"

    known = _run(project, "--model", model)
    assert known.ret == pytest.ExitCode.OK
    known.assert_outcomes(passed=1, xfailed=1)
    known.stdout.fnmatch_lines([f"XFAIL *{CLAIM}[[]*variant[]]* - known finding: FAIL of {CLAIM} on {model} "
                                f"(statistic *, threshold mean_abs_ratio <= 2) recorded in reports?baselines?*.json (git *)"])
    known.stdout.fnmatch_lines(["mechclaims: findings against the baselines: 1 known *, 0 changed *, 0 new"])
    row = _results(project)["results"][0]
    assert row["verdict"] == "FAIL" and row["finding"]["status"] == "known finding"
    report = (project.path / "reports" / "report.html").read_text()
    assert '<span class="finding" title="known finding: FAIL of' in report and 'id="findings"' in report

    strict = _run(project, "--model", model, "--findings-fail")
    strict.assert_outcomes(passed=1, failed=1)
    other_threshold = _run(project, "--model", model, "--threshold", f"{CLAIM}=1000")
    other_threshold.assert_outcomes(passed=2)

    project.makepyfile(toy_metric=METRIC.format(scale=1.5))
    moved = _run(project, "--model", model)
    moved.assert_outcomes(xfailed=1, failed=1)
    moved.stdout.fnmatch_lines([f"regression of {CLAIM} on *: statistic * -> *, moved +*: old * (FAIL), new * (FAIL)*",
                                f"FAILED *{REGRESSION_ITEM}*"])

    project.makepyfile(toy_metric=METRIC.format(scale=1.0))
    shutil.copy(tiny_gpt2_dir / "model.safetensors", folder / "model.safetensors")
    passes = _run(project, "--model", model)
    passes.assert_outcomes(failed=1, skipped=1)
    passes.stdout.fnmatch_lines([f"FAILED *{CLAIM}[[]*variant[]]*"])
    passes.stdout.fnmatch_lines(["mechclaims: findings against the baselines: 0 known *, 1 changed *, 0 new"])
    assert "[XPASS(strict)] changed since baseline: FAIL of" in passes.stdout.str()
    row = _results(project)["results"][0]
    assert row["verdict"] == "PASS" and row["finding"]["status"] == "changed since baseline"
    report = (project.path / "reports" / "report.html").read_text()
    assert "changed since baseline (a known finding no longer fails)" in report
