"""The list-sorting models of Urdshals & Urdshals 2025, trained by the suite.

A one-layer, attention-only transformer (no MLP, learned positions, LayerNorm optional) reads
`[list] SEP [sorted list]` and is trained with the loss on the sorted half. Loaded, it is TransformerLens 4's native
model (`TransformerBridge.boot_native`), whose bridge has the hooks and weights of any loaded model, so every claim
and the report read a trained sorter as they read any other model. Training runs on `SortingStack`
(mechclaims.training.sorting_model), the same function of the checkpoint tensors with a leading run axis: every
seed of a family and its shuffled-target twin train together as one batched model (`train_family`), each run with
its own seeded initialisation (the native model's) and its own seeded data stream.

Every hyperparameter is the suite's choice (the paper's set-up is not available): `SortingConfig`, read from
fixtures/sorting/<name>.json. Training is deterministic on one machine: the weights come from the seeded native
initialisation, the batch of step t from a generator seeded with (seed, t), so a run resumed from a checkpoint makes
the same batches as one that never stopped; a family trains on one torch thread. A run trained alone and the same
run trained inside a family may differ in the last bits (batched products sum in another order); their modes and
held-out accuracy agree (a test checks). Checkpoints (`checkpoint-<step>/`, as the transformers Trainer names them)
hold the weights and the AdamW state as safetensors, never pickles, and the head mode and held-out accuracy at that
step, from which the run's `settled_step` is read.
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
from mechclaims.metrics.list_sorting import HeadModes, classify_heads, ov_circuits, qk_circuits, settled_index
from mechclaims.training.sorting_model import LAYER_NORM_EPS, SortingStack

CONFIGS = "sorting"
"""fixtures/sorting/<name>.json: one SortingConfig each."""
SPECIALS = 2
"""Token ids 0 and 1 are the tokenizer's end-of-text and unknown tokens; number n is token n + SPECIALS."""
HELD_OUT_STREAM = 2**31
"""Held-out lists come from the generator seeded (seed, HELD_OUT_STREAM); training steps stay below it."""
HELD_OUT_LISTS = 1024
SETTLED_ACCURACY = 0.95
"""A run has settled from the first checkpoint after which its mode never changes and its held-out accuracy stays
at least this."""
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
RECORD_FILE = "training.json"
TARGETS = ("sorted", "shuffled")
"""What the second half of a training sequence holds: the sorted list, or (a null) the list in a random order."""
SCHEDULES = ("constant", "linear")
"""The learning rate: constant, or decaying linearly from `learning_rate` at step 0 to 0 after the last step."""
FIELD_TYPES: dict[str, type] = {"name": str, "layernorm": bool, "learning_rate": float, "weight_decay": float,
                                "schedule": str, "targets": str}
"""Every other field is an int."""
PER_RUN = ("seed", "targets")
"""The fields that may differ between the runs of one batched family."""


