"""On-disk measurement cache keyed by (model fingerprint, measurement, parameters, code version).

One `.npz` per entry (arrays plus a JSON header, loaded with allow_pickle=False), written to a
temporary file and moved into place, so an interrupted run never leaves a half-written entry and
concurrent workers (pytest-xdist) writing the same entry leave one whole copy: entries are pure
functions of their key, so whichever rename lands last holds the same content.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import json
import os
import pkgutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import platformdirs

from mechclaims import __version__, metrics
from mechclaims.atomic import atomic_write
from mechclaims.registry import Measurement

CACHE_ENV = "MECHCLAIMS_CACHE_DIR"


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("mechclaims"))


SHARED_MODULES = ("mechclaims.models.model", "mechclaims.registry")
"""Code every measurement depends on besides its metric modules: weight extraction and the nulls."""


@functools.lru_cache(maxsize=None)
def _source_hash(module_name: str) -> str:
    """sha256 of a module's source, read once per process (an edit during a run does not change it)."""
    module = importlib.import_module(module_name)
    return hashlib.sha256(inspect.getsource(module).encode()).hexdigest()


def code_version(measure: Callable[..., Any]) -> str:
    """The package version plus one hash over the measurement's module, every module of
    `mechclaims.metrics` (metrics share helpers) and SHARED_MODULES, so a change anywhere a measurement
    reads makes new cache keys."""
    names = {measure.__module__, *SHARED_MODULES,
             *(f"{metrics.__name__}.{info.name}" for info in pkgutil.iter_modules(metrics.__path__))}
    digest = hashlib.sha256("".join(_source_hash(name) for name in sorted(names)).encode()).hexdigest()
    return f"{__version__}+{digest[:12]}"


def cache_key(fingerprint: str, measure: Callable[..., Any], params: dict[str, Any], role: str) -> str:
    """Stable key; `role` is "real" or the null's name."""
    payload = json.dumps(
        {
            "fingerprint": fingerprint,
            "measure": f"{measure.__module__}.{measure.__qualname__}",
            "params": params,
            "role": role,
            "code": code_version(measure),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


class MeasurementCache:
    """get/put Measurements; `enabled=False` (--no-cache) makes every get a miss and put a no-op."""

    def __init__(self, directory: Path, enabled: bool = True) -> None:
        self.directory = Path(directory)
        self.enabled = enabled

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.npz"

    def get(self, key: str) -> Measurement | None:
        path = self._path(key)
        if not self.enabled or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(str(data["header"]))
                distribution = data["distribution"] if "distribution" in data.files else None
                by_param = {name: {"values": values, "distributions": data[f"by_param.{name}"]}
                            for name, values in header["by_param"].items()}
        except (OSError, ValueError, KeyError):
            return None
        return Measurement(
            statistics=header["statistics"],
            distribution=distribution,
            distribution_label=header["distribution_label"],
            details=header["details"],
            curves=header["curves"],
            by_param=by_param,
        )

    def put(self, key: str, measurement: Measurement) -> None:
        if not self.enabled:
            return
        header = json.dumps(
            {
                "statistics": measurement.statistics,
                "distribution_label": measurement.distribution_label,
                "details": measurement.details,
                "curves": measurement.curves,
                "by_param": {name: axis["values"] for name, axis in measurement.by_param.items()},
            },
            default=float,
        )
        arrays: dict[str, np.ndarray] = {"header": np.array(header)}
        arrays.update({f"by_param.{name}": np.asarray(axis["distributions"]) for name, axis in measurement.by_param.items()})
        if measurement.distribution is not None:
            arrays["distribution"] = np.asarray(measurement.distribution)
        atomic_write(self._path(key), lambda out: np.savez(out, **arrays))
