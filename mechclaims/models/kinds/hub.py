"""Hugging Face names (`gpt2`, `EleutherAI/pythia-70m`) and local checkpoint folders (safetensors only).

A hub name loads from the hub when it answers, else from the local cache, offline; a folder loads as
written by `save_pretrained`, its safetensors validated first so that a damaged file is a one-line error
and nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import threading
import urllib.request
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mechclaims.errors import MechclaimsError, MechclaimsWarning, did_you_mean
from mechclaims.models.model import INITIALISED_AT_LOAD
from mechclaims.models.published import PUBLISHED_ATTRIBUTE, published_name
from mechclaims.trajectories import checkpoint_folders

if TYPE_CHECKING:
    from mechclaims.models.specs import Spec

HUB_PROBE_SECONDS = 5.0
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "tokenizer.model")
SNAPSHOT_FILES = ("*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken")
"""What a hub snapshot fetches: configs, tokenizer files and safetensors weights (never pickles, never code)."""
BUNDLED_HINT = "use a bundled model: --model smollm2-135m or --model minilm-l6"
OFFLINE_VALUES = frozenset({"1", "true", "yes", "on"})


def check(spec: Spec, probe_hub: bool) -> None:
    """A folder must hold a valid checkpoint; with `probe_hub`, a hub name must be cached or the hub must
    answer within HUB_PROBE_SECONDS."""
    if spec.kind == "folder":
        folder = existing_folder(spec.argument)
        if folder is None:
            raise MechclaimsError(f"model folder {spec.argument} does not exist: pass a folder written by save_pretrained")
        steps = expanded(spec)
        if steps:
            raise MechclaimsError(
                f"{folder} holds {len(steps)} training checkpoints ({Path(steps[0]).name} to {Path(steps[-1]).name}), "
                f"not one model: measure one ({steps[-1]}) or every step with pytest claims --model {folder}")
        checkpoint_weights(folder)
    elif probe_hub and not (hub_cached(spec.argument, spec.revision) or hub_reachable()):
        from mechclaims.models.kinds.bundled import BUNDLED

        download = spec.argument + (f" --revision {spec.revision}" if spec.revision else "")
        raise MechclaimsError(
            f"model {spec.text!r}{did_you_mean(spec.text, BUNDLED)} is not in the local Hugging Face cache and "
            f"the hub did not answer within {HUB_PROBE_SECONDS:.0f} s: run `huggingface-cli download {download}` on a "
            f"connected machine and copy its HF_HOME here, or {BUNDLED_HINT}"
        )


def expanded(spec: Spec) -> list[str]:
    """A folder of training checkpoints (`checkpoint-<step>/` subfolders and no config.json of its own): one folder
    spec per step, by step; [] for any other spec."""
    folder = existing_folder(spec.argument) if spec.kind == "folder" else None
    if folder is None or (folder / "config.json").is_file():
        return []
    return [f"{spec.text}/{step.name}" for step in checkpoint_folders(folder)]


def boot(spec: Spec) -> Any:
    """The folder's checkpoint; for a hub name, its snapshot at the spec's revision (configs, tokenizer and safetensors
    only), from the hub when it answers, else from the local cache offline (never 30 s of retries). Either way it
    loads as a folder."""
    from huggingface_hub import snapshot_download

    if spec.kind == "folder":
        return boot_folder(Path(spec.argument).expanduser())
    online = hub_reachable()
    snapshot = snapshot_download(spec.argument, revision=spec.revision, allow_patterns=list(SNAPSHOT_FILES),
                                 local_files_only=not online)
    return boot_folder(Path(snapshot))


def sources(spec: Spec) -> list[Path] | None:
    """A folder's files; a hub name's cached snapshot files when the hub is off (HF_HUB_OFFLINE), else None (the hub
    may hold newer weights)."""
    if spec.kind == "folder":
        folder = existing_folder(spec.argument)
    elif os.environ.get("HF_HUB_OFFLINE", "").lower() in OFFLINE_VALUES and hub_cached(spec.argument, spec.revision):
        from huggingface_hub import try_to_load_from_cache

        folder = Path(str(try_to_load_from_cache(spec.argument, "config.json", revision=spec.revision))).parent
    else:
        return None
    return None if folder is None else sorted(path for path in folder.rglob("*") if path.is_file())


def existing_folder(text: str) -> Path | None:
    """The directory `text` names (`~` expanded), or None: also for text no file system could hold."""
    try:
        folder = Path(text).expanduser()
        return folder if folder.is_dir() else None
    except (OSError, RuntimeError, ValueError):
        return None


def boot_folder(folder: Path) -> Any:
    """A TransformerBridge over a validated save_pretrained folder (no remote code), its weights loaded by
    `pretrained` into the transformers class TransformerLens picks for the folder's architecture."""
    from transformer_lens.model_bridge import TransformerBridge

    checkpoint_weights(folder)
    model = pretrained(folder)
    setattr(model, PUBLISHED_ATTRIBUTE, published_name(folder))
    return TransformerBridge.boot_transformers(str(folder), hf_model=model, trust_remote_code=False)


