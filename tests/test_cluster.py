"""The cluster runner on real Dask clusters of two worker processes on loopback: a merged run that records what a
serial run records, a worker killed mid-task, a model that fails to load, and tasks placed by the memory they need."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel

from mechclaims.cache import MeasurementCache
from mechclaims.claim import Claim, Threshold
from mechclaims.cluster import MEMORY, Cluster, ModelRun
from mechclaims.engine import Settings
from mechclaims.metrics.orthogonality import token_embedding_cosines
from mechclaims.models.footprint import task_bytes
from mechclaims.models.specs import parse

from helpers import CLAIMS_DIR, trajectory_folder

distributed = pytest.importorskip("distributed")

VOLATILE = ("seconds", "cache_hit")
"""What differs between two runs of the same measurements: the time taken and whether the cache served them."""
KILLING_CLAIMS = '''
import os
import signal
from pathlib import Path

from mechclaims.claim import Claim, Threshold
from mechclaims.metrics.orthogonality import token_embedding_cosines


def cosines_killing_one_worker(source, variant="raw"):
    """VSA-1's measurement; the first call of the run kills its own worker process mid-task (SIGKILL, as the
    out-of-memory killer does). The mark file is created atomically, so exactly one call kills."""
    try:
        Path(os.environ["KILL_MARK"]).touch(exist_ok=False)
    except FileExistsError:
        return token_embedding_cosines(source, variant=variant)
    os.kill(os.getpid(), signal.SIGKILL)


CLAIMS = [
    Claim(id="toy.embed_ratio", paper="toy", section="1", statement="Embeddings are nearly orthogonal.",
          measure=cosines_killing_one_worker, params={"variant": "raw"},
          threshold=Threshold(statistic="mean_abs_ratio", op="<=", value=2.0, origin="suite"),
          trivial_if_null_passes=False, tolerance=0.01),
]
'''


@pytest.fixture
def project(pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("MECHCLAIMS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    return pytester


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "mechclaims.plugin", *args)


def _saved(pytester: pytest.Pytester) -> dict[str, Any]:
    return json.loads((pytester.path / "reports" / "results.json").read_text())


def _steady(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{key: value for key, value in row.items() if key not in VOLATILE} for row in rows]


def _prefixed(tiny_gpt2_dir: Path, folder: Path) -> Path:
    """The tiny checkpoint saved with a `module.` prefix: it passes the checks before loading and fails to load."""
    shutil.copytree(tiny_gpt2_dir, folder)
    tensors = load_file(folder / "model.safetensors")
    save_file({f"module.{key}": value for key, value in tensors.items()}, folder / "model.safetensors",
              metadata={"format": "pt"})
    return folder


def test_a_cluster_run_records_what_a_serial_run_records(project: pytest.Pytester, tiny_gpt2_dir: Path,
                                                         tmp_path: Path) -> None:
    """A model, its null and a three-step training run, measured afresh serially and on a local two-worker cluster,
    both compared with the baselines a first run recorded: the same items pass (claims and regressions), and
    results.json holds the same models, claims and rows (baseline comparisons included) in the same order, all but the
    seconds taken. The cluster run says where each of its five tasks ran, and that none was retried."""
    shutil.copy(CLAIMS_DIR / "test_knittel2024_vsa.py", project.path)
    runs = trajectory_folder(tiny_gpt2_dir, tmp_path / "runs", (1, 2, 10))
    models = ["--model", str(tiny_gpt2_dir), "--model", f"random:{tiny_gpt2_dir}", "--model", str(runs)]
    chosen = ["-k", "embed_raw or embed_diagonal or attn_heads", "--no-cache"]
    _run(project, *models, *chosen, "--update-baselines").assert_outcomes(passed=15)
    serial = _run(project, *models, *chosen)
    expected = _saved(project)
    clustered = _run(project, *models, *chosen, "--cluster")
    saved = _saved(project)
    assert clustered.parseoutcomes() == serial.parseoutcomes() == {"passed": 30, "deselected": 100}
    assert {row["baseline"]["status"] for row in saved["results"]} == {"unchanged"} and len(saved["results"]) == 15
    assert (saved["models"], saved["claims"]) == (expected["models"], expected["claims"])
    assert _steady(saved["results"]) == _steady(expected["results"])
    assert "cluster" not in expected["run"]
    cluster = saved["run"]["cluster"]
    assert cluster["local"] and cluster["workers"] == 2 and cluster["retried"] == []
    assert list(cluster["tasks"]) == list(expected["models"])
    assert {task["attempts"] for task in cluster["tasks"].values()} == {1}
    assert {task["worker"] for task in cluster["tasks"].values()} <= set(distributed_workers(cluster))
    clustered.stdout.fnmatch_lines(["mechclaims: measured 5 models on the dask.distributed * cluster at tcp://127.0.0.1:*"
                                    " (2 workers); retried: none"])


def distributed_workers(cluster: dict[str, Any]) -> list[str]:
    """The loopback addresses the tasks ran on (each a worker of the local cluster)."""
    workers = [task["worker"] for task in cluster["tasks"].values()]
    assert all(worker.startswith("tcp://127.0.0.1:") for worker in workers)
    return workers


def test_a_worker_killed_mid_task_reruns_the_task_and_a_model_that_fails_to_load_is_an_error_row(
    project: pytest.Pytester, tiny_gpt2_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first measurement of the run kills its worker: Dask runs that task again (with any other task the dead
    worker held) on a worker that lives, every model keeps exactly one row, and the report and the terminal summary
    name the retried tasks. A checkpoint whose
    tensors do not fit its architecture is an ERROR row naming them; the other models are measured."""
    project.makepyfile(test_toy_claims=KILLING_CLAIMS)
    monkeypatch.setenv("KILL_MARK", str(tmp_path / "killed"))
    broken = _prefixed(tiny_gpt2_dir, tmp_path / "prefixed")
    result = _run(project, "--model", str(tiny_gpt2_dir), "--model", f"random:{tiny_gpt2_dir}",
                  "--model", str(broken), "--cluster")
    assert (tmp_path / "killed").is_file()
    result.assert_outcomes(passed=2, failed=1)
    saved = _saved(project)
    rows = {row["model"]: row for row in saved["results"]}
    assert len(saved["results"]) == 3 and set(rows) == {str(tiny_gpt2_dir), f"random:{tiny_gpt2_dir}", str(broken)}
    assert rows[str(broken)]["verdict"] == "ERROR" and "module.transformer" in rows[str(broken)]["reason"]
    assert {rows[model]["verdict"] for model in rows if model != str(broken)} == {"PASS"}
    cluster = saved["run"]["cluster"]
    retried = cluster["retried"]
    assert set(retried) & {str(tiny_gpt2_dir), f"random:{tiny_gpt2_dir}"}
    assert all(cluster["tasks"][spec]["attempts"] == 2 for spec in retried)
    assert all(task["attempts"] == 1 for spec, task in cluster["tasks"].items() if spec not in retried)
    listed = ", ".join(f"{spec} (2 attempts)" for spec in retried)
    result.stdout.fnmatch_lines([f"mechclaims: measured 3 models on * cluster at *; retried: {listed}"])
    report = (project.path / "reports" / "report.html").read_text()
    assert 'id="retried"' in report and all(f"<code>{spec}</code> (2 attempts)" in report for spec in retried)


