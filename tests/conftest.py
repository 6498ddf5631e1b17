"""Shared fixtures: a tiny GPT-2 checkpoint written with save_pretrained, and that checkpoint loaded. Under
pytest-randomly (CI) the tests run shuffled; the pytest runs they start themselves keep their declared order, and
the terminal summary names the seed that replays the shuffle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from mechclaims.models import Model, load_model
from mechclaims.models.controls import word_tokenizer

TINY_VOCAB_SIZE = 300
END_OF_TEXT = "<|endoftext|>"
UNKNOWN = "<unk>"
SCRIPT_TOKEN = "<script>alert(1)</script>"


def _tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer: two specials, an HTML-hostile token, then plain words."""
    return word_tokenizer(TINY_VOCAB_SIZE, specials=(END_OF_TEXT, UNKNOWN, SCRIPT_TOKEN))


def _tiny_gpt2() -> GPT2LMHeadModel:
    """Seeded random GPT-2 weights with non-trivial LayerNorm gains and biases, so LN folding changes weights."""
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2, n_head=4, n_embd=64, vocab_size=TINY_VOCAB_SIZE, n_positions=32, bos_token_id=0, eos_token_id=0
    )
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".ln_" in name:
                offset = 1.0 if name.endswith(".weight") else 0.0
                param.copy_(offset + 0.3 * torch.randn_like(param))
    return model


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 checkpoint folder: 2 layers, 4 heads, d_model 64, 300 tokens, 32 positions."""
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    _tiny_gpt2().save_pretrained(folder, safe_serialization=True)
    _tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama checkpoint: rotary positions, RMSNorm, gated MLP, 4 query heads sharing 2 KV heads."""
    torch.manual_seed(1)
    config = LlamaConfig(
        vocab_size=TINY_VOCAB_SIZE, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32, bos_token_id=0, eos_token_id=0,
    )
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    _tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_gpt2_model(tiny_gpt2_dir: Path) -> Model:
    """The tiny checkpoint loaded through load_model, as `--model <folder>` does, with the hub offline."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        return load_model(str(tiny_gpt2_dir))


@pytest.fixture(autouse=True)
def _declared_order_in_started_runs(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pytest run a test starts (pytester) runs its items in the order collected, whatever orders this one: the
    tests check the suite's output, and order independence is tested where it is meant
    (`test_plugin.py::test_claims_give_the_same_results_in_any_order`). Set after pytester, which clears
    PYTEST_ADDOPTS."""
    if "pytester" in request.fixturenames:
        request.getfixturevalue("pytester")
        monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:randomly")


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if config.pluginmanager.has_plugin("randomly"):
        seed = config.getoption("randomly_seed")
        terminalreporter.write_line(f"tests shuffled by pytest-randomly: replay this order with -p randomly "
                                    f"--randomly-seed={seed}")
