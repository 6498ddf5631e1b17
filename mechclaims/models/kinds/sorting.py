"""`sorting:<config>[@<seed>][/<step>|/shuffled|/steps]`: a list-sorting model the suite trains itself
(mechclaims/training/sorting.py) from fixtures/sorting/<config>.json, on first use, into the cache folder; later loads
read the cached weights. `/<step>` is the run's checkpoint at that step, `/0` its initialisation (the untrained null);
`/shuffled` the same configuration trained on shuffled targets (the list again in a random order: the shuffled-target
null, which learns to copy numbers but not to sort them). `/steps` is the run along training: one model per saved
checkpoint (`checkpoint-<step>/` folders in the run's folder, as the transformers Trainer names them), step 0 first
(`expanded`).

`sorting:<config>[+<config>...]@<first>-<last>[/<step>|/shuffled]` names a family: every configuration with every
seed in the range, measured together by the claims about how often a structure appears across training runs
(`members`).

The cache folder is keyed by the configuration and the code version of the training module (a change to either
trains anew), under `<cache dir>/sorting/`. The runs a call needs train as batched families (every seed of a
configuration, with its shuffled-target twin, as one model), on --device. An interrupted training resumes from its
last checkpoint. `recipe` identifies a run or family by what made it (configurations, seeds, targets, training code),
not by its weight bits, so baselines recorded on one CPU compare with runs retrained on another.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mechclaims.errors import MechclaimsError

if TYPE_CHECKING:
    from mechclaims.models.specs import Spec

NAME = r"[A-Za-z0-9_-]+"
ARGUMENT = re.compile(rf"(?P<configs>{NAME}(?:\+{NAME})*)(?:@(?P<first>\d+)(?:-(?P<last>\d+))?)?"
                      r"(?:/(?P<variant>\d+|shuffled|steps))?")
USAGE = ("write sorting:<configuration>[@<seed>][/<step>|/shuffled|/steps], e.g. sorting:ci@0, or a family such as "
         "sorting:ci+ci-wd0@0-4")
SHUFFLED = "shuffled"
STEPS = "steps"


def _parts(spec: Spec) -> tuple[list[str], list[int], str | None]:
    """(configuration names, seeds, variant: a checkpoint step, "shuffled", or None for the finished run)."""
    match = ARGUMENT.fullmatch(spec.argument)
    if match is None:
        raise MechclaimsError(f"model spec {spec.text!r}: {USAGE}")
    first = int(match["first"] or 0)
    last = int(match["last"] or first)
    if last < first:
        raise MechclaimsError(f"model spec {spec.text!r}: the seed range {first}-{last} is empty; write "
                              "@<first>-<last>")
    variant = match["variant"]
    if variant is not None and variant.isdigit():
        variant = str(int(variant))
    return match["configs"].split("+"), list(range(first, last + 1)), variant


def members(spec: Spec) -> list[str]:
    """The single-run specs of a family, configuration by configuration; [] for a single run."""
    configs, seeds, variant = _parts(spec)
    if len(configs) == 1 and len(seeds) == 1:
        return []
    at = "" if variant is None else f"/{variant}"
    return [f"sorting:{config}@{seed}{at}" for config in configs for seed in seeds]


def config_of(spec: Spec) -> Any:
    """The SortingConfig of a single-run spec (with shuffled targets for `/shuffled`)."""
    from mechclaims.training.sorting import load_config

    configs, seeds, variant = _parts(spec)
    config = load_config(configs[0], seeds[0])
    return replace(config, targets="shuffled") if variant == SHUFFLED else config


TRAINING_CODE = ("mechclaims.training.sorting", "mechclaims.training.sorting_model", "mechclaims.metrics.list_sorting")
"""The modules whose code makes a run: its training loop, its model, and the classifier of the modes it records."""
LIBRARIES = ("torch", "transformer-lens")
"""... and the libraries that draw its initialisation and compute its steps (a cached run is retrained when they
change; a recipe leaves them out, so a run retrained under another version is still the same run)."""


def _training_code() -> str:
    """The package version plus a hash over the source of the TRAINING_CODE modules."""
    from mechclaims.cache import modules_version

    return modules_version(TRAINING_CODE)


def run_folder(config: Any) -> Path:
    """Where the configuration's run lives: `<name>-<hash>/seed-<seed>`, the hash over the configuration (but its
    seed), the training code's version and the versions of LIBRARIES."""
    import importlib.metadata

    from mechclaims.cache import default_cache_dir

    settings = {key: value for key, value in config.to_json().items() if key != "seed"}
    versions = {name: importlib.metadata.version(name) for name in LIBRARIES}
    payload = json.dumps({"config": settings, "code": _training_code(), "libraries": versions}, sort_keys=True)
    digest = hashlib.sha256(payload.encode()).hexdigest()[:16]
    return default_cache_dir() / "sorting" / f"{config.name}-{digest}" / f"seed-{config.seed}"


