"""`sorting:<config>[@<seed>]`: a list-sorting model the suite trains itself (mechclaims/training/sorting.py) from
fixtures/sorting/<config>.json, on first use, into the cache folder; later loads read the cached weights.

The cache folder is keyed by the configuration and the code version of the training module (a change to either
trains anew), under `<cache dir>/sorting/`. An interrupted training resumes from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mechclaims.errors import MechclaimsError

if TYPE_CHECKING:
    from mechclaims.models.specs import Spec

ARGUMENT = re.compile(r"(?P<config>[A-Za-z0-9_-]+)(?:@(?P<seed>\d+))?")


def _config(spec: Spec) -> Any:
    from mechclaims.training.sorting import load_config

    match = ARGUMENT.fullmatch(spec.argument)
    if match is None:
        raise MechclaimsError(f"model spec {spec.text!r}: write sorting:<configuration>[@<seed>], e.g. sorting:ci@0")
    return load_config(match["config"], int(match["seed"] or 0))


def run_folder(config: Any) -> Path:
    """Where the configuration's run lives: keyed by the configuration and the training code's version."""
    from mechclaims.cache import code_version, default_cache_dir

    payload = json.dumps({"config": config.to_json(), "code": code_version("mechclaims.training.sorting")},
                         sort_keys=True)
    digest = hashlib.sha256(payload.encode()).hexdigest()[:16]
    return default_cache_dir() / "sorting" / f"{config.name}-{digest}" / f"seed-{config.seed}"


def check(spec: Spec, probe_hub: bool) -> None:
    """The configuration must exist in fixtures/sorting and be valid."""
    _config(spec)


def boot(spec: Spec) -> Any:
    """The trained model (training it first when the cache has no finished run)."""
    from mechclaims.training.sorting import MODEL_FILE, boot, train

    config = _config(spec)
    folder = run_folder(config)
    train(config, folder)
    return boot(config, folder / MODEL_FILE)
