"""The report opened in headless Chromium: it renders, one matrix row per claim, no injected markup."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mechclaims.report import render_report
from tests.test_report_html import SCRIPT_TOKEN, synthetic_results

pytestmark = pytest.mark.browser
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)


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


def test_report_screenshot_is_a_picture(chromium: str, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    render_report(synthetic_results(), report)
    shot = tmp_path / "report.png"
    _chromium(chromium, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2000", report.as_uri())
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


IMAGE_PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  document.body.dataset.images = JSON.stringify(images.map(i => [i.alt, i.complete && i.naturalWidth > 0]));
});
</script>"""


def test_sweeps_and_model_columns_render_as_pictures(chromium: str, tmp_path: Path) -> None:
    """Every figure (sweep curves per model, the heatmap) decodes in the browser, the matrix has a column
    per model and marks the result that changed since its baseline."""
    results = synthetic_results()
    report = tmp_path / "report.html"
    render_report(results, report)
    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text().replace("</body>", IMAGE_PROBE + "</body>"))
    dom = _chromium(chromium, tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom",
                    probed.as_uri()).stdout
    images = re.search(r'data-images="([^"]*)"', dom)
    assert images is not None, "the page did not finish loading"
    decoded = json.loads(html.unescape(images.group(1)))
    assert len(decoded) == 10 and all(loaded for _, loaded in decoded)
    alts = [alt for alt, _ in decoded]
    assert "sweep of the threshold on 2 models" in alts and "sweep of the cut-off and max_tokens" in alts
    header = re.search(r'<table id="matrix">\s*<thead>(.*?)</thead>', dom, flags=re.S)
    assert header is not None and len(re.findall(r"<th>", header.group(1))) == 2 + len(results["models"])
    assert len(re.findall(r'class="changed"', dom)) == 1
