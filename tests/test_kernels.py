"""The product-kernel probe: CPU flags read from cpuinfo, a forced kernel, and the choice recorded in provenance."""

from __future__ import annotations

from pathlib import Path

import pytest

from mechclaims import kernels
from mechclaims.errors import MechclaimsError
from mechclaims.results import RunRecord


def test_bfloat16_flags_are_read_from_the_first_processor(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_tile\n\n"
                       "processor\t: 1\nflags\t: amx_bf16\n")
    assert kernels.cpu_bf16_flags(cpuinfo) == ("avx512_bf16",)
    assert kernels.cpu_bf16_flags(tmp_path / "absent") == ()


def test_without_bfloat16_units_the_float32_kernel_runs_unprobed() -> None:
    chosen = kernels.choose(None, ())
    assert (chosen.name, chosen.gflops) == ("float32", {})


@pytest.mark.parametrize("name", kernels.KERNELS)
def test_a_forced_kernel_is_taken_as_given(name: str) -> None:
    chosen = kernels.choose(name, ("avx512_bf16",))
    assert chosen.name == name
    assert kernels.KERNEL_ENV in chosen.reason


def test_an_unknown_forced_kernel_is_a_one_line_error() -> None:
    with pytest.raises(MechclaimsError, match=r"KERNEL='fp8' is not a product kernel: use float32 or bfloat16"):
        kernels.choose("fp8", ())


def test_the_probe_takes_bfloat16_only_when_it_is_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    speeds = {"float32": 100.0, "bfloat16": 120.0}
    monkeypatch.setattr(kernels, "product_gflops", lambda dtype: speeds[str(dtype).removeprefix("torch.")])
    assert kernels.choose(None, ("amx_bf16",)).name == "float32"
    speeds["bfloat16"] = 250.0
    chosen = kernels.choose(None, ("amx_bf16",))
    assert chosen.name == "bfloat16"
    assert chosen.gflops == speeds
    assert "2.50x" in chosen.reason


def test_the_probe_measures_a_product() -> None:
    assert kernels.product_gflops(kernels.torch.float32, shape=(64, 32, 64), rounds=1) > 0


def test_the_run_provenance_records_the_kernel() -> None:
    recorded = RunRecord().provenance()["product_kernel"]
    assert recorded == kernels.product_kernel().to_json()
    assert recorded["name"] in kernels.KERNELS