@dataclass(frozen=True)
class SortingConfig:
    """One training set-up. Lists hold `list_length` distinct numbers drawn from `window` consecutive numbers
    (of 0..numbers-1) at a uniformly drawn offset, so the expected gap between adjacent sorted numbers is
    (window + 1) / (list_length + 1) (`mean_gap`). `heads` heads of d_model / heads, LayerNorm before the attention
    and the unembedding when `layernorm`; AdamW with `learning_rate` (`schedule`) and `weight_decay`, `steps` of
    `batch` lists, a checkpoint every `checkpoint_every` steps."""

    name: str
    numbers: int
    list_length: int
    window: int
    heads: int
    d_model: int
    layernorm: bool
    steps: int
    batch: int
    learning_rate: float
    weight_decay: float
    schedule: str
    checkpoint_every: int
    seed: int = 0
    targets: str = "sorted"

    def __post_init__(self) -> None:
        where = f"sorting configuration {self.name!r}"
        for item in fields(self):
            value, expected = getattr(self, item.name), FIELD_TYPES.get(item.name, int)
            allowed = (int, float) if expected is float else expected
            if (isinstance(value, bool) and expected is not bool) or not isinstance(value, allowed):
                raise MechclaimsError(f"{where}: field {item.name!r} is {value!r}, which is not {expected.__name__}")
        positive = ("numbers", "list_length", "window", "heads", "d_model", "steps", "batch", "checkpoint_every")
        bad = [name for name in positive if getattr(self, name) < 1]
        bad += [name for name, ok in (("seed", self.seed >= 0), ("learning_rate", self.learning_rate > 0),
                                      ("weight_decay", self.weight_decay >= 0)) if not ok]
        if bad:
            raise MechclaimsError(f"{where}: field {', '.join(repr(b) for b in bad)} out of range (sizes and steps "
                                  ">= 1, seed >= 0, learning_rate > 0, weight_decay >= 0)")
        if not self.list_length <= self.window <= self.numbers:
            raise MechclaimsError(f"{where}: fields 'list_length', 'window', 'numbers' need list_length <= window <= "
                                  f"numbers (got {self.list_length}, {self.window}, {self.numbers})")
        for name, choices in (("targets", TARGETS), ("schedule", SCHEDULES)):
            if getattr(self, name) not in choices:
                raise MechclaimsError(f"{where}: field {name!r} is {getattr(self, name)!r}, not one of "
                                      f"{', '.join(choices)}")
        if self.d_model % self.heads:
            raise MechclaimsError(f"{where}: field 'd_model' {self.d_model} is not a multiple of 'heads' {self.heads}")

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

    @property
    def settle_by(self) -> int:
        """The last step by which a run must have settled for the claims to judge it: 75% of its training."""
        return (3 * self.steps) // 4

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def with_seed(self, seed: int) -> SortingConfig:
        return SortingConfig(**{**asdict(self), "seed": seed})

    def family_key(self) -> str:
        """What the runs of one batched family share, as text: every field but the seed and the targets."""
        return json.dumps({key: value for key, value in self.to_json().items() if key not in PER_RUN}, sort_keys=True)


def config_names() -> list[str]:
    return sorted(path.stem for path in (fixtures_dir() / CONFIGS).glob("*.json"))