def pretrained(folder: Path, model_class: Any | None = None) -> Any:
    """`model_class.from_pretrained(folder)` in float32 with eager attention, checked against transformers' own
    loading report (`output_loading_info`, after the architecture's ignore lists): every weight of the architecture
    must come from the checkpoint, and every tensor of the checkpoint must load.

    The exceptions are the parts in which the class config.json names (the checkpoint's own) and the class loaded
    differ, as when a sentence-embedding BERT saved as `BertModel` loads as `BertForMaskedLM`: the loaded class's
    head, which the checkpoint cannot hold, is initialised at load and named under INITIALISED_AT_LOAD; the saved
    class's own parts the loaded one lacks (BERT's pooler) are left out, with a MechclaimsWarning naming them.
    Anything else would measure initialisation noise as if it were the checkpoint (a `module.` prefix loads nothing
    at all), so it is a MechclaimsError naming the tensors."""
    from transformers import AutoConfig

    if model_class is None:
        from transformer_lens.model_bridge.sources._hf_format import determine_architecture_from_hf_config
        from transformer_lens.model_bridge.sources.transformers.helpers import get_hf_model_class_for_architecture

        config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
        model_class = get_hf_model_class_for_architecture(determine_architecture_from_hf_config(config))
    model, report = model_class.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager",
                                                use_safetensors=True, trust_remote_code=False,
                                                output_loading_info=True)
    missing, unused = set(report["missing_keys"]), set(report["unexpected_keys"])
    saved = _saved_class_names(model) if missing or unused else set()
    prefix = f"{getattr(model, 'base_model_prefix', '')}."
    head = {key for key in missing if key.removeprefix(prefix) not in saved}
    dropped = {key for key in unused if key.removeprefix(prefix) in saved}
    faults = [f"{len(names)} {what} ({_some(names)})" for what, names in (
        ("weights the checkpoint does not hold", missing - head),
        ("checkpoint tensors the architecture does not use", unused - dropped),
        ("tensors whose shapes do not fit", {str(entry[0]) for entry in report["mismatched_keys"]}),
    ) if names]
    if faults or report["error_msgs"]:
        described = "; ".join(faults) or " ".join(str(report["error_msgs"][0]).split())[:200]
        raise MechclaimsError(
            f"{folder} does not load into its architecture {type(model).__name__}: {described}; re-save the model "
            "with save_pretrained from the class config.json names (tensor names without a prefix such as 'module.')")
    if dropped:
        warnings.warn(MechclaimsWarning(
            f"{folder}: {len(dropped)} tensors of its {model.config.architectures[0]} are not part of "
            f"{type(model).__name__} and are not measured ({_some(dropped)})"), stacklevel=2)
    setattr(model, INITIALISED_AT_LOAD, tuple(sorted(head)))
    return model


def _saved_class_names(model: Any) -> set[str]:
    """The state-dict names, base-model prefix removed, of the transformers class config.json names, built on the
    meta device (no memory); empty when transformers has no such class or config.json names none."""
    import transformers

    named = getattr(transformers, (model.config.architectures or [""])[0], None)
    if not (isinstance(named, type) and issubclass(named, transformers.PreTrainedModel)):
        return set()
    with torch.device("meta"):
        built = named(model.config)
    prefix = f"{getattr(built, 'base_model_prefix', '')}."
    return {name.removeprefix(prefix) for name in built.state_dict()}


def _some(names: Iterable[str], shown: int = 3) -> str:
    """The first `shown` names in sorted order, and how many more there are."""
    ordered = sorted(names)
    more = f" and {len(ordered) - shown} more" if len(ordered) > shown else ""
    return ", ".join(ordered[:shown]) + more


def hub_cached(name: str, revision: str | None = None) -> bool:
    """Whether the local Hugging Face cache holds `name`'s config (at `revision`; None: the main branch)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str)


def hub_reachable(timeout: float = HUB_PROBE_SECONDS, opener: Callable[..., Any] = urllib.request.urlopen) -> bool:
    """Whether the Hugging Face hub answers a HEAD request within `timeout` seconds (never retries).

    Under HF_HUB_OFFLINE nothing is opened. `opener` (urllib's urlopen) runs in a daemon thread, so a
    connection that hangs past its own socket timeout still costs the caller only `timeout`.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in OFFLINE_VALUES:
        return False
    from huggingface_hub import constants

    answered = threading.Event()

    def probe() -> None:
        try:
            opener(urllib.request.Request(constants.ENDPOINT, method="HEAD"), timeout=timeout).close()
        except Exception:
            return
        answered.set()

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return answered.is_set()


def check_safetensors(file: Path) -> None:
    """Header parses, names at least one tensor, every tensor's bytes lie inside the file, and the safetensors
    library accepts the header against the data (offsets contiguous, each tensor's size fitting its dtype and shape),
    reading no tensor."""
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
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt"):
            pass
    except SafetensorError as exc:
        raise MechclaimsError(f"{file} is corrupt (its header does not fit its data: {' '.join(str(exc).split())}): "
                              "re-download or re-save the checkpoint") from None


def checkpoint_weights(folder: Path) -> list[Path]:
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
        check_safetensors(file)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise MechclaimsError(
            f"{folder} has no tokenizer: save one beside the weights with tokenizer.save_pretrained({str(folder)!r})"
        )
    return files