def _wide_gpt2(tiny_gpt2_dir: Path, folder: Path, layers: int) -> Path:
    """A GPT-2 checkpoint of `layers` layers of width 512 (3.2M parameters each) with the tiny checkpoint's
    tokenizer: a model whose memory estimate grows with `layers`."""
    torch.manual_seed(layers)
    GPT2LMHeadModel(GPT2Config(n_layer=layers, n_head=8, n_embd=512, vocab_size=300, n_positions=32, bos_token_id=0,
                               eos_token_id=0)).save_pretrained(folder, safe_serialization=True)
    for tokenizer_file in tiny_gpt2_dir.glob("*token*"):
        shutil.copy(tokenizer_file, folder)
    return folder


@pytest.fixture
def uneven_cluster(tiny_gpt2_dir: Path, tmp_path: Path) -> Any:
    """A scheduler on loopback with a small worker, whose MEMORY holds the tiny checkpoint's task, and a large one,
    whose MEMORY holds a 3-layer wide checkpoint's; joined by its address, as --cluster ADDRESS joins one. Yields the
    Cluster, the workers' addresses and the checkpoints by size."""
    models = {"small": tiny_gpt2_dir, "large": _wide_gpt2(tiny_gpt2_dir, tmp_path / "large", 3),
              "huge": _wide_gpt2(tiny_gpt2_dir, tmp_path / "huge", 6)}
    needs = {name: task_bytes(parse(str(folder))) for name, folder in models.items()}
    assert needs["small"] < needs["large"] < needs["huge"]
    with distributed.LocalCluster(n_workers=0, processes=True, host="127.0.0.1", dashboard_address=None) as local:
        with distributed.Client(local) as client:
            workers = {name: client.sync(distributed.Nanny, local.scheduler_address, nthreads=1, host="127.0.0.1",
                                         resources={MEMORY: needs[name]}) for name in ("small", "large")}
            client.wait_for_workers(2)
            cluster = Cluster.connect(local.scheduler_address)
            try:
                yield cluster, {name: worker.worker_address for name, worker in workers.items()}, models, needs
            finally:
                cluster.close()
                for worker in workers.values():
                    client.sync(worker.close)


def test_tasks_ask_for_the_memory_their_model_needs_and_a_model_no_worker_can_hold_is_an_error(
    uneven_cluster: Any
) -> None:
    """The wide checkpoint's task (estimated from its parameter count) runs only on the worker that can hold it,
    whichever is free; a checkpoint larger than every worker is refused before it runs, naming the memory to
    declare, and the small one runs as well."""
    cluster, workers, models, needs = uneven_cluster
    claim = Claim(id="toy.embed", paper="toy", section="1", statement="s", measure=token_embedding_cosines,
                  params={"variant": "raw"}, trivial_if_null_passes=False,
                  threshold=Threshold(statistic="mean_abs_ratio", op="<=", value=2.0, origin="suite"))
    settings = Settings(cache=MeasurementCache(enabled=False))
    for name in ("large", "huge", "small"):
        cluster.submit(str(models[name]), [claim], settings)
    large, huge, small = (cluster.wait(str(models[name])) for name in ("large", "huge", "small"))
    assert isinstance(large, ModelRun) and large.worker == workers["large"]
    assert isinstance(small, ModelRun) and small.worker in workers.values()
    assert isinstance(huge, str) and f"--resources {MEMORY}={needs['huge']} or more" in huge
    described = cluster.describe()
    assert described["placed_by_memory"] and described["tasks"][str(models["huge"])]["attempts"] == 0
