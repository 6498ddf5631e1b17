"""The report opened in headless Chromium: it renders, one matrix row per claim painted in its verdict colours, no
injected markup."""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mechclaims.report import render_report

from helpers import CLAIMS_DIR, SCRIPT_TOKEN, synthetic_results, trajectory_folder

pytestmark = pytest.mark.browser
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)
WINDOW = ("--window-size=1280,2000", "--force-device-scale-factor=1", "--hide-scrollbars")
IMAGE_PROBE = "[...document.images].map(i => [i.alt, i.complete && i.naturalWidth > 0])"
MATRIX_PROBE = """[...document.querySelectorAll("#matrix tbody td[class^=verdict-]")].map(td => {
  const box = td.getBoundingClientRect();
  return [td.className, box.left, box.top, box.right, box.bottom];
})"""
VERDICT_CLASSES = {"verdict-PASS", "verdict-FAIL", "verdict-NA", "verdict-TRIVIAL"}


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = shutil.which("chromium")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium not installed: .ci/run installs the Debian packages chromium and chromium-driver")
        pytest.skip("chromium not installed (apt-get install chromium chromium-driver)")
    return binary


def _chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120, check=True,
    )


def test_report_renders_with_one_row_per_claim_and_inert_token_strings(chromium: str, tmp_path: Path) -> None:
    results = synthetic_results()
    report = tmp_path / "report.html"
    render_report(results, report)
    dom = _chromium(chromium, tmp_path / "profile", "--dump-dom", report.as_uri()).stdout
    assert re.search(r"<title>mechclaims report abc123</title>", dom)
    matrix = re.search(r'<table id="matrix">.*?<tbody>(.*?)</tbody>', dom, flags=re.S)
    assert matrix is not None
    assert len(re.findall(r'<tr class="claim-row">', matrix.group(1))) == len(results["claims"])
    assert "<script" not in dom and "pwned</title>" not in dom
    assert "&lt;script&gt;document.title=\"pwned\"&lt;/script&gt;" in dom
    assert SCRIPT_TOKEN not in dom


def _probed(chromium: str, report: Path, profile: Path, probe: str) -> tuple[Path, Any]:
    """The report with a script that keeps the JSON of the expression `probe` once the page has loaded, and that
    JSON as the browser left it in the DOM."""
    probed = report.with_name("probed.html")
    script = f'addEventListener("load", () => {{ document.body.dataset.probe = JSON.stringify({probe}); }});'
    probed.write_text(report.read_text().replace("</body>", f"<script>{script}</script></body>"))
    dom = _chromium(chromium, profile, "--virtual-time-budget=10000", *WINDOW, "--dump-dom", probed.as_uri()).stdout
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found is not None, "the page did not finish loading"
    return probed, json.loads(html.unescape(found.group(1)))


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return int(hex_colour[0:2], 16), int(hex_colour[2:4], 16), int(hex_colour[4:6], 16)


def test_report_screenshot_shows_the_matrix_in_verdict_colours(chromium: str, tmp_path: Path) -> None:
    """In a screenshot, most pixels of each matrix cell have the CSS colour of the cell's verdict: a blank page,
    a page without the matrix or without its styles fails."""
    report = tmp_path / "report.html"
    render_report(synthetic_results(), report)
    colours = dict(re.findall(r"\.(verdict-\w+) \{ background: #([0-9a-f]{6}); \}", report.read_text()))
    assert VERDICT_CLASSES <= colours.keys()
    probed, cells = _probed(chromium, report, tmp_path / "profile", MATRIX_PROBE)
    assert sorted(name for name, *_ in cells) == sorted(VERDICT_CLASSES)
    shot = tmp_path / "report.png"
    _chromium(chromium, tmp_path / "profile", f"--screenshot={shot}", *WINDOW, probed.as_uri())
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    for name, left, top, right, bottom in cells:
        cell = pixels[math.ceil(top):math.floor(bottom), math.ceil(left):math.floor(right)].reshape(-1, 3)
        share = np.all(cell == _rgb(colours[name]), axis=1).mean() if cell.size else 0.0
        assert share > 0.5, f"{name}: {share:.0%} of the cell's pixels have its verdict colour"


def _decoded_images(chromium: str, report: Path, profile: Path) -> list[tuple[str, bool]]:
    """(alt, decoded) for every image of the report once the browser has loaded it."""
    _, images = _probed(chromium, report, profile, IMAGE_PROBE)
    return [(alt, loaded) for alt, loaded in images]


