"""Benchmark results: ratios read from pytest-benchmark JSON, the baseline check, the README table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mechclaims import bench
from mechclaims.__main__ import main
from mechclaims.errors import MechclaimsError


def results(speedup: float, bf16: bool = True) -> dict:
    entries = [{"name": "test_float32", "extra_info": {"speedup_vs_reference": speedup, "seconds": 2.5,
                                                        "product_gflops_vs_float32_matmul": 0.9, "kernel": "float32"}}]
    if bf16:
        entries.append({"name": "test_bfloat16",
                        "extra_info": {"speedup_vs_float32_kernel": 2.0, "cpu_bf16_flags": ["x"]}})
    return {"datetime": "2026-11-27T12:00:00", "benchmarks": entries,
            "machine_info": {"cpu": {"brand_raw": "Test CPU"},
                             "mechclaims": {"torch_threads": 2, "product_kernel": {
                                 "name": "bfloat16", "reason": "probe", "cpu_flags": ["avx512_bf16"]}}}}


def write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_ratios_are_the_speedup_keys_of_each_benchmark() -> None:
    assert bench.ratios(results(4.0)) == {"test_float32:speedup_vs_reference": 4.0,
                                          "test_bfloat16:speedup_vs_float32_kernel": 2.0}


def test_a_ratio_more_than_20_percent_below_its_baseline_is_a_regression() -> None:
    baseline = {"a:speedup": 4.0, "b:speedup": 2.0, "skipped:speedup": 9.0}
    assert bench.regressions({"a:speedup": 3.3, "b:speedup": 1.5}, baseline) == [
        "b:speedup: 1.50 < 1.60 (baseline 2.00 - 20%)"]


def test_check_fails_on_a_regression_and_passes_within_tolerance(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    baseline = write(tmp_path / "baseline.json", bench.ratios(results(4.0)))
    assert main(["bench", "check", str(write(tmp_path / "now.json", results(3.5))), str(baseline)]) == 0
    assert main(["bench", "check", str(write(tmp_path / "slow.json", results(3.0))), str(baseline)]) == 2
    err = capsys.readouterr().err
    assert "bench regression: test_float32:speedup_vs_reference: 3.00 < 3.20" in err
    assert "error: 1 benchmark ratios fell more than 20% below" in err
    assert main(["bench", "check", str(write(tmp_path / "cpu.json", results(4.0, bf16=False))), str(baseline)]) == 0


def test_unreadable_results_and_baselines_are_one_line_errors(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "b.json", {})
    assert main(["bench", "check", str(tmp_path / "absent.json"), str(tmp_path / "b.json")]) == 2
    assert "run `tox -e bench` first" in capsys.readouterr().err
    with pytest.raises(MechclaimsError, match="is not pytest-benchmark JSON"):
        bench.load(write(tmp_path / "other.json", {"results": []}))
    assert main(["bench", "check", str(write(tmp_path / "ok.json", results(4.0))), str(tmp_path / "none.json")]) == 2
    assert "write one with `python -m mechclaims bench baseline" in capsys.readouterr().err


def test_the_table_lists_each_benchmark_with_its_ratios_and_the_machine() -> None:
    rendered = bench.table(results(4.25))
    assert "Test CPU, 2 torch threads, bfloat16 flags avx512_bf16; product kernel bfloat16 (probe)" in rendered
    row = "| `test_float32` | speedup_vs_reference 4.25 | seconds 2.5, product_gflops_vs_float32_matmul 0.9 |"
    assert row in rendered
    assert "| `test_bfloat16` | speedup_vs_float32_kernel 2 | - |" in rendered


def test_the_readme_table_is_replaced_between_its_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{bench.TABLE_START}\nold\n{bench.TABLE_END}\nafter\n")
    assert main(["bench", "table", str(write(tmp_path / "r.json", results(4.0))), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("before\n") and text.endswith(f"{bench.TABLE_END}\nafter\n")
    assert "old" not in text and "`test_float32`" in text
    with pytest.raises(MechclaimsError, match="has no bench table markers"):
        bench.write_table(write(tmp_path / "plain.md", "no markers"), "x")