def load_config(name: str, seed: int = 0) -> SortingConfig:
    """fixtures/sorting/<name>.json with `seed`; an unknown name or a malformed file is a one-line error naming the
    field."""
    from mechclaims.errors import did_you_mean

    path = fixtures_dir() / CONFIGS / f"{name}.json"
    if not path.is_file():
        raise MechclaimsError(f"unknown sorting configuration {name!r}{did_you_mean(name, config_names())}: choose "
                              f"from {', '.join(config_names())}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise MechclaimsError(f"{path} is not JSON ({exc}): fix or restore it") from None
    if not isinstance(data, dict):
        raise MechclaimsError(f"{path} must hold one JSON object of the configuration's fields")
    known = [item.name for item in fields(SortingConfig) if item.name not in ("name", *PER_RUN)]
    missing, unknown = [key for key in known if key not in data], sorted(set(data) - set(known))
    if missing or unknown:
        problems = ([f"missing field {', '.join(map(repr, missing))}"] if missing else []) + \
                   ([f"unknown field {', '.join(map(repr, unknown))}"] if unknown else [])
        raise MechclaimsError(f"{path}: {'; '.join(problems)} (the fields are {', '.join(known)})")
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
    """The native TransformerLens configuration: one attention-only layer, learned positions, LayerNorm or none.
    n_ctx has one position more than a sequence: TransformerLens's to_tokens cuts texts to n_ctx before it drops the
    BOS token the tokenizer adds, so a full sequence needs that room to run through mechclaims.run like any text."""
    return {"d_model": config.d_model, "d_head": config.d_model // config.heads, "n_heads": config.heads,
            "n_layers": 1, "n_ctx": config.sequence_length + 1, "d_vocab": config.vocabulary, "attn_only": True,
            "normalization_type": "LN" if config.layernorm else None, "positional_embedding_type": "standard",
            "act_fn": "relu", "seed": config.seed, "model_name": f"sorting-{config.name}"}


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


def circuit_weights(tensors: dict[str, Any], config: SortingConfig) -> dict[str, np.ndarray]:
    """W_E [V, d], W_Q, W_K, W_V [H, d, d_head], W_O [H, d_head, d], W_U [d, V] of a checkpoint's tensors, with each
    LayerNorm folded as list_sorting.head_circuits reads it: the embeddings normalised by the attention's LN (the
    numbers' identity without positions), the final LN's weight folded into W_U after centring."""
    array = {name: np.asarray(value, dtype=np.float64) for name, value in tensors.items()}
    heads, d_head = config.heads, config.d_model // config.heads

    def per_head(name: str) -> np.ndarray:  # Linear weight [out, in] -> [H, in, d_head]
        return array[f"layers.0.attn.{name}.weight"].T.reshape(config.d_model, heads, d_head).transpose(1, 0, 2)

    embed, unembed = array["tok_embed.weight"], array["head.weight"].T
    if config.layernorm:
        centred = embed - embed.mean(axis=1, keepdims=True)
        scale = np.sqrt((centred**2).mean(axis=1, keepdims=True) + LAYER_NORM_EPS)
        embed = centred / scale * array["layers.0.ln1.weight"] + array["layers.0.ln1.bias"]
        unembed = array["ln_out.weight"][:, None] * unembed
    out = array["layers.0.attn.o.weight"].T.reshape(heads, d_head, config.d_model)
    if config.layernorm:
        out = out - out.mean(axis=2, keepdims=True)
    return {"W_E": embed, "W_Q": per_head("q"), "W_K": per_head("k"), "W_V": per_head("v"), "W_O": out, "W_U": unembed}


def head_modes(tensors: dict[str, Any], config: SortingConfig) -> HeadModes:
    """The mode of a run's heads from its checkpoint tensors (list_sorting.classify_heads on the OV circuits
    W_E W_V W_O W_U and QK circuits W_E W_Q W_K^T W_E^T over the number tokens)."""
    w = circuit_weights(tensors, config)
    numbers = np.arange(SPECIALS, SPECIALS + config.numbers)
    return classify_heads(ov_circuits(w["W_E"], w["W_V"], w["W_O"], w["W_U"], numbers),
                          qk_circuits(w["W_E"], w["W_Q"], w["W_K"], numbers))


def sorted_half_losses(model: SortingStack, tokens: torch.Tensor, list_length: int) -> torch.Tensor:
    """[R] mean cross-entropy of predicting the sorted half per run (tokens [R, B, T]): positions L .. 2L - 1
    predict tokens L + 1 .. 2L (the last token is read by no prediction)."""
    predicted = model(tokens[:, :, :-1], first=list_length)
    targets = tokens[:, :, list_length + 1:]
    each = torch.nn.functional.cross_entropy(predicted.reshape(-1, predicted.shape[-1]), targets.reshape(-1),
                                             reduction="none")
    return each.view(len(tokens), -1).mean(dim=1)


def token_accuracy(module: torch.nn.Module, config: SortingConfig, tokens: np.ndarray) -> float:
    """Fraction of sorted-half tokens the model's argmax predicts (a native model, tokens [N, T])."""
    with torch.no_grad():
        logits = module(torch.from_numpy(tokens))
    guesses = logits[:, config.list_length:-1].argmax(dim=-1).numpy()
    return float(np.mean(guesses == tokens[:, config.list_length + 1:]))


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


@dataclass(frozen=True)
class CheckpointMode:
    """A run's heads at one checkpoint: the mode and the held-out token accuracy."""

    step: int
    mode: str
    held_out_accuracy: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def settled_step(checkpoints: list[CheckpointMode]) -> int | None:
    """The first checkpoint's step from which the mode never changes and the held-out accuracy stays at least
    SETTLED_ACCURACY; None when the last checkpoint's accuracy is below it (the run never settled)."""
    index = settled_index([c.mode for c in checkpoints], [c.held_out_accuracy >= SETTLED_ACCURACY for c in checkpoints])
    return None if index is None else checkpoints[index].step


@dataclass(frozen=True)
class TrainingRecord:
    """What a finished run leaves in its folder's training.json: the configuration, the loss of every step, the
    held-out token accuracy, the steps it resumed from (none when it ran through), its mode at every checkpoint, the
    step it settled at, and the fingerprint of its final weights (models.model.tensors_fingerprint), by which a
    loaded model is known to be this run."""

    config: SortingConfig
    losses: list[float]
    held_out_accuracy: float
    resumed_from: list[int]
    checkpoints: list[CheckpointMode]
    fingerprint: str

    @property
    def settled_step(self) -> int | None:
        return settled_step(self.checkpoints)

    def to_json(self) -> dict[str, Any]:
        return {"config": self.config.to_json(), "losses": self.losses, "held_out_accuracy": self.held_out_accuracy,
                "resumed_from": self.resumed_from, "checkpoints": [c.to_json() for c in self.checkpoints],
                "settled_step": self.settled_step, "fingerprint": self.fingerprint}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainingRecord:
        return cls(SortingConfig(**data["config"]), [float(v) for v in data["losses"]],
                   float(data["held_out_accuracy"]), [int(v) for v in data["resumed_from"]],
                   [CheckpointMode(int(c["step"]), str(c["mode"]), float(c["held_out_accuracy"]))
                    for c in data["checkpoints"]], str(data["fingerprint"]))


def read_record(folder: Path) -> TrainingRecord:
    return TrainingRecord.from_json(json.loads((Path(folder) / RECORD_FILE).read_text(encoding="utf-8")))


@contextmanager
def _one_thread() -> Any:
    """torch on one thread inside, as it was after: the tiny products of these models gain nothing from more, and a
    family's bits then do not depend on the machine's core count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def finished(folder: Path) -> bool:
    """Whether the run in `folder` has its final weights and training record."""
    return (folder / RECORD_FILE).is_file() and (folder / MODEL_FILE).is_file()


def train(config: SortingConfig, folder: Path, progress: bool = True, stop_after: int | None = None,
          device: str | torch.device = "cpu") -> TrainingRecord | None:
    """Train one run into `folder` (a family of one; `train_family`)."""
    return train_family([(config, Path(folder))], progress, stop_after, device)[0]


def initial_weights(config: SortingConfig) -> dict[str, torch.Tensor]:
    """A run's seeded initialisation: the native model's initial tensors under their checkpoint names."""
    return _weights(boot(config).original_model)


def train_family(runs: list[tuple[SortingConfig, Path]], progress: bool = True, stop_after: int | None = None,
                 device: str | torch.device = "cpu",
                 initial: list[dict[str, torch.Tensor]] | None = None) -> list[TrainingRecord | None]:
    """Train runs that differ only in seed and targets as one batched model on `device`, each into its folder
    (model.safetensors and training.json when done), resuming from the last checkpoint every unfinished run holds,
    with a progress bar on a terminal. `stop_after` ends training after that many steps of this call, as an
    interruption would (None is returned for the unfinished runs); a finished folder is read, not retrained.
    `initial`: each run's `initial_weights`, where the caller has them (train_many boots them in its own process,
    which has TransformerLens imported, so a worker process need not import it)."""
    runs = [(config, Path(folder)) for config, folder in runs]
    if len({config.family_key() for config, _ in runs}) > 1:
        raise MechclaimsError(f"a batched family's runs must differ only in {' and '.join(PER_RUN)}: "
                              f"{', '.join(sorted({config.name for config, _ in runs}))} do not")
    pending, starts = [], []
    for index, (config, folder) in enumerate(runs):
        folder.mkdir(parents=True, exist_ok=True)
        if not finished(folder):
            pending.append((config, folder))
            starts.append(initial[index] if initial is not None else None)
    if pending:
        with _one_thread():
            _trained(pending, starts, progress, stop_after, torch.device(device))
    return [read_record(folder) if finished(folder) else None for _, folder in runs]


def _check_checkpoint(config: SortingConfig, folder: Path, path: Path) -> dict[str, Any]:
    """A checkpoint's state, refused in one line when it was saved by a run of another configuration."""
    state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    if state.get("config") != config.to_json():
        raise MechclaimsError(f"{path} was saved by a run of another configuration than sorting:{config.name}@"
                              f"{config.seed} ({folder}): delete that folder to retrain the run")
    return state


