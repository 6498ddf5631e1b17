"""The GitHub Actions workflow cannot run here, so its structure is checked by parsing it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mechclaims.baselines import DEFAULT_DIR
from mechclaims.models import BUNDLED, check_spec

from helpers import synthetic_results

WORKFLOW = Path(__file__).resolve().parents[1] / ".github" / "workflows" / "claims.yml"


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    assert set(jobs) == {"claims", "merge"}
    return jobs


@pytest.fixture(scope="module")
def job(workflow: dict[str, Any]) -> dict[str, Any]:
    return workflow["claims"]


def _step(job: dict[str, Any], uses: str) -> list[dict[str, Any]]:
    return [step for step in job["steps"] if step.get("uses", "").startswith(uses)]


def test_matrix_holds_valid_specs_including_the_bundled_models(job: dict[str, Any]) -> None:
    models = job["strategy"]["matrix"]["model"]
    assert set(BUNDLED) <= set(models)
    for spec in models:
        check_spec(spec, probe_hub=False)
    assert job["strategy"]["fail-fast"] is False


def test_hugging_face_and_measurement_caches_persist_per_model(job: dict[str, Any]) -> None:
    caches = {step["with"]["path"]: step["with"]["key"] for step in _step(job, "actions/cache@")}
    assert caches.keys() == {job["env"]["HF_HOME"], job["env"]["MECHCLAIMS_CACHE_DIR"]}
    assert all("${{ matrix.model }}" in key for key in caches.values())


def test_runs_the_main_job_per_model_and_uploads_its_report(job: dict[str, Any]) -> None:
    runs = [step["run"] for step in job["steps"] if "run" in step]
    assert any("tox -e claims" in run and '--model "${{ matrix.model }}"' in run for run in runs)
    upload = _step(job, "actions/upload-artifact@")
    assert len(upload) == 1 and upload[0]["if"] == "always()"
    assert upload[0]["with"]["path"] == "reports/${{ matrix.model }}"
    assert "download.pytorch.org/whl/cpu" in job["env"]["PIP_EXTRA_INDEX_URL"]


def test_each_model_is_gated_by_one_command_against_its_committed_baseline(job: dict[str, Any]) -> None:
    """One step per model runs the claims with their regression items (the default baselines folder holds the model's
    baseline, so known findings are expected failures): no separate regression step, no --findings-fail, and every
    model of the matrix, the bundled ones among them, has a committed baseline (a model without one would fail on
    each of its findings)."""
    (gate,) = [step for step in job["steps"] if "tox" in step.get("run", "")]
    assert "if" not in gate and "-m regression" not in gate["run"] and "--findings-fail" not in gate["run"]
    assert "--baseline" not in gate["run"] and "--update-baselines" not in gate["run"]
    baselines = WORKFLOW.parents[2] / "reports" / "baselines"
    assert baselines.resolve() == (WORKFLOW.parents[2] / DEFAULT_DIR).resolve()
    for name in job["strategy"]["matrix"]["model"]:
        assert (baselines / f"{name}.json").is_file()


def test_a_final_job_merges_the_matrix_into_one_report(workflow: dict[str, Any], tmp_path: Path) -> None:
    """After every model's job, pass or fail, one job downloads their reports and merges their results.json files
    into one report: its command, run here on artifacts laid out as download-artifact lays them out, renders every
    model's column."""
    merge = workflow["merge"]
    assert merge["needs"] == "claims" and merge["if"] == "always()"
    (download,) = _step(merge, "actions/download-artifact@")
    (upload,) = _step(merge, "actions/upload-artifact@")
    assert download["with"]["pattern"] == "report-*" and "merge-multiple" not in download["with"]
    uploaded = workflow["claims"]["steps"][-1]["with"]["name"]
    assert uploaded == "report-${{ matrix.model }}" and not upload["with"]["name"].startswith("report-")
    (command,) = [step["run"] for step in merge["steps"] if "mechclaims report" in step.get("run", "")]
    merging = [line for line in command.splitlines() if line.startswith("python -m mechclaims report")]
    assert len(merging) == 1
    models = workflow["claims"]["strategy"]["matrix"]["model"][:2]
    for model in models:
        results = synthetic_results()
        results["run"]["id"] = f"run-{model}"
        only = next(iter(results["models"]))
        results["models"] = {model: results["models"][only]}
        results["results"] = [{**row, "model": model} for row in results["results"] if row["model"] == only]
        folder = tmp_path / download["with"]["path"] / f"report-{model}"
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps(results))
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["bash", "-c", merging[0]], cwd=tmp_path, env=environment, check=True, capture_output=True)
    report = (tmp_path / upload["with"]["path"] / "report.html").read_text()
    header = report.split('<table id="matrix">', 1)[1].split("</thead>", 1)[0]
    assert all(f"<th>{model}</th>" in header for model in models)
