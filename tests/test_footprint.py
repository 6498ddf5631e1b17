"""The memory estimate a cluster task declares: parameters counted from the checkpoint's file headers."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import GPT2LMHeadModel

from mechclaims.models.footprint import ACTIVATIONS, COPIES, FLOAT32_BYTES, UNCOUNTED, parameter_count, task_bytes
from mechclaims.models.specs import parse


def test_the_parameter_count_is_the_checkpoints_and_its_null_has_the_same(tiny_gpt2_dir: Path) -> None:
    """Counted from the safetensors header alone, it equals the loaded model's distinct parameters (the tied
    unembedding once); the `random:` null, drawn with the same shapes, declares the same."""
    loaded = sum(parameter.numel() for parameter in GPT2LMHeadModel.from_pretrained(tiny_gpt2_dir).parameters())
    assert parameter_count(parse(str(tiny_gpt2_dir))) == loaded
    assert parameter_count(parse(f"random:{tiny_gpt2_dir}")) == loaded
    assert task_bytes(parse(str(tiny_gpt2_dir))) == COPIES * FLOAT32_BYTES * loaded + ACTIVATIONS


@pytest.mark.parametrize("spec", ["planted:bundles", "sorting:ci@0/0"])
def test_models_whose_files_cannot_be_counted_declare_the_default(spec: str) -> None:
    assert parameter_count(parse(spec)) is None
    assert task_bytes(parse(spec)) == COPIES * FLOAT32_BYTES * UNCOUNTED + ACTIVATIONS