class _Family:
    """The runs of `_trained` stacked: the model, its AdamW, and each run's losses, modes and resumed steps."""

    def __init__(self, pending: list[tuple[SortingConfig, Path]], starts: list[dict[str, torch.Tensor] | None],
                 device: torch.device) -> None:
        self.configs = [config for config, _ in pending]
        self.folders = [folder for _, folder in pending]
        first = self.configs[0]
        common = set.intersection(*({step for step, _ in _checkpoints(folder)} for folder in self.folders))
        self.start = max(common, default=0)
        states = [_check_checkpoint(c, f, f / f"checkpoint-{self.start}") if self.start else None
                  for c, f in pending]
        tensors = [load_file(str(f / f"checkpoint-{self.start}" / MODEL_FILE)) if self.start else
                   start if start is not None else initial_weights(c) for (c, f), start in zip(pending, starts)]
        self.model = SortingStack(tensors, first.heads, first.layernorm).to(device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=first.learning_rate,
                                           weight_decay=first.weight_decay)
        if self.start:
            self._restore_optimizer([load_file(str(f / f"checkpoint-{self.start}" / OPTIMIZER_FILE))
                                     for f in self.folders], device)
        self.losses = [list(s["losses"]) if s else [] for s in states]
        self.modes = [[CheckpointMode(**c) for c in s["checkpoints"]] if s else [] for s in states]
        self.resumed = [[*s["resumed_from"], self.start] if s else [] for s in states]
        self.held_out = torch.from_numpy(np.stack([held_out(c) for c in self.configs])).to(device)

    def _restore_optimizer(self, saved: list[dict[str, torch.Tensor]], device: torch.device) -> None:
        state = {index: {key: torch.stack([run[f"{name}.{key}"] for run in saved]).to(device)
                         for key in ("exp_avg", "exp_avg_sq")} | {"step": saved[0]["step"].clone()}
                 for index, name in enumerate(self.model.names)}
        self.optimizer.load_state_dict({"state": state, "param_groups": self.optimizer.state_dict()["param_groups"]})

    def optimizer_tensors(self, run: int) -> dict[str, torch.Tensor]:
        """Run `run`'s AdamW state as flat named tensors ("<name>.exp_avg", ..., "step"), for safetensors."""
        tensors = {"step": torch.zeros(())}
        for name, parameter in zip(self.model.names, self.model.parameters()):
            state = self.optimizer.state[parameter]
            tensors["step"] = state["step"].detach().cpu().clone().reshape(())
            for key in ("exp_avg", "exp_avg_sq"):
                tensors[f"{name}.{key}"] = state[key][run].detach().cpu().clone().contiguous()
        return tensors

    def accuracies(self) -> list[float]:
        """Each run's held-out token accuracy now."""
        length = self.configs[0].list_length
        with torch.no_grad():
            guesses = self.model(self.held_out)[:, :, length:-1].argmax(dim=-1)
        return (guesses == self.held_out[:, :, length + 1:]).double().mean(dim=(1, 2)).tolist()

    def save_checkpoint(self, step: int) -> None:
        """checkpoint-<step>/ of every run, each written in a temporary folder and renamed into place."""
        for run, (config, folder, accuracy) in enumerate(zip(self.configs, self.folders, self.accuracies())):
            tensors = self.model.run_tensors(run)
            self.modes[run].append(CheckpointMode(step, head_modes(tensors, config).mode, round(accuracy, 6)))
            staging = Path(tempfile.mkdtemp(dir=folder, prefix=f".checkpoint-{step}."))
            try:
                save_file(tensors, str(staging / MODEL_FILE))
                save_file(self.optimizer_tensors(run), str(staging / OPTIMIZER_FILE))
                state = {"step": step, "losses": self.losses[run], "resumed_from": self.resumed[run],
                         "config": config.to_json(), "checkpoints": [c.to_json() for c in self.modes[run]]}
                (staging / STATE_FILE).write_text(json.dumps(state), encoding="utf-8")
                os.replace(staging, folder / f"checkpoint-{step}")
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise

    def finish(self) -> None:
        """Each run's final weights and training record (its held-out accuracy the last checkpoint's), atomically."""
        from mechclaims.models.model import tensors_fingerprint

        for run, (config, folder) in enumerate(zip(self.configs, self.folders)):
            tensors = self.model.run_tensors(run)
            accuracy = self.modes[run][-1].held_out_accuracy  # the last checkpoint is the final step
            record = TrainingRecord(config, self.losses[run], accuracy, self.resumed[run], self.modes[run],
                                    tensors_fingerprint(tensors, f"sorting:{config.name}@{config.seed}"))
            save_file(tensors, str(folder / f".{MODEL_FILE}.tmp"))
            os.replace(folder / f".{MODEL_FILE}.tmp", folder / MODEL_FILE)
            atomic_write_text(folder / RECORD_FILE, json.dumps(record.to_json()))


