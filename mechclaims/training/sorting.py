"""The list-sorting models of Urdshals & Urdshals 2025 (CLAIMS_CATALOGUE.md section 4), trained by the suite.

A one-layer, attention-only transformer (no MLP, no norms, learned positions) reads `[list] SEP [sorted list]`
and is trained with the loss on the sorted half. It is TransformerLens 4's native model
(`TransformerBridge.boot_native`): the one TransformerLens architecture that builds an attention-only,
norm-free model with learned positions without transformers, and whose bridge has the hooks and weights of any
loaded model, so every claim and the report read a trained sorter as they read any other model. Training runs
on the bridge's module (`NativeModel`, which returns logits).

Every hyperparameter is the suite's choice (the paper's set-up is not available to us): `SortingConfig`, read
from fixtures/sorting/<name>.json. Training is deterministic on one machine: the weights come from the seeded
native initialisation, the batch of step t from a generator seeded with (seed, t), so a run resumed from a
checkpoint makes the same batches as one that never stopped, and every run trains on one torch thread, so a run
trained alone and one trained beside others (`train_many`, one process per run) are the same bits. Checkpoints
(`checkpoint-<step>/`, as the transformers Trainer names them) hold the weights and the AdamW state as
safetensors, never pickles.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from mechclaims.atomic import atomic_write_text
from mechclaims.datasets.base import fixtures_dir
from mechclaims.errors import MechclaimsError

CONFIGS = "sorting"
"""fixtures/sorting/<name>.json: one SortingConfig each."""
SPECIALS = 2
"""Token ids 0 and 1 are the tokenizer's end-of-text and unknown tokens; number n is token n + SPECIALS."""
HELD_OUT_STREAM = 2**31
"""Held-out lists come from the generator seeded (seed, HELD_OUT_STREAM); training steps stay below it."""
HELD_OUT_LISTS = 1024
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
RECORD_FILE = "training.json"
TARGETS = ("sorted", "shuffled")
"""What the second half of a training sequence holds: the sorted list, or (a null) the list in a random order."""


@dataclass(frozen=True)
class SortingConfig:
    """One training set-up. Lists hold `list_length` distinct numbers drawn from `window` consecutive numbers
    (of 0..numbers-1) at a uniformly drawn offset, so the expected gap between adjacent sorted numbers is
    (window + 1) / (list_length + 1) (`mean_gap`). AdamW with `learning_rate` and `weight_decay`, `steps` of
    `batch` lists, a checkpoint every `checkpoint_every` steps."""

    name: str
    numbers: int
    list_length: int
    window: int
    heads: int
    d_model: int
    steps: int
    batch: int
    learning_rate: float
    weight_decay: float
    checkpoint_every: int
    seed: int = 0
    targets: str = "sorted"

    def __post_init__(self) -> None:
        where = f"sorting configuration {self.name!r}"
        for item in fields(self):
            value = getattr(self, item.name)
            expected = {"name": str, "learning_rate": float, "weight_decay": float, "targets": str}.get(item.name, int)
            if isinstance(value, bool) or not isinstance(value, (int, float) if expected is float else expected):
                raise MechclaimsError(f"{where}: {item.name}={value!r} must be {expected.__name__}")
        positive = ("numbers", "list_length", "window", "heads", "d_model", "steps", "batch", "checkpoint_every")
        bad = [name for name in positive if getattr(self, name) < 1]
        if bad or self.seed < 0 or not self.learning_rate > 0 or self.weight_decay < 0:
            raise MechclaimsError(f"{where}: {', '.join(bad) or 'seed, learning_rate or weight_decay'} out of range "
                                  "(sizes >= 1, seed >= 0, learning_rate > 0, weight_decay >= 0)")
        if not self.list_length <= self.window <= self.numbers:
            raise MechclaimsError(f"{where}: needs list_length <= window <= numbers (got {self.list_length}, "
                                  f"{self.window}, {self.numbers})")
        if self.targets not in TARGETS:
            raise MechclaimsError(f"{where}: targets {self.targets!r} must be one of {', '.join(TARGETS)}")
        if self.d_model % self.heads:
            raise MechclaimsError(f"{where}: d_model {self.d_model} is not a multiple of heads {self.heads}")

    @property
    def sequence_length(self) -> int:
        return 2 * self.list_length + 1

    @property
    def vocabulary(self) -> int:
        """Token ids: the specials, the numbers, then SEP."""
        return SPECIALS + self.numbers + 1

    @property
    def separator(self) -> int:
        return self.vocabulary - 1

    @property
    def mean_gap(self) -> float:
        """Expected gap between adjacent numbers of a sorted list: (window + 1) / (list_length + 1)."""
        return (self.window + 1) / (self.list_length + 1)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def with_seed(self, seed: int) -> SortingConfig:
        return SortingConfig(**{**asdict(self), "seed": seed})


