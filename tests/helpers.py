"""Helpers shared by test modules (imported as `from helpers import ...`: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from mechclaims.catalogue import load_claims
from mechclaims.claim import Claim, Threshold, Verdict
from mechclaims.results import SCHEMA, Result

CLAIMS_DIR = Path(__file__).resolve().parents[1] / "claims"
SCRIPT_TOKEN = '<script>document.title="pwned"</script>'
HOSTILE_MODEL = "<img src=x onerror=alert(1)>"


@functools.cache
def claims_by_id() -> dict[str, Claim]:
    """Every claim in claims/test_*.py, by id (each module loaded from its file, not imported as a package)."""
    return load_claims(CLAIMS_DIR)


def claim_by_id(claim_id: str) -> Claim:
    """The claim with this id from claims/."""
    return claims_by_id()[claim_id]


def _threshold(statistic: str = "mean_abs_ratio", at: float | None = None) -> dict[str, Any]:
    describe = f"{statistic} <= 2" if at is None else f"{statistic}({at}) >= 0.9"
    op, value = ("<=", 2.0) if at is None else (">=", 0.9)
    return {"statistic": statistic, "op": op, "value": value, "at": at, "origin": "suite", "describe": describe,
            "overridden": False}


def _result(model: str, claim: str, verdict: str, **extra: Any) -> dict[str, Any]:
    """A results row in the schema's shape (every key from Result.to_json), with `extra` keys replaced."""
    row = Result(model=model, claim=claim, verdict=Verdict(verdict), threshold=Threshold.from_json(_threshold()),
                 params={}).to_json()
    return {**row, "threshold": _threshold(), **extra}


def synthetic_results() -> dict[str, Any]:
    """Two claims on two models: a PASS with a sweep, a two-parameter sweep and a hostile token, a FAIL with
    a sweep that regressed from its baseline, an N/A, a TRIVIAL; every measured row has a distribution and a
    curve."""
    measurement = {
        "statistics": {"mean_abs": 0.05, "mean_abs_ratio": 1.5},
        "distribution": [0.1, 0.2, 0.3, 0.25],
        "distribution_label": "largest |cos| per token",
        "details": {"most_similar_pairs": [{"a": SCRIPT_TOKEN, "b": "<b>bold</b>", "a_id": 1, "b_id": 2, "cos": 0.9}]},
        "curves": {"by_bundle_size": {"x": [1, 2, 3], "y": [0.1, 0.4, 0.6], "x_label": "bundle size",
                                      "y_label": "fraction at cosine >= 0.5"}},
    }
    null = {**measurement, "statistics": {"mean_abs": 0.04, "mean_abs_ratio": 1.0}, "details": {}}
    sweep = {"axis": "value", "points": [
        {"x": 1.0, "statistic": 1.5, "null_statistic": 1.0, "verdict": "FAIL"},
        {"x": 2.0, "statistic": 1.5, "null_statistic": 1.0, "verdict": "PASS"},
    ]}
    heatmap = {"axis": "at", "param": "max_tokens", "x": [0.3, 0.5, 0.7], "y": [1.0, 2.0],
               "statistic": [[0.5, 0.2, 0.0], [0.9, 0.6, 0.1]], "null_statistic": [[0.4, 0.1, 0.0], [0.6, 0.2, 0.0]],
               "verdict": [["FAIL"] * 3, ["PASS", "FAIL", "FAIL"]]}
    regression = {"status": "regression", "message": f"regression of knittel2024.embed_raw_orthogonal on {HOSTILE_MODEL}: "
                  "statistic 2.5 -> 3, moved +0.5: old 2.5 (FAIL), new 3 (FAIL), tolerance ±0.01",
                  "old_statistic": 2.5, "new_statistic": 3.0, "old_verdict": "FAIL", "new_verdict": "FAIL",
                  "tolerance": 0.01}
    claim = {"paper": "knittel2024", "section": "VSA-1", "statement": "Embeddings are nearly orthogonal.",
             "rationale": "mean |cos|", "params": {"variant": "<raw>"}, "threshold": _threshold(), "null": "gaussian",
             "trivial_if_null_passes": False}
    capabilities = {"architecture": "GPT2LMHeadModel", "kind": "decoder", "positions": "absolute", "norm": "layernorm",
                    "gated_mlp": False, "tied_embeddings": True, "d_model": 64, "d_head": 16, "d_mlp": 256,
                    "d_vocab": 300, "n_layers": 2, "n_heads": 4, "n_kv_heads": 4, "grouped_kv": False}
    return {
        "schema": SCHEMA,
        "run": {"id": "abc123", "started": 0.0, "finished": 1.0, "versions": {"mechclaims": "0.1.0"},
                "git_revision": None, "machine": {"platform": "linux", "processor": "x86_64", "cpus": 2},
                "threads": 2, "argv": ["claims"]},
        "models": {
            "smollm2-135m": {"resolved_from": "auto", "fingerprint": "f" * 64, "capabilities": capabilities},
            HOSTILE_MODEL: {"resolved_from": None, "fingerprint": "0" * 64, "capabilities": capabilities},
        },
        "claims": {"knittel2024.embed_raw_orthogonal": claim,
                   "knittel2024.ln_removes_shared_direction": {**claim, "trivial_if_null_passes": True}},
        "results": [
            _result("smollm2-135m", "knittel2024.embed_raw_orthogonal", "PASS", statistic=1.5, null_statistic=1.0,
                    measurement=measurement, null=null, sweep=sweep, cache_hit=True, interval=[0.4, 0.6],
                    null_interval=[0.01, 0.05], param_sweep=heatmap, params={"max_tokens": 2},
                    threshold=_threshold("fraction_at_least", at=0.5)),
            _result(HOSTILE_MODEL, "knittel2024.embed_raw_orthogonal", "FAIL", statistic=3.0,
                    null_statistic=1.0, measurement=measurement, null=null, sweep=sweep, baseline=regression),
            _result("smollm2-135m", "knittel2024.ln_removes_shared_direction", "N/A",
                    reason="the model uses RMSNorm, which does not centre vectors"),
            _result(HOSTILE_MODEL, "knittel2024.ln_removes_shared_direction", "TRIVIAL",
                    statistic=0.1, null_statistic=0.1, measurement=measurement, null=null),
        ],
    }


def trajectory_folder(tiny_gpt2_dir: Path, root: Path, steps: tuple[int, ...]) -> Path:
    """`root` holding checkpoint-<step>/ copies of the tiny checkpoint, its embedding scaled by each step."""
    for step in steps:
        folder = root / f"checkpoint-{step}"
        shutil.copytree(tiny_gpt2_dir, folder)
        tensors = load_file(folder / "model.safetensors")
        tensors["transformer.wte.weight"] = tensors["transformer.wte.weight"] * (1 + step / 10)
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return root