def recipe(spec: Spec) -> str:
    """sha256 over what makes the run or family: every member's configuration (seed and targets included), the
    variant (a checkpoint step, or the final weights) and the training code's version."""
    from mechclaims.models.specs import parse

    variant = _parts(spec)[2]
    runs = [config_of(parse(member)).to_json() for member in members(spec) or [spec.text]]
    payload = json.dumps({"runs": runs, "variant": variant, "code": _training_code()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def expanded(spec: Spec) -> list[str]:
    """`<run or family>/steps`: one spec per step the first configuration saves a checkpoint at, the untrained
    initialisation (step 0) first; [] for any other spec."""
    from mechclaims.training.sorting import checkpoint_steps, load_config

    configs, seeds, variant = _parts(spec)
    if variant != STEPS:
        return []
    stem = spec.text.removesuffix(f"/{STEPS}")
    return [f"{stem}/{step}" for step in (0, *checkpoint_steps(load_config(configs[0], seeds[0])))]


def check(spec: Spec, probe_hub: bool) -> None:
    """Every configuration must exist in fixtures/sorting and be valid, and the step must be one it saves."""
    from mechclaims.training.sorting import checkpoint_steps, load_config

    configs, seeds, variant = _parts(spec)
    if variant == STEPS:
        stem = spec.text.removesuffix(f"/{STEPS}")
        raise MechclaimsError(f"{spec.text} names every saved step of {stem}, not one model: measure one "
                              f"({stem}/<step>) or every step with pytest claims --model {spec.text}")
    step = None if variant in (None, SHUFFLED) else int(variant)
    for name in configs:
        config = load_config(name, seeds[0])
        if step is not None and step != 0 and step not in checkpoint_steps(config):
            raise MechclaimsError(f"model spec {spec.text!r}: configuration {name!r} saves no checkpoint at step "
                                  f"{step}; choose 0 (untrained) or a multiple of {config.checkpoint_every} up to "
                                  f"{config.steps}")


def prepare(specs: list[Spec], processes: int) -> None:
    """Train every run the specs (single runs and families) need and the cache lacks, as batched families,
    `processes` families at a time."""
    from mechclaims.models.specs import parse
    from mechclaims.training.sorting import train_many

    singles = [parse(member) for spec in specs for member in members(spec)] + [s for s in specs if not members(s)]
    runs = {run_folder(config): config for config in (config_of(s) for s in singles if _parts(s)[2] != "0")}
    train_many([(config, folder) for folder, config in runs.items()], processes)


def sources(spec: Spec) -> list[Path] | None:
    """A finished run's weights (or its checkpoint's) and training record; the configuration file for the untrained
    `/0`; None for a run still to train."""
    from mechclaims.datasets.base import fixtures_dir
    from mechclaims.training.sorting import CONFIGS, MODEL_FILE, RECORD_FILE, finished

    configs, _, variant = _parts(spec)
    if variant == "0":
        return [fixtures_dir() / CONFIGS / f"{configs[0]}.json"]
    folder = run_folder(config_of(spec))
    if not finished(folder):
        return None
    weights = folder / (f"checkpoint-{variant}/{MODEL_FILE}" if variant not in (None, SHUFFLED) else MODEL_FILE)
    return [weights, folder / RECORD_FILE]


def boot(spec: Spec) -> Any:
    """The trained model (training it first when the cache has no finished run), or its checkpoint at the step. A
    cached run that cannot be read (a damaged record, checkpoint or weights file) is discarded with a note and
    trained again from its seed, which gives the same bits."""
    from safetensors import SafetensorError

    from mechclaims.cache import discard_damaged
    from mechclaims.training.sorting import MODEL_FILE, boot, train

    config = config_of(spec)
    variant = _parts(spec)[2]
    if variant == "0":
        return boot(config)
    folder = run_folder(config)
    at_step = variant is not None and variant != SHUFFLED
    weights = folder / (f"checkpoint-{variant}/{MODEL_FILE}" if at_step else MODEL_FILE)
    try:
        train(config, folder)
        return boot(config, weights)
    except (OSError, ValueError, KeyError, SafetensorError) as exc:  # a damaged run: retrained (the same bits)
        if not folder.exists():
            raise
        discard_damaged(folder, exc)
    train(config, folder)
    return boot(config, weights)
