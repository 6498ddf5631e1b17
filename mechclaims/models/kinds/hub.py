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
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from mechclaims.errors import MechclaimsError

if TYPE_CHECKING:
    from mechclaims.models.specs import Spec

HUB_PROBE_SECONDS = 5.0
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "tokenizer.model")
BUNDLED_HINT = "use a bundled model: --model smollm2-135m or --model minilm-l6"
OFFLINE_VALUES = frozenset({"1", "true", "yes", "on"})


def check(spec: Spec, probe_hub: bool) -> None:
    """A folder must hold a valid checkpoint; with `probe_hub`, a hub name must be cached or the hub must
    answer within HUB_PROBE_SECONDS."""
    if spec.kind == "folder":
        folder = existing_folder(spec.argument)
        if folder is None:
            raise MechclaimsError(f"model folder {spec.argument} does not exist: pass a folder written by save_pretrained")
        checkpoint_weights(folder)
    elif probe_hub and not (hub_cached(spec.argument) or hub_reachable()):
        raise MechclaimsError(
            f"model {spec.argument!r} is not in the local Hugging Face cache and the hub did not answer within "
            f"{HUB_PROBE_SECONDS:.0f} s: run `huggingface-cli download {spec.argument}` on a connected machine and "
            f"copy its HF_HOME here, or {BUNDLED_HINT}"
        )


def boot(spec: Spec) -> Any:
    """The folder's checkpoint; for a hub name, the hub when it answers, else the cached snapshot offline
    (never 30 s of retries)."""
    from huggingface_hub import snapshot_download
    from transformer_lens.model_bridge import TransformerBridge

    if spec.kind == "folder":
        return boot_folder(Path(spec.argument).expanduser())
    if hub_reachable():
        return TransformerBridge.boot_transformers(spec.argument, trust_remote_code=False)
    return boot_folder(Path(snapshot_download(spec.argument, local_files_only=True)))


def sources(spec: Spec) -> list[Path] | None:
    """A folder's files; a hub name's cached snapshot files when the hub is off (HF_HUB_OFFLINE), else None (the hub
    may hold newer weights)."""
    if spec.kind == "folder":
        folder = existing_folder(spec.argument)
    elif os.environ.get("HF_HUB_OFFLINE", "").lower() in OFFLINE_VALUES and hub_cached(spec.argument):
        from huggingface_hub import try_to_load_from_cache

        folder = Path(str(try_to_load_from_cache(spec.argument, "config.json"))).parent
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
    """A TransformerBridge over a validated save_pretrained folder (no remote code)."""
    from transformer_lens.model_bridge import TransformerBridge

    checkpoint_weights(folder)
    return TransformerBridge.boot_transformers(str(folder), trust_remote_code=False)


def hub_cached(name: str) -> bool:
    """Whether the local Hugging Face cache holds `name`'s config."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(name, "config.json"), str)


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
