"""The pytest plugin end to end, with pytester: options, usage errors, items, verdicts, reports, cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import CLAIMS_DIR



@pytest.fixture
def suite(pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester project holding the real VSA claims module and a private measurement cache."""
    shutil.copy(CLAIMS_DIR / "test_knittel2024_vsa.py", pytester.path / "test_knittel2024_vsa.py")
    monkeypatch.setenv("MECHCLAIMS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return pytester


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """pytest in a subprocess (a fresh interpreter per run, as a user has) with the mechclaims plugin."""
    return pytester.runpytest_subprocess("-p", "mechclaims.plugin", *args)


def _applicable(results: dict) -> list[dict]:
    """Result rows other than the gate-bundle claim, which is N/A (with its reason) on ungated MLPs."""
    rows = []
    for entry in results["results"]:
        if entry["claim"] == "knittel2024.mlp0_gate_token_bundles":
            assert entry["verdict"] == "N/A" and "no gate" in entry["reason"]
        else:
            rows.append(entry)
    return rows


def _results(pytester: pytest.Pytester) -> dict:
    return json.loads((pytester.path / "reports" / "results.json").read_text())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--threshold", "knittel2024.embed_raw_orthogonal"], "use --threshold CLAIM=VALUE"),
        (["--threshold", "knittel2024.embed_raw_orthogonal=abc"], "is not a number"),
        (["--threshold", "knittel2024.embed_raw_orthogonal=nan"], "must be finite"),
        (["--sweep", "knittel2024.embed_raw_orthogonal=1:2"], "use --sweep CLAIM=START:STOP:STEP or"),
        (["--sweep", "knittel2024.embed_raw_orthogonal=2:1:0.5"], "START <= STOP"),
        (["--model", "not a spec!!"], "unknown model spec"),
        (["--model", "/no/such/folder"], "does not exist"),
        (["--threshold", "nobody.claim=1"], "unknown claim 'nobody.claim'"),
        (["--threshold", "knittel2024.embed_raw_orthgonal=0.5"], "(did you mean 'knittel2024.embed_raw_orthogonal'?)"),
        (["--models-file", "/no/such/models.txt"], "--models-file /no/such/models.txt cannot be read"),
        (["--baseline", "/no/such/baselines"], "--baseline /no/such/baselines is not a directory"),
        (["--sweep", "knittel2024.mlp0_token_bundles:=1:2:1"], "use --sweep CLAIM=START:STOP:STEP or CLAIM:PARAM="),
        (["--sweep", "nobody.claim:max_tokens=1:2:1"], "unknown claim 'nobody.claim'"),
        (["--param", "knittel2024.embed_raw_orthogonal=1"], "use --param CLAIM:NAME=VALUE"),
        (["--param", "nobody.claim:variant=raw"], "--param names unknown claim 'nobody.claim'"),
        (["--threshold", "knittel2024.mlp0_token_bundles=1.5"], "is outside [0, 1]: give a fraction between 0 and 1"),
        (["--param", "knittel2024.embed_raw_orthogonal:varient=raw"], "(did you mean 'variant'?)"),
        (["--param", "knittel2024.embed_raw_orthogonal:bound=high"], "bound='high' does not fit"),
        (["--device", "meta"], "device 'meta' is not supported: use cpu or cuda"),
        (["--device", "gpu!"], "unknown device 'gpu!': use cpu or cuda"),
        (["--cluster=no-port"], "--cluster 'no-port' is not a scheduler address: pass tcp://HOST:PORT"),
        (["--cluster", "-n", "2"], "--cluster and pytest-xdist's -n both run models in parallel: choose one"),
        (["--cluster=tcp://127.0.0.1:9"], "cannot reach the Dask scheduler at tcp://127.0.0.1:9 (OSError): start it"),
        pytest.param(["--device", "cuda"], "torch sees no CUDA device: use --device cpu",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")),
    ],
)
def test_bad_options_are_one_line_usage_errors(
    suite: pytest.Pytester, tiny_gpt2_dir: Path, args: list[str], message: str
) -> None:
    """Malformed options stop the run with exit code 4 and one line naming the fix, before any load."""
    result = _run(suite, "--model", str(tiny_gpt2_dir), *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if message in line]
    assert errors, result.errlines
    assert "Traceback" not in "\n".join(result.errlines)
    assert not (suite.path / "reports").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--report-dir", "taken"], "--report-dir taken is a file"),
        (["--report-dir", "taken/reports"], "--report-dir taken/reports is under"),
        (["--cache-dir", "taken/cache"], "--cache-dir taken/cache is under"),
        (["--baseline", "taken", "--update-baselines"], "--baseline (with --update-baselines) taken is a file"),
    ],
)
def test_output_folders_that_cannot_be_written_are_usage_errors_before_measuring(
    suite: pytest.Pytester, tiny_gpt2_dir: Path, args: list[str], message: str
) -> None:
    """A results, cache or baseline folder that is (or is under) a regular file stops the run up front (exit 4)."""
    (suite.path / "taken").write_text("not a folder")
    result = _run(suite, "--model", str(tiny_gpt2_dir), *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert [line for line in result.errlines if message in line], result.errlines
    assert "Traceback" not in "\n".join(result.errlines)
    assert (suite.path / "taken").read_text() == "not a folder"
    assert not (suite.path / "reports").exists()


def test_two_spellings_of_one_folder_collect_one_model(suite: pytest.Pytester, tiny_gpt2_dir: Path) -> None:
    """`--model d --model d/` (and the folder by another path) is one model: one item per claim, named `d`."""
    alias = suite.path / "alias"
    alias.symlink_to(tiny_gpt2_dir, target_is_directory=True)
    once = _run(suite, "--model", str(tiny_gpt2_dir), "--collect-only", "-q")
    spelled = _run(suite, "--model", str(tiny_gpt2_dir), "--model", f"{tiny_gpt2_dir}/", "--model", f"{alias}/",
                   "--collect-only", "-q")
    items = [line for line in spelled.outlines if "::" in line]
    assert items == [line for line in once.outlines if "::" in line]
    assert len(items) >= 13 and all(line.endswith(f"[{tiny_gpt2_dir}]") for line in items if "regression[" not in line)


def test_claims_give_the_same_results_in_any_order(suite: pytest.Pytester, tiny_gpt2_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Every claim on the checkpoint, measured afresh in the declared order and shuffled by pytest-randomly: the
    runs really measure the claims in different orders (results.json lists them as measured), and every claim's
    verdict and statistics are the same."""
    pytest.importorskip("pytest_randomly")
    monkeypatch.delenv("PYTEST_ADDOPTS")
    runs = {}
    for order in (["-p", "no:randomly"], ["-p", "randomly", "--randomly-seed=3"]):
        _run(suite, "--model", str(tiny_gpt2_dir), "--no-cache", *order)
        results = _results(suite)["results"]
        ran = [row["claim"] for row in results]
        rows = {row["claim"]: (row["verdict"], row["statistic"], row["null_statistic"]) for row in results}
        runs[tuple(order)] = (ran, rows)
    (declared, first), (shuffled, second) = runs.values()
    assert sorted(declared) == sorted(shuffled) and declared != shuffled and len(first) == 13
    assert first == second


def test_run_writes_reports_with_ids_verdicts_and_nulls(suite: pytest.Pytester, tiny_gpt2_dir: Path) -> None:
    """Every claim runs on the checkpoint; ids are <claim-id>[<model>]; each result has its null."""
    collected = _run(suite, "--model", str(tiny_gpt2_dir), "--collect-only", "-q")
    _run(suite, "--model", str(tiny_gpt2_dir))
    results = _results(suite)
    claim_ids = set(results["claims"])
    assert len(results["results"]) == len(claim_ids) == 13
    for claim_id in claim_ids:
        collected.stdout.fnmatch_lines([f"*test_knittel2024_vsa.py::{claim_id}[[]{tiny_gpt2_dir}[]]"])
    for entry in _applicable(results):
        assert entry["verdict"] in {"PASS", "FAIL", "TRIVIAL"}
        assert entry["null"] is not None and entry["null_statistic"] is not None
        assert entry["measurement"]["statistics"]
        fraction = entry["threshold"]["at"] is not None
        assert (entry["interval"] is not None) == (entry["null_interval"] is not None) == fraction
        if fraction:
            assert entry["interval"][0] <= entry["statistic"] <= entry["interval"][1]
    assert results["models"][str(tiny_gpt2_dir)]["fingerprint"]
    assert (suite.path / "reports" / "report.html").stat().st_size > 0


def test_not_applicable_is_a_skip_with_its_reason(suite: pytest.Pytester, tiny_llama_dir: Path) -> None:
    """On an RMSNorm model the LayerNorm claim is N/A: a pytest skip that says why, and N/A in the report."""
    result = _run(suite, "--model", str(tiny_llama_dir), "-k", "ln_removes", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*N/A: the model uses RMSNorm, which does not centre vectors*"])
    (entry,) = _results(suite)["results"]
    assert entry["verdict"] == "N/A" and "RMSNorm" in entry["reason"]


def test_grouped_kv_heads_are_units_of_their_own(suite: pytest.Pytester, tiny_llama_dir: Path) -> None:
    """Two KV heads for four query heads: K and V contribute two units per layer, not four."""
    _run(suite, "--model", str(tiny_llama_dir), "-k", "attn_heads")
    (entry,) = _results(suite)["results"]
    units = [row["unit"] for row in entry["measurement"]["details"]["units"]]
    assert sum(" K " in u for u in units) == 2 * 2 and sum(" Q " in u for u in units) == 2 * 4
    assert "2 shared heads" in entry["measurement"]["details"]["grouped_kv"]


def test_threshold_override_flips_the_verdict(suite: pytest.Pytester, tiny_gpt2_dir: Path) -> None:
    """The same measurement passes or fails as --threshold moves across its statistic."""
    claim = "knittel2024.embed_raw_orthogonal"
    args = ["--model", str(tiny_gpt2_dir), "-k", "embed_raw"]
    _run(suite, *args)
    statistic = _results(suite)["results"][0]["statistic"]
    _run(suite, *args, "--threshold", f"{claim}={statistic * 0.9}").assert_outcomes(failed=1)
    passed = _run(suite, *args, "--threshold", f"{claim}={statistic * 1.1}")
    passed.assert_outcomes(passed=1)
    entry = _results(suite)["results"][0]
    assert entry["threshold"]["overridden"] and entry["threshold"]["value"] == pytest.approx(statistic * 1.1)


def test_param_override_is_measured_recorded_and_marked(suite: pytest.Pytester, tiny_gpt2_dir: Path) -> None:
    """--param replaces a claim parameter: another measurement (its own cache entry), named in the row
    and marked in the report."""
    args = ["--model", str(tiny_gpt2_dir), "-k", "embed_raw"]
    _run(suite, *args)
    default = _results(suite)["results"][0]
    _run(suite, *args, "--param", "knittel2024.embed_raw_orthogonal:variant=centred").assert_outcomes(passed=1)
    entry = _results(suite)["results"][0]
    assert entry["params"]["variant"] == "centred" and entry["params_overridden"] == ["variant"]
    assert entry["cache_hit"] is False and entry["statistic"] != default["statistic"]
    assert "Parameters overridden by --param" in (suite.path / "reports" / "report.html").read_text()


def test_a_claims_list_holding_something_else_is_a_collection_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_broken_claims="CLAIMS = ['knittel2024.embed_raw_orthogonal']")
    result = _run(pytester, "--collect-only")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*CLAIMS[[]0[]] is a str, not a Claim*"])


def test_second_run_is_served_from_the_cache(suite: pytest.Pytester, tiny_gpt2_dir: Path) -> None:
    """Measurements are cached by fingerprint and parameters; --no-cache measures afresh."""
    args = ["--model", str(tiny_gpt2_dir), "-k", "attn_layers"]
    _run(suite, *args)
    assert _results(suite)["results"][0]["cache_hit"] is False
    _run(suite, *args)
    assert _results(suite)["results"][0]["cache_hit"] is True
    _run(suite, *args, "--no-cache")
    assert _results(suite)["results"][0]["cache_hit"] is False


def test_models_file_adds_one_column_per_spec(suite: pytest.Pytester, tiny_gpt2_dir: Path) -> None:
    """--models-file specs (comments and blank lines skipped) run beside --model, each spec once."""
    listing = suite.path / "models.txt"
    listing.write_text(f"# variants\n{tiny_gpt2_dir}\n\nrandom:{tiny_gpt2_dir}  # null\n")
    _run(suite, "--model", str(tiny_gpt2_dir), "--models-file", str(listing), "-k", "embed_raw")
    results = _results(suite)
    assert list(results["models"]) == [str(tiny_gpt2_dir), f"random:{tiny_gpt2_dir}"]
    assert [r["model"] for r in results["results"]] == list(results["models"])


def test_sweep_records_a_curve(suite: pytest.Pytester, tiny_gpt2_dir: Path) -> None:
    """--sweep evaluates the claim at every grid point without measuring again."""
    _run(suite, "--model", str(tiny_gpt2_dir), "-k", "diagonal", "--sweep",
                    "knittel2024.embed_diagonal_dominance=0.1:0.5:0.1")
    sweep = _results(suite)["results"][0]["sweep"]
    assert sweep["axis"] == "at"
    assert [p["x"] for p in sweep["points"]] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    fractions = [p["statistic"] for p in sweep["points"]]
    assert fractions == sorted(fractions)
    assert all(p["interval"][0] <= p["statistic"] <= p["interval"][1] for p in sweep["points"])


def test_strict_null_fails_a_trivial_pass(suite: pytest.Pytester, tiny_gpt2_dir: Path) -> None:
    """A pass whose null passes too is TRIVIAL; --strict-null turns it into a failure."""
    args = ["--model", str(tiny_gpt2_dir), "-k", "ln_removes", "--threshold", "knittel2024.ln_removes_shared_direction=-1"]
    _run(suite, *args).assert_outcomes(passed=1)
    assert _results(suite)["results"][0]["verdict"] == "TRIVIAL"
    strict = _run(suite, *args, "--strict-null")
    strict.assert_outcomes(failed=1)
    strict.stdout.fnmatch_lines(["*TRIVIAL (--strict-null)*"])


def test_options_for_a_claim_deselected_by_k_are_accepted(suite: pytest.Pytester, tiny_gpt2_dir: Path) -> None:
    """-k deselects the claim --threshold names: a valid run of the selected claim, not an unknown-claim error; a bad
    value for the deselected claim is still a usage error."""
    args = ["--model", str(tiny_gpt2_dir), "-k", "embed_raw"]
    _run(suite, *args, "--threshold", "knittel2024.ln_removes_shared_direction=0.5").assert_outcomes(passed=1)
    assert [row["claim"] for row in _results(suite)["results"]] == ["knittel2024.embed_raw_orthogonal"]
    bad = _run(suite, *args, "--threshold", "knittel2024.mlp0_token_bundles=1.5")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR


def test_unloadable_model_fails_each_claim_with_one_line(suite: pytest.Pytester) -> None:
    """A hub name that is neither cached nor reachable: every claim fails with the fix, no traceback."""
    result = _run(suite, "--model", "some-org/not-cached-model", "-k", "embed_raw")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*not in the local Hugging Face cache*--model smollm2-135m*"])
    assert "Traceback" not in result.stdout.str()
    assert _results(suite)["results"][0]["verdict"] == "ERROR"


def test_a_checkpoint_whose_tensor_names_do_not_fit_is_an_error_not_a_measurement(
    suite: pytest.Pytester, tiny_gpt2_dir: Path, tmp_path: Path
) -> None:
    """A checkpoint saved with a `module.` prefix (as DataParallel writes it) would load none of its tensors: each
    claim on it and on its null is an ERROR naming them, and results.json holds no measurement of it."""
    folder = tmp_path / "prefixed"
    shutil.copytree(tiny_gpt2_dir, folder)
    tensors = load_file(folder / "model.safetensors")
    save_file({f"module.{key}": value for key, value in tensors.items()}, folder / "model.safetensors",
              metadata={"format": "pt"})
    result = _run(suite, "--model", str(folder), "-k", "embed_raw")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*does not load into its architecture GPT2LMHeadModel*module.transformer*"])
    assert "Traceback" not in result.stdout.str()
    assert [(row["verdict"], row["statistic"]) for row in _results(suite)["results"]] == [("ERROR", None)]


@pytest.mark.slow
def test_bundled_encoder_and_its_random_twin(suite: pytest.Pytester) -> None:
    """Every claim runs on minilm-l6 and random:minilm-l6, each result beside its null."""
    _run(suite, "--model", "minilm-l6", "--model", "random:minilm-l6")
    results = _results(suite)
    assert {(r["model"], r["claim"]) for r in results["results"]} == {
        (model, claim) for model in ("minilm-l6", "random:minilm-l6") for claim in results["claims"]
    }
    for entry in _applicable(results):
        assert entry["verdict"] in {"PASS", "FAIL", "TRIVIAL"}, entry.get("reason")
        assert entry["statistic"] is not None and entry["null_statistic"] is not None
    fingerprints = {m["fingerprint"] for m in results["models"].values()}
    assert len(fingerprints) == 2


@pytest.mark.slow
def test_auto_resolves_offline_to_smollm2_and_says_so(suite: pytest.Pytester) -> None:
    """Offline, `auto` is smollm2-135m: announced in the terminal summary and recorded for the report."""
    result = _run(suite, "-k", "attn_layers or ln_removes", "-rs")
    result.stdout.fnmatch_lines(["*--model auto resolved to smollm2-135m*", "*N/A: the model uses RMSNorm*"])
    results = _results(suite)
    assert results["models"]["smollm2-135m"]["resolved_from"] == "auto"
    assert {r["model"] for r in results["results"]} == {"smollm2-135m"}


def test_planted_control_passes_and_its_random_twin_fails(suite: pytest.Pytester) -> None:
    """From the command line: the bundle claim PASSES on planted:bundles, FAILS on planted:random-neurons."""
    result = _run(suite, "--model", "planted:bundles", "--model", "planted:random-neurons", "-k", "mlp0_token")
    result.assert_outcomes(passed=1, failed=1)
    verdicts = {r["model"]: r["verdict"] for r in _results(suite)["results"]}
    assert verdicts == {"planted:bundles": "PASS", "planted:random-neurons": "FAIL"}


def test_two_parameter_sweep_is_recorded_and_impossible_ones_fail_in_one_line(suite: pytest.Pytester,
                                                                              tiny_gpt2_dir: Path) -> None:
    """cut-off x max_tokens from the one measurement (fractions grow with max_tokens); a parameter sweep of
    a claim whose statistic is a single number fails that claim with the fix."""
    claim = "knittel2024.mlp0_token_bundles"
    result = _run(suite, "--model", str(tiny_gpt2_dir), "-k", "mlp0_token or embed_raw", "--sweep",
                  f"{claim}:max_tokens=1:9:2", "--sweep", "knittel2024.embed_raw_orthogonal:max_tokens=1:2:1")
    result.stdout.fnmatch_lines(["*a sweep over 'max_tokens' needs a fraction statistic*sweep its threshold alone"])
    rows = {row["claim"]: row for row in _results(suite)["results"]}
    assert rows["knittel2024.embed_raw_orthogonal"]["verdict"] == "ERROR"
    grid = rows[claim]["param_sweep"]
    assert grid["param"] == "max_tokens" and grid["y"] == [1.0, 3.0, 5.0, 7.0, 9.0]
    assert len(grid["statistic"]) == 5 and all(len(row) == len(rows[claim]["sweep"]["points"]) for row in grid["statistic"])
    assert np.all(np.diff(np.asarray(grid["statistic"]), axis=0) >= 0)
