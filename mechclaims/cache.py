"""On-disk measurement cache keyed by (model fingerprint, measurement, parameters, inputs, code version).

One JSON file per entry (`Measurement.to_json()`, exact), written to a temporary file and moved into
place, so an interrupted run never leaves a half-written entry and concurrent workers (pytest-xdist)
writing the same entry leave one whole copy: entries are pure functions of their key, so whichever
rename lands last holds the same content. Nothing is unpickled.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import platformdirs

from mechclaims import __version__
from mechclaims.atomic import atomic_write_text
from mechclaims.errors import MechclaimsWarning
from mechclaims.measurement import Measurement

CACHE_ENV = "MECHCLAIMS_CACHE_DIR"
PACKAGE = "mechclaims"


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("mechclaims"))


def _spec(name: str) -> Any:
    """The module's import spec, or None where `name` is not a module (e.g. a class imported by name)."""
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def _module_source(name: str) -> str | None:
    spec = _spec(name)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin).read_text(encoding="utf-8")


def _imported(source: str) -> set[str]:
    """The package's modules that `source` imports anywhere in its body (absolute imports: the package
    uses no relative ones)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {module for module in found if module.split(".")[0] == PACKAGE and _spec(module) is not None}


@functools.lru_cache(maxsize=None)
def module_closure(name: str) -> tuple[str, ...]:
    """`name` and every package module it imports, transitively (read once per process)."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        source = _module_source(module)
        if source is not None:
            todo.extend(_imported(source) - seen)
    return tuple(sorted(seen))


@functools.lru_cache(maxsize=None)
def source_hash(module_name: str) -> str:
    """sha256 of a module's source, read once per process (an edit during a run does not change it)."""
    return hashlib.sha256((_module_source(module_name) or "").encode()).hexdigest()


def modules_version(names: Iterable[str]) -> str:
    """The package version plus one hash over the source of the named modules, in the order given."""
    digest = hashlib.sha256("".join(source_hash(name) for name in names).encode()).hexdigest()
    return f"{__version__}+{digest[:12]}"


def code_version(*roots: str) -> str:
    """The package version plus one hash over every module the roots import, found by following their
    imports (so a change anywhere a measurement reads makes new cache keys)."""
    return modules_version(sorted({module for root in roots for module in module_closure(root)}))


def cache_key(fingerprint: str, measure: Callable[..., Any], params: dict[str, Any], role: str,
              source: Any = None, inputs: str | None = None) -> str:
    """Stable key; `role` is "real" or the null's role; `source` the object measured (its class's module
    is part of the code version: weight extraction, forward passes); `inputs` the data set's fingerprint."""
    roots = [measure.__module__] + ([type(source).__module__] if source is not None else [])
    payload = json.dumps(
        {
            "fingerprint": fingerprint,
            "measure": f"{measure.__module__}.{measure.__qualname__}",
            "params": params,
            "role": role,
            "inputs": inputs,
            "code": code_version(*roots),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def discard_damaged(path: Path, problem: Exception) -> None:
    """Delete a damaged (or outdated) cache entry, file or folder, so that it is rebuilt; a one-line note says so."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    reason = " ".join(f"{type(problem).__name__}: {problem}".split())[:160]
    warnings.warn(MechclaimsWarning(f"discarded the unusable cache entry {path} ({reason}): it is computed again and "
                                    "rewritten"), stacklevel=2)


def _json_default(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else str(value)


class MeasurementCache:
    """get/put Measurements; `enabled=False` (--no-cache) makes every get a miss and put a no-op."""

    def __init__(self, directory: Path | None = None, enabled: bool = True) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.enabled = enabled

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> Measurement | None:
        path = self._path(key)
        if not self.enabled or not path.is_file():
            return None
        try:
            return Measurement.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            discard_damaged(path, exc)
            return None

    def put(self, key: str, measurement: Measurement) -> None:
        if self.enabled:
            atomic_write_text(self._path(key), json.dumps(measurement.to_json(), default=_json_default))