def learning_rate_at(config: SortingConfig, step: int) -> float:
    """The learning rate of `step` under the configuration's schedule."""
    return config.learning_rate * (1.0 - step / config.steps if config.schedule == "linear" else 1.0)


def _trained(pending: list[tuple[SortingConfig, Path]], starts: list[dict[str, torch.Tensor] | None], progress: bool,
             stop_after: int | None, device: torch.device) -> None:
    """`train_family`'s loop over the unfinished runs, from their last common checkpoint."""
    family = _Family(pending, starts, device)
    first = family.configs[0]
    last = first.steps if stop_after is None else min(first.steps, family.start + stop_after)
    seeds = ",".join(f"{c.seed}{'/shuffled' if c.targets == 'shuffled' else ''}" for c in family.configs)
    label = f"sorting:{first.name}@{seeds}"
    bar = tqdm(range(family.start, last), desc=f"training {label}", unit="step", disable=None if progress else True,
               initial=family.start, total=first.steps)
    family.model.train()
    for step in bar:
        tokens = torch.from_numpy(np.stack([batch_at(config, step) for config in family.configs])).to(device)
        losses = sorted_half_losses(family.model, tokens, first.list_length)
        values = losses.tolist()
        for config, value in zip(family.configs, values):
            if not math.isfinite(value):
                raise MechclaimsError(f"training sorting:{config.name}@{config.seed} diverged at step {step} (loss "
                                      f"{value}): lower learning_rate in fixtures/sorting/{config.name}.json")
        for group in family.optimizer.param_groups:
            group["lr"] = learning_rate_at(first, step)
        family.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        family.optimizer.step()
        for run, value in enumerate(values):
            family.losses[run].append(value)
        bar.set_postfix(loss=f"{max(values):.4f}", refresh=False)
        if (step + 1) % first.checkpoint_every == 0 or step + 1 == first.steps:
            family.save_checkpoint(step + 1)
    bar.close()
    if last == first.steps:
        family.model.eval()
        family.finish()


