"""`pip install mechclaims` is enough: a project outside this repository, with its own claims module and
no conftest, runs its claim through the installed pytest11 entry point."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest

OWN_CLAIMS = '''
from mechclaims.claim import Claim, Threshold
from mechclaims.measurement import Measurement


def embedding_norm_spread(source, quantile=0.5):
    """Their own metric: the ratio of the largest to the median token-embedding norm."""
    import numpy as np

    norms = np.linalg.norm(source.weights("raw").W_E, axis=1)
    return Measurement(statistics={"spread": float(norms.max() / np.quantile(norms, quantile))})


CLAIMS = [
    Claim(id="theirs.norm_spread", paper="theirs", section="1", statement="Embedding norms are alike.",
          measure=embedding_norm_spread, threshold=Threshold(statistic="spread", op="<=", value=100.0, origin="suite")),
]
'''


def test_the_entry_point_is_installed() -> None:
    plugins = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="pytest11")}
    assert plugins.get("mechclaims.plugin") == "mechclaims.plugin"


def test_a_project_outside_the_repo_runs_its_own_claim(pytester: pytest.Pytester, tiny_gpt2_dir: Path,
                                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MECHCLAIMS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    assert not (pytester.path / "conftest.py").exists()
    assert Path(__file__).resolve().parents[1] not in pytester.path.resolve().parents
    pytester.makepyfile(test_their_claims=OWN_CLAIMS)
    result = pytester.runpytest_subprocess("--model", str(tiny_gpt2_dir), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    (row,) = json.loads((pytester.path / "reports" / "results.json").read_text())["results"]
    assert row["claim"] == "theirs.norm_spread" and row["verdict"] in ("PASS", "TRIVIAL")
    disabled = pytester.runpytest_subprocess("--model", str(tiny_gpt2_dir), "-p", "no:mechclaims.plugin")
    assert disabled.ret == pytest.ExitCode.USAGE_ERROR
