"""The GitHub Actions workflow cannot run here, so its structure is checked by parsing it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mechclaims.models import BUNDLED, check_spec

WORKFLOW = Path(__file__).resolve().parents[1] / ".github" / "workflows" / "claims.yml"


@pytest.fixture(scope="module")
def job() -> dict[str, Any]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert set(workflow["jobs"]) == {"claims"}
    return workflow["jobs"]["claims"]


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


def test_bundled_models_are_compared_with_their_committed_baselines(job: dict[str, Any]) -> None:
    """A step per model runs only the regression items (measurements come from the cache the claims step
    filled), for every model that has a baseline; the bundled models have one."""
    (step,) = [step for step in job["steps"] if "-m regression" in step.get("run", "")]
    assert step["if"].startswith("always()") and "reports/baselines/{0}.json" in step["if"]
    assert '--model "${{ matrix.model }}"' in step["run"]
    baselines = WORKFLOW.parents[2] / "reports" / "baselines"
    for name in BUNDLED:
        assert (baselines / f"{name}.json").is_file()