def config_names() -> list[str]:
    return sorted(path.stem for path in (fixtures_dir() / CONFIGS).glob("*.json"))


def load_config(name: str, seed: int = 0) -> SortingConfig:
    """fixtures/sorting/<name>.json with `seed`; an unknown name or a malformed file is a one-line error."""
    from mechclaims.errors import did_you_mean

    path = fixtures_dir() / CONFIGS / f"{name}.json"
    if not path.is_file():
        raise MechclaimsError(f"unknown sorting configuration {name!r}{did_you_mean(name, config_names())}: choose "
                              f"from {', '.join(config_names())}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise MechclaimsError(f"{path} is not JSON ({exc}): fix or restore it") from None
    known = {item.name for item in fields(SortingConfig)} - {"name", "seed", "targets"}
    if not isinstance(data, dict) or set(data) != known:
        raise MechclaimsError(f"{path} must hold exactly the keys {', '.join(sorted(known))}")
    return SortingConfig(name=name, seed=seed, **data)


def sample_lists(config: SortingConfig, generator: np.random.Generator, count: int) -> np.ndarray:
    """[count, list_length] distinct numbers, each list from `window` consecutive numbers at a random offset."""
    offsets = generator.integers(0, config.numbers - config.window + 1, size=count)
    picks = np.argsort(generator.random((count, config.window)), axis=1)[:, : config.list_length]
    return offsets[:, None] + picks


def sequences(config: SortingConfig, lists: np.ndarray, generator: np.random.Generator | None = None) -> np.ndarray:
    """Token ids [count, 2 L + 1]: the list, SEP, the sorted list; with targets "shuffled", the list again in an
    order `generator` draws (the shuffled-target null: copying without sorting)."""
    separator = np.full((len(lists), 1), config.separator)
    if config.targets == "sorted":
        second = np.sort(lists, axis=1)
    elif generator is None:
        raise MechclaimsError("shuffled targets need a generator to shuffle with")
    else:
        second = generator.permuted(lists, axis=1)
    return np.concatenate([lists + SPECIALS, separator, second + SPECIALS], axis=1)


def _drawn(config: SortingConfig, stream: int, count: int) -> np.ndarray:
    generator = np.random.default_rng([config.seed, stream])
    return sequences(config, sample_lists(config, generator, count), generator)


def batch_at(config: SortingConfig, step: int) -> np.ndarray:
    """The training batch of `step` (its own seeded generator, so a resumed run draws the same batches)."""
    return _drawn(config, step, config.batch)


def held_out(config: SortingConfig, count: int = HELD_OUT_LISTS) -> np.ndarray:
    """Held-out sequences, from a generator no training step uses."""
    return _drawn(config, HELD_OUT_STREAM, count)


def bridge_config(config: SortingConfig) -> dict[str, Any]:
    """The native TransformerLens configuration: one attention-only layer, no norms, learned positions. n_ctx has
    one position more than a sequence: TransformerLens's to_tokens cuts texts to n_ctx before it drops the BOS token
    the tokenizer adds, so a full sequence needs that room to run through mechclaims.run like any text."""
    return {"d_model": config.d_model, "d_head": config.d_model // config.heads, "n_heads": config.heads,
            "n_layers": 1, "n_ctx": config.sequence_length + 1, "d_vocab": config.vocabulary, "attn_only": True,
            "normalization_type": None, "positional_embedding_type": "standard", "act_fn": "relu",
            "seed": config.seed, "model_name": f"sorting-{config.name}"}


def tokenizer(config: SortingConfig) -> Any:
    """A word-level tokenizer whose ids match the model's: specials, "0" .. str(numbers - 1), "SEP"."""
    from mechclaims.models.controls import vocabulary_tokenizer

    return vocabulary_tokenizer([str(n) for n in range(config.numbers)] + ["SEP"])


def boot(config: SortingConfig, weights: Path | None = None) -> Any:
    """The native bridge of `config` (seeded initial weights), with `weights` (safetensors) loaded when given."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as saved:  # the bridge re-reads a tokenizer from where it was saved
        tokenizer(config).save_pretrained(saved)
        bridge = TransformerBridge.boot_native(bridge_config(config), tokenizer=AutoTokenizer.from_pretrained(saved),
                                               model_name=f"sorting:{config.name}@{config.seed}")
    if weights is not None:
        _load_weights(bridge.original_model, load_file(str(weights)))
    return bridge


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's tensors under their checkpoint names (the bridge's wrappers alias each one several times)."""
    from mechclaims.models.model import checkpoint_name

    return {checkpoint_name(key): value.detach().contiguous() for key, value in module.state_dict().items()}


def _load_weights(module: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load tensors saved by `_weights` into every alias of each; a missing or extra tensor is an error."""
    from mechclaims.models.model import checkpoint_name

    names = {key: checkpoint_name(key) for key in module.state_dict()}
    missing, extra = set(names.values()) - set(tensors), set(tensors) - set(names.values())
    if missing or extra:
        raise MechclaimsError(f"sorting checkpoint does not fit its configuration (missing {sorted(missing)[:3]}, "
                              f"unexpected {sorted(extra)[:3]}): delete the cached run to retrain it")
    module.load_state_dict({key: tensors[name] for key, name in names.items()})


def sorted_half_loss(logits: torch.Tensor, tokens: torch.Tensor, list_length: int) -> torch.Tensor:
    """Mean cross-entropy of predicting the sorted half: positions L .. 2L - 1 predict tokens L + 1 .. 2L."""
    predicted = logits[:, list_length:-1]
    return torch.nn.functional.cross_entropy(predicted.reshape(-1, predicted.shape[-1]),
                                             tokens[:, list_length + 1:].reshape(-1))


def token_accuracy(module: torch.nn.Module, config: SortingConfig, tokens: np.ndarray) -> float:
    """Fraction of sorted-half tokens the model's argmax predicts."""
    with torch.no_grad():
        logits = module(torch.from_numpy(tokens))
    guesses = logits[:, config.list_length:-1].argmax(dim=-1).numpy()
    return float(np.mean(guesses == tokens[:, config.list_length + 1:]))


def _optimizer(module: torch.nn.Module, config: SortingConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(module.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """AdamW's per-parameter state as flat named tensors ("<index>.<name>"), for safetensors."""
    return {f"{index}.{name}": value.detach().clone().reshape(value.shape) for index, state in
            optimizer.state_dict()["state"].items() for name, value in state.items()}


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})


def checkpoint_steps(config: SortingConfig) -> list[int]:
    """The steps a finished run has a checkpoint for: every `checkpoint_every` steps and the last one."""
    return sorted({*range(config.checkpoint_every, config.steps + 1, config.checkpoint_every), config.steps})


def _checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint, by step."""
    found = []
    for path in folder.glob("checkpoint-*"):
        step = path.name.removeprefix("checkpoint-")
        if step.isdigit() and (path / STATE_FILE).is_file():
            found.append((int(step), path))
    return sorted(found)


def _save_checkpoint(folder: Path, step: int, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     losses: list[float], resumed: list[int]) -> None:
    """checkpoint-<step>/ written in a temporary folder and renamed into place: all or nothing."""
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=f".checkpoint-{step}."))
    try:
        save_file(_weights(module), str(staging / MODEL_FILE))
        save_file(_optimizer_tensors(optimizer), str(staging / OPTIMIZER_FILE))
        (staging / STATE_FILE).write_text(json.dumps({"step": step, "losses": losses, "resumed_from": resumed}), encoding="utf-8")
        os.replace(staging, folder / f"checkpoint-{step}")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@dataclass(frozen=True)
class TrainingRecord:
    """What a finished run leaves in its folder's training.json: the configuration, the loss of every step, the
    held-out token accuracy, and the steps it resumed from (none when it ran through)."""

    config: SortingConfig
    losses: list[float]
    held_out_accuracy: float
    resumed_from: list[int]

    def to_json(self) -> dict[str, Any]:
        return {"config": self.config.to_json(), "losses": self.losses, "held_out_accuracy": self.held_out_accuracy,
                "resumed_from": self.resumed_from}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainingRecord:
        config = data["config"]
        return cls(SortingConfig(**config), [float(v) for v in data["losses"]], float(data["held_out_accuracy"]),
                   [int(v) for v in data["resumed_from"]])


@contextmanager
def _one_thread() -> Any:
    """torch on one thread inside, as it was after: the tiny products of these models gain nothing from more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def finished(folder: Path) -> bool:
    """Whether the run in `folder` has its final weights and training record."""
    return (folder / RECORD_FILE).is_file() and (folder / MODEL_FILE).is_file()


def train(config: SortingConfig, folder: Path, progress: bool = True,
          stop_after: int | None = None) -> TrainingRecord | None:
    """Train `config` into `folder` (model.safetensors and training.json when done), resuming from its last
    checkpoint, with a progress bar on a terminal. `stop_after` ends the run after that many steps of this call, as
    an interruption would (None is returned then); a finished folder is read, not retrained."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if finished(folder):
        return TrainingRecord.from_json(json.loads((folder / RECORD_FILE).read_text(encoding="utf-8")))
    with _one_thread():
        return _trained(config, folder, progress, stop_after)


def _trained(config: SortingConfig, folder: Path, progress: bool, stop_after: int | None) -> TrainingRecord | None:
    """`train`'s loop, from the last checkpoint in `folder`."""
    bridge = boot(config)
    module = bridge.original_model
    module.train()
    optimizer = _optimizer(module, config)
    start, losses, resumed = 0, [], []
    checkpoints = _checkpoints(folder)
    if checkpoints:
        start, path = checkpoints[-1]
        _load_weights(module, load_file(str(path / MODEL_FILE)))
        _restore_optimizer(optimizer, load_file(str(path / OPTIMIZER_FILE)))
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        losses, resumed = state["losses"], [*state["resumed_from"], start]
    last = config.steps if stop_after is None else min(config.steps, start + stop_after)
    bar = tqdm(range(start, last), desc=f"training sorting:{config.name}@{config.seed}", unit="step",
               disable=None if progress else True, initial=start, total=config.steps)
    for step in bar:
        tokens = torch.from_numpy(batch_at(config, step))
        loss = sorted_half_loss(module(tokens), tokens, config.list_length)
        if not math.isfinite(loss.item()):
            raise MechclaimsError(f"training sorting:{config.name}@{config.seed} diverged at step {step} (loss "
                                  f"{loss.item()}): lower learning_rate in fixtures/sorting/{config.name}.json")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.item()))
        bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            _save_checkpoint(folder, step + 1, module, optimizer, losses, resumed)
    bar.close()
    if last < config.steps:
        return None
    module.eval()
    record = TrainingRecord(config, losses, token_accuracy(module, config, held_out(config)), resumed)
    save_file(_weights(module), str(folder / f".{MODEL_FILE}.tmp"))
    os.replace(folder / f".{MODEL_FILE}.tmp", folder / MODEL_FILE)
    atomic_write_text(folder / RECORD_FILE, json.dumps(record.to_json()))
    return record


def _train_quietly(config: SortingConfig, folder: Path) -> None:
    train(config, folder, progress=False)


def train_many(runs: list[tuple[SortingConfig, Path]], processes: int) -> None:
    """Train every unfinished (configuration, folder) run, up to `processes` at a time, each in its own process on
    one thread (the same bits as `train` alone); a run that fails raises its error here."""
    pending = [(config, Path(folder)) for config, folder in runs if not finished(Path(folder))]
    if len(pending) < 2 or processes < 2:
        for config, folder in pending:
            train(config, folder)
        return
    import multiprocessing

    workers = min(processes, len(pending))
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool, \
            tqdm(total=len(pending), desc=f"training {len(pending)} sorting runs in {workers} processes", unit="run",
                 disable=None) as bar:
        for done in [pool.submit(_train_quietly, config, folder) for config, folder in pending]:
            done.result()
            bar.update(1)