def families(runs: list[tuple[SortingConfig, Path]]) -> list[list[tuple[SortingConfig, Path]]]:
    """The runs grouped into batched families: runs whose configurations differ only in seed and targets."""
    groups: dict[str, list[tuple[SortingConfig, Path]]] = {}
    for config, folder in runs:
        groups.setdefault(config.family_key(), []).append((config, Path(folder)))
    return list(groups.values())


def _train_family_quietly(runs: list[tuple[SortingConfig, Path]], device: str,
                          initial: list[dict[str, torch.Tensor]]) -> None:
    train_family(runs, progress=False, device=device, initial=initial)


def train_many(runs: list[tuple[SortingConfig, Path]], processes: int, device: str | None = None) -> None:
    """Train every unfinished (configuration, folder) run, each batched family as one model, up to `processes`
    families at a time (each in its own process on one thread: the same bits as `train_family` alone); a run that
    fails raises its error here. `device` as mechclaims.run.target_device reads it (the CPU unless asked)."""
    from mechclaims.run import target_device

    where = str(target_device(device))
    groups = [[(config, folder) for config, folder in group if not finished(folder)] for group in families(runs)]
    groups = [group for group in groups if group]
    if len(groups) < 2 or processes < 2 or where != "cpu":
        for group in groups:
            train_family(group, device=where)
        return
    import multiprocessing

    workers = min(processes, len(groups))
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool, \
            tqdm(total=len(groups), desc=f"training {len(groups)} sorting families in {workers} processes",
                 unit="family", disable=None) as bar:
        submitted = [pool.submit(_train_family_quietly, group, where, [initial_weights(c) for c, _ in group])
                     for group in groups]
        for done in submitted:
            done.result()
            bar.update(1)