def test_sweeps_and_model_columns_render_as_pictures(chromium: str, tmp_path: Path) -> None:
    """Every figure (sweep curves per model, the heatmap) decodes in the browser, the matrix has a column
    per model and marks the result that changed since its baseline."""
    results = synthetic_results()
    report = tmp_path / "report.html"
    render_report(results, report)
    decoded = _decoded_images(chromium, report, tmp_path / "profile")
    assert len(decoded) == 10 and all(loaded for _, loaded in decoded)
    alts = [alt for alt, _ in decoded]
    assert "sweep of the threshold on 2 models" in alts and "sweep of the cut-off and max_tokens" in alts
    dom = report.read_text()
    header = re.search(r'<table id="matrix">\s*<thead>(.*?)</thead>', dom, flags=re.S)
    assert header is not None and len(re.findall(r"<th>", header.group(1))) == 2 + len(results["models"])
    assert len(re.findall(r'class="changed"', dom)) == 1


def test_a_real_two_model_run_with_sweeps_renders(chromium: str, pytester: pytest.Pytester, tiny_gpt2_dir: Path,
                                                  tiny_llama_dir: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The claims on two checkpoints with a threshold sweep and a cut-off x max_tokens sweep: the report's
    matrix has both columns, and every figure, the per-model sweep and the heatmaps among them, decodes."""
    shutil.copy(CLAIMS_DIR / "test_knittel2024_vsa.py", pytester.path)
    monkeypatch.setenv("MECHCLAIMS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    claim = "knittel2024.mlp0_token_bundles"
    pytester.runpytest_subprocess("-p", "mechclaims.plugin", "--model", str(tiny_gpt2_dir), "--model",
                                  str(tiny_llama_dir), "-k", "mlp0_token or wout", "--sweep", f"{claim}=0.2:0.8:0.1",
                                  "--sweep", f"{claim}:max_tokens=1:9:2")
    report = pytester.path / "reports" / "report.html"
    decoded = _decoded_images(chromium, report, tmp_path / "profile")
    assert decoded and all(loaded for _, loaded in decoded)
    alts = [alt for alt, _ in decoded]
    assert alts.count("sweep of the threshold on 2 models") == 2
    assert alts.count("sweep of the cut-off and max_tokens") == 4
    header = re.search(r'<table id="matrix">\s*<thead>(.*?)</thead>', report.read_text(), flags=re.S)
    assert header is not None and str(tiny_gpt2_dir) in header.group(1) and str(tiny_llama_dir) in header.group(1)


def test_circuit_heatmap_and_per_head_figures_render(chromium: str, tmp_path: Path) -> None:
    """A sparse-attention row's traced circuit (networkx), singular-vector heatmap and per-head histograms
    decode in the browser; its edge table prints model-provided node names as text."""
    results = synthetic_results()
    details = {
        "circuit_edges": [{"from": "1.4@S2", "to": "3.0@end", "weight": 1.2, "count": 20, "side": "dest"},
                          {"from": f"0.1@{SCRIPT_TOKEN}", "to": "1.4@S2", "weight": 0.5, "count": 9, "side": "src"}],
        "sv_use": {"head": "3.0", "rank": 16, "rows": [[0, 2], [0, 3, 5], [1]]},
        "head_distributions": {"3.0": [0.1, 0.2, 0.1], "1.4": [0.3, 0.05]},
    }
    row = results["results"][0]
    row["measurement"] = {**row["measurement"], "details": details}
    report = tmp_path / "report.html"
    render_report(results, report)
    decoded = _decoded_images(chromium, report, tmp_path / "profile")
    alts = [alt for alt, loaded in decoded if loaded]
    assert len(alts) == len(decoded) == 13
    assert {"traced circuit graph", "singular-vector use of head 3.0", "per-head distributions, model vs null"} <= set(alts)
    dom = report.read_text()
    assert SCRIPT_TOKEN not in dom and "&lt;script&gt;" in dom and "sv_use" not in dom


def test_category_heatmap_layer_curve_and_jacobian_table_render(chromium: str, tmp_path: Path) -> None:
    """A dynamics row's category-cosine heatmap and AUROC-per-layer curve (real beside null) decode in the
    browser; its dropped-words and Jacobian tables print as tables, with category names as text."""
    results = synthetic_results()
    curve = {"x": [0, 1, 2, 3], "y": [0.5, 0.8, 0.75, 0.6], "x_label": "layer", "y_label": "AUROC"}
    details = {
        "category_cosines": {"categories": ["months", SCRIPT_TOKEN], "matrix": [[0.6, 0.1], [0.1, 0.5]]},
        "words_per_category": [{"category": SCRIPT_TOKEN, "kept": 3, "dropped words": "knee", "note": "dropped"}],
        "jacobian_norms": [{"component": "mlp", "layer": 0, "same-position norm": 2.0, "cross-position norm": 0.0,
                            "cross share": 0.0}],
    }
    row = results["results"][0]
    row["measurement"] = {**row["measurement"], "details": details, "curves": {"auroc_by_layer": curve}}
    row["null"] = {**row["null"], "curves": {"auroc_by_layer": {**curve, "y": [0.5, 0.5, 0.52, 0.49]}}}
    report = tmp_path / "report.html"
    render_report(results, report)
    decoded = _decoded_images(chromium, report, tmp_path / "profile")
    alts = [alt for alt, loaded in decoded if loaded]
    assert len(alts) == len(decoded)
    assert {"mean cosine between token categories", "AUROC against layer, model vs null"} <= set(alts)
    dom = report.read_text()
    assert SCRIPT_TOKEN not in dom and "&lt;script&gt;" in dom and "category_cosines" not in dom
    assert "jacobian norms (1 rows)" in dom and "words per category (1 rows)" in dom


def test_claims_along_training_render_as_pictures_and_a_step_table(chromium: str, tmp_path: Path) -> None:
    """Three steps of one training run (`runs/checkpoint-<step>`, step 1 failing): each claim's curve against the
    step decodes in the browser, and its table lists the steps in order with their verdict colours."""
    results = synthetic_results()
    claim = "knittel2024.embed_raw_orthogonal"
    row = next(r for r in results["results"] if r["claim"] == claim and r["verdict"] == "PASS")
    results["results"] = [{**row, "model": f"runs/checkpoint-{step}", "statistic": statistic, "verdict": verdict}
                          for step, statistic, verdict in ((100, 1.2, "PASS"), (1, 2.5, "FAIL"), (10, 1.5, "PASS"))]
    results["models"] = {r["model"]: results["models"]["smollm2-135m"] for r in results["results"]}
    report = tmp_path / "report.html"
    render_report(results, report)
    decoded = _decoded_images(chromium, report, tmp_path / "profile")
    assert (f"{claim} against training step", True) in decoded and all(loaded for _, loaded in decoded)
    steps = re.findall(r'<tr><td>(\d+)</td><td>[^<]+</td><td class="verdict-(\w+)">', report.read_text())
    assert steps == [("1", "FAIL"), ("10", "PASS"), ("100", "PASS")]


def test_a_trajectory_and_a_zoo_measured_on_a_local_cluster_render_as_one_report(
    chromium: str, pytester: pytest.Pytester, tiny_gpt2_dir: Path, tiny_llama_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three steps of a training run and two architectures with their nulls, on a local two-worker Dask cluster: one
    report, whose figures (the claims along training among them) decode in the browser, whose matrix has a column
    per model and whose table of cluster tasks has one row per model, each with the worker that ran it."""
    pytest.importorskip("distributed")
    shutil.copy(CLAIMS_DIR / "test_knittel2024_vsa.py", pytester.path)
    monkeypatch.setenv("MECHCLAIMS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    runs = trajectory_folder(tiny_gpt2_dir, tmp_path / "runs", (1, 2, 10))
    zoo = [str(tiny_gpt2_dir), f"random:{tiny_gpt2_dir}", str(tiny_llama_dir), f"random:{tiny_llama_dir}"]
    pytester.runpytest_subprocess("-p", "mechclaims.plugin", "--model", str(runs), *(f"--model={m}" for m in zoo),
                                  "-k", "embed_raw or embed_diagonal", "--cluster")
    report = pytester.path / "reports" / "report.html"
    decoded = _decoded_images(chromium, report, tmp_path / "profile")
    alts = [alt for alt, _ in decoded]
    assert decoded and all(loaded for _, loaded in decoded)
    assert alts.count("knittel2024.embed_raw_orthogonal against training step") == 1
    dom = _chromium(chromium, tmp_path / "profile", "--dump-dom", report.as_uri()).stdout
    header = re.search(r'<table id="matrix">\s*<thead>(.*?)</thead>', dom, flags=re.S)
    assert header is not None and len(re.findall(r"<th>", header.group(1))) == 2 + 7
    tasks = re.search(r'<table id="cluster-tasks">.*?<tbody>(.*?)</tbody>', dom, flags=re.S)
    assert tasks is not None
    rows = re.findall(r"<tr><td><code>([^<]+)</code></td><td>(tcp://127\.0\.0\.1:\d+)</td><td>1</td>", tasks.group(1))
    assert [model for model, _ in rows] == [f"{runs}/checkpoint-{step}" for step in (1, 2, 10)] + zoo
    assert 'id="cluster"' in dom and "2 workers" in dom
