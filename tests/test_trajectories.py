"""Training trajectories: checkpoint folders and hub revisions as models, and claims read along training steps."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from mechclaims.__main__ import main
from mechclaims.errors import MechclaimsError
from mechclaims.models import check_spec
from mechclaims.models.specs import expanded, parse
from mechclaims.trajectories import checkpoint_folders, point_of, trajectories

from helpers import CLAIMS_DIR, trajectory_folder


def _row(model: str, claim: str = "paper.claim", statistic: float = 0.5, verdict: str = "PASS") -> dict[str, Any]:
    return {"model": model, "claim": claim, "verdict": verdict, "statistic": statistic, "null_statistic": 0.1,
            "interval": None, "null_interval": None,
            "threshold": {"statistic": "mean_abs", "op": "<=", "value": 0.6, "origin": "paper"}}


def test_checkpoint_folders_are_ordered_by_step_number(tmp_path: Path) -> None:
    for name in ("checkpoint-10", "checkpoint-2", "checkpoint-1", "checkpoint-x", "runs"):
        (tmp_path / name).mkdir()
    (tmp_path / "checkpoint-3").write_text("a file, not a checkpoint")
    assert [path.name for path in checkpoint_folders(tmp_path)] == ["checkpoint-1", "checkpoint-2", "checkpoint-10"]


@pytest.mark.parametrize(("model", "point"), [
    ("runs/tiny/checkpoint-100", ("runs/tiny", 100)),
    ("/abs/path/checkpoint-0", ("/abs/path", 0)),
    ("EleutherAI/pythia-70m@step1000", ("EleutherAI/pythia-70m", 1000)),
    ("random:runs/tiny/checkpoint-5", ("random:runs/tiny", 5)),
    ("gpt2", None),
    ("EleutherAI/pythia-70m@main", None),
    ("runs/checkpoint-final", None),
    ("sorting:ci@3/250", ("sorting:ci@3", 250)),
    ("random:sorting:ci@0/0", ("random:sorting:ci@0", 0)),
    ("sorting:ci@0/shuffled", None),
    ("sorting:ci@0", None),
])
def test_a_model_name_says_whether_it_is_a_training_checkpoint(model: str, point: tuple[str, int] | None) -> None:
    assert point_of(model) == point


def test_trajectories_group_rows_by_run_and_claim_in_step_order() -> None:
    results = {"results": [
        _row("d/checkpoint-10", statistic=0.3), _row("d/checkpoint-2", statistic=0.7, verdict="FAIL"),
        _row("d/checkpoint-2", claim="paper.other"), _row("d/checkpoint-10", claim="paper.other"),
        _row("gpt2"), _row("e/checkpoint-1"),
    ]}
    found = trajectories(results)
    assert [(t.name, t.claim, t.steps) for t in found] == [("d", "paper.claim", [2, 10]), ("d", "paper.other", [2, 10])]
    assert [(p.model, p.verdict, p.statistic) for p in found[0].points] == [
        ("d/checkpoint-2", "FAIL", 0.7), ("d/checkpoint-10", "PASS", 0.3)]
    assert found[0].threshold["value"] == 0.6


def test_a_checkpoint_folder_is_one_model_per_step_and_its_report_draws_each_claim_along_training(
    pytester: pytest.Pytester, tiny_gpt2_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--model <folder of checkpoint-1, -2, -10>` measures each step as its own model, in step order (and its
    random: null per step); the report, live or re-rendered from results.json, draws each claim against the step
    with a table of the steps' verdicts."""
    shutil.copy(CLAIMS_DIR / "test_knittel2024_vsa.py", pytester.path)
    monkeypatch.setenv("MECHCLAIMS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    runs = trajectory_folder(tiny_gpt2_dir, tmp_path / "runs", (10, 1, 2))
    result = pytester.runpytest_subprocess("-p", "mechclaims.plugin", "--model", str(runs), "-k",
                                           "embed_raw or embed_diagonal", "--collect-only", "-q")
    steps = [f"{runs}/checkpoint-{step}" for step in (1, 2, 10)]
    assert [line.split("[", 1)[1][:-1] for line in result.outlines if "::knittel2024.embed_raw" in line] == steps
    pytester.runpytest_subprocess("-p", "mechclaims.plugin", "--model", str(runs), "-k", "embed_raw or embed_diag")
    saved = json.loads((pytester.path / "reports" / "results.json").read_text())
    assert list(saved["models"]) == steps and len({m["fingerprint"] for m in saved["models"].values()}) == 3
    report = (pytester.path / "reports" / "report.html").read_text()
    rerendered = tmp_path / "again.html"
    assert main(["report", str(pytester.path / "reports" / "results.json"), "--out", str(rerendered)]) == 0
    for page in (report, rerendered.read_text()):
        for claim in ("knittel2024.embed_raw_orthogonal", "knittel2024.embed_diagonal_dominance"):
            assert page.count(f'alt="{claim} against training step"') == 1
        assert page.count(f"<h3>Along training: {runs}</h3>") == 2
        rows = re.findall(r"<tr><td>(\d+)</td><td>([^<]+)</td>", page)
        assert rows == [(str(step), model) for step, model in zip((1, 2, 10), steps)] * 2


def test_a_folder_of_checkpoints_named_alone_says_how_to_measure_it(tiny_gpt2_dir: Path, tmp_path: Path) -> None:
    runs = trajectory_folder(tiny_gpt2_dir, tmp_path / "runs", (5, 50))
    with pytest.raises(MechclaimsError) as info:
        check_spec(str(runs))
    assert str(info.value) == (f"{runs} holds 2 training checkpoints (checkpoint-5 to checkpoint-50), not one model: "
                               f"measure one ({runs}/checkpoint-50) or every step with pytest claims --model {runs}")
    assert [spec.text for spec in expanded(parse(f"random:{runs}"))] == [f"random:{runs}/checkpoint-5",
                                                                         f"random:{runs}/checkpoint-50"]


def test_a_sorting_run_along_training_is_one_model_per_saved_step_from_its_initialisation() -> None:
    """`sorting:ci@0/steps` is the run's untrained initialisation and every checkpoint it saves (each
    `checkpoint_every` steps up to the last), in step order, also under random: and for a family; named alone (as
    `evaluate` would) it says how to measure it."""
    steps = [0, *range(250, 3001, 250)]
    assert [spec.text for spec in expanded(parse("sorting:ci@0/steps"))] == [f"sorting:ci@0/{s}" for s in steps]
    assert [spec.text for spec in expanded(parse("random:sorting:ci@0-1/steps"))] == [
        f"random:sorting:ci@0-1/{s}" for s in steps]
    assert [point_of(spec.text) for spec in expanded(parse("sorting:ci@2/steps"))] == [("sorting:ci@2", s)
                                                                                        for s in steps]
    with pytest.raises(MechclaimsError, match=r"^sorting:ci@0/steps names every saved step of sorting:ci@0, not one "
                                              r"model: .* --model sorting:ci@0/steps$"):
        check_spec("sorting:ci@0/steps")
