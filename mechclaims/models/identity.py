"""A loaded model's identity (fingerprint, capabilities, the parameters initialised at load) remembered in the
cache folder under the files its spec loads from, so a run whose measurements are all cached never loads it.

The key is the spec, the loading code's version, the torch, transformers and TransformerLens versions, and the
path, size and modification time (ns) of every file the kind names (its `sources(spec)`): a file rewritten in
place gets a new key. A kind without `sources`, or one that cannot name its files yet (a run still to train),
is always loaded. A model loaded later from a remembered identity must have the remembered fingerprint
(`Model.bridge`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mechclaims.atomic import atomic_write_text

if TYPE_CHECKING:
    from mechclaims.models.model import Capabilities, Model
    from mechclaims.models.specs import Spec

FOLDER = "identities"
LIBRARIES = ("torch", "transformers", "transformer_lens")


@dataclass(frozen=True)
class Identity:
    fingerprint: str
    capabilities: Capabilities
    initialised_at_load: tuple[str, ...]


def _key(spec: Spec) -> str | None:
    from mechclaims.cache import code_version
    from mechclaims.models import specs

    files = specs.sources(spec)
    if files is None:
        return None
    try:
        stats = [(str(path), path.stat().st_size, path.stat().st_mtime_ns) for path in files]
    except OSError:
        return None
    payload = {"spec": spec.text, "code": code_version("mechclaims.models.loading"), "files": stats,
               "versions": {name: importlib.metadata.version(name) for name in LIBRARIES}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _path(key: str) -> Path:
    from mechclaims.cache import default_cache_dir

    return default_cache_dir() / FOLDER / f"{key}.json"


def recall(spec: Spec) -> Identity | None:
    """The identity remembered for `spec` as its files are now, or None (unknown, unreadable or malformed)."""
    from mechclaims.models.model import Capabilities

    key = _key(spec)
    if key is None:
        return None
    try:
        data: Any = json.loads(_path(key).read_text(encoding="utf-8"))
        capabilities = {k: v for k, v in data["capabilities"].items() if k != "grouped_kv"}
        if set(capabilities) != {f.name for f in fields(Capabilities)}:
            return None
        return Identity(str(data["fingerprint"]), Capabilities(**capabilities),
                        tuple(str(name) for name in data["initialised_at_load"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def remember(spec: Spec, model: Model) -> None:
    """Record a model just loaded from `spec` (a failed write only costs the next run a load)."""
    key = _key(spec)
    if key is None:
        return
    data = {"spec": spec.text, "fingerprint": model.fingerprint, "capabilities": model.capabilities.to_json(),
            "initialised_at_load": list(model.initialised_at_load)}
    try:
        atomic_write_text(_path(key), json.dumps(data))
    except OSError:
        return
