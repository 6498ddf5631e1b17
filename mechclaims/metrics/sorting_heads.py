"""The list-sorting claims' measurements (Urdshals & Urdshals 2025): a family of the suite's trained sorting models
in (mechclaims.models.family), one Measurement per claim out; the arithmetic is in list_sorting. Each member's heads
are classified from their OV and QK circuits over the numbers; its held-out lists come from its own configuration,
and how it developed (its mode at every checkpoint, the step it settled at) from its training record
(mechclaims.training.sorting).
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

import numpy as np

from mechclaims.errors import MechclaimsError
from mechclaims.measurement import Measurement
from mechclaims.metrics.list_sorting import HeadModes, calibration, llc_change_after_overlap, overlap_end

Wanted = Literal["simple", "vocabulary-splitting", "copy-suppression", "overlapping"]
MODES = ("vocabulary-splitting", "copy-suppression", "overlapping", "none")
SIMPLE = frozenset({"vocabulary-splitting", "copy-suppression"})
HELD_OUT = 512
HEAD_OUTPUTS = "blocks.0.attn.hook_z"
LOGITS = "unembed.hook_out"
LOSS_POINTS = 200
"""Loss curves are drawn from at most this many points (means over equal spans of steps)."""


def _config(model: Any) -> Any:
    from mechclaims.models.kinds.sorting import config_of
    from mechclaims.models.specs import parse

    spec = parse(model.name)
    if spec.kind != "sorting":
        raise MechclaimsError(f"model {model.name!r} is not one of the suite's sorting models: the list-sorting "
                              "claims measure sorting:<config>@<seeds> families")
    return config_of(spec)


def _members(source: Any) -> tuple[Any, ...]:
    return tuple(getattr(source, "members", (source,)))


def head_modes_of(model: Any) -> HeadModes:
    """The mode of one sorting model's layer-0 heads (training.sorting.head_modes on its checkpoint tensors: the OV
    circuits W_E W_V W_O W_U and QK circuits W_E W_Q W_K^T W_E^T over the numbers)."""
    from mechclaims.training.sorting import _weights, head_modes

    return head_modes(_weights(model.bridge.original_model), _config(model))


def _history(model: Any, config: Any) -> dict[str, Any]:
    """How a run developed, from its training record when the model is that run's final weights: its mode at
    every checkpoint, `settled_step` (training.sorting.settled_step), the last change of mode, and `settled`:
    whether it settled by 75% of its training (`settle_by`), the condition for the claims to judge it. A
    checkpoint part-way (`/<step>`) has not settled; weights the suite did not train (a hand-built sorter) have no
    development and are judged as they are."""
    from mechclaims.models.kinds.sorting import run_folder
    from mechclaims.training.sorting import RECORD_FILE, TrainingRecord

    stopped = re.search(r"/(\d+)$", model.name)
    if stopped:
        return {"settled": False, "settled_step": None, "settle_by": config.settle_by, "checkpoint_modes": [],
                "last_mode_change": None, "history": f"a checkpoint at step {stopped[1]}, part-way through training"}
    path = run_folder(config) / RECORD_FILE
    record = TrainingRecord.from_json(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else None
    if record is None or record.fingerprint != model.fingerprint:
        return {"settled": True, "settled_step": None, "settle_by": config.settle_by, "checkpoint_modes": [],
                "last_mode_change": None, "history": "weights the suite did not train: judged as they are"}
    modes = [(c.step, c.mode) for c in record.checkpoints]
    changes = [f"step {step}: {modes[i - 1][1]} -> {mode}" for i, (step, mode) in enumerate(modes) if i and
               mode != modes[i - 1][1]]
    settled = record.settled_step
    return {"settled": settled is not None and settled <= config.settle_by, "settled_step": settled,
            "settle_by": config.settle_by, "checkpoint_modes": [list(pair) for pair in modes],
            "last_mode_change": changes[-1] if changes else None,
            "history": "trained by the suite" if settled is not None else
            f"never settled (final held-out accuracy {record.held_out_accuracy:.3f})"}


def _unsettled(runs: list[dict[str, Any]]) -> str:
    """The runs that had not settled, each with its settled step and last change of mode."""
    return "; ".join(f"{run['model']} (settled_step {run['settled_step']}, needs <= {run['settle_by']}; last mode "
                     f"change {run['last_mode_change'] or 'none'}; {run['history']})"
                     for run in runs if not run["settled"])


def _most_similar(correlation: np.ndarray | None) -> float | None:
    """The largest correlation between two different heads' QK circuits."""
    if correlation is None or len(correlation) < 2:
        return None
    return round(float(np.max(correlation[~np.eye(len(correlation), dtype=bool)])), 3)


def _sorted_half_logits(model: Any, config: Any, ablated_head: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(logits [N, V], targets [N]) of the sorted-half predictions on held-out lists (run through run.py as texts
    such as "3 1 7 SEP 1 3 7"), with one head's output zeroed when `ablated_head` is given."""
    from mechclaims.training.sorting import SPECIALS, held_out

    tokens = held_out(config, HELD_OUT)
    words = [str(n) for n in range(config.numbers)] + ["SEP"]
    texts = [" ".join(words[token - SPECIALS] for token in row) for row in tokens]
    replacements = None
    if ablated_head is not None:
        z = model.activations(texts, [HEAD_OUTPUTS], prepend_bos=False, progress=False).arrays[HEAD_OUTPUTS]
        z[:, :, ablated_head] = 0.0
        replacements = {HEAD_OUTPUTS: z}
    found = model.activations(texts, [LOGITS], prepend_bos=False, progress=False, replacements=replacements)
    if not np.array_equal(found.tokens, tokens):
        raise MechclaimsError(f"model {model.name!r} does not tokenize its own lists back to their numbers: its "
                              "tokenizer does not match its configuration")
    length = config.list_length
    logits = found.arrays[LOGITS][:, length:-1]
    return logits.reshape(-1, logits.shape[-1]).astype(np.float64), tokens[:, length + 1:].reshape(-1)


def _loss_curve(model: Any, config: Any) -> list[float] | None:
    """The run's training losses as at most LOSS_POINTS span means; None for a checkpoint (`/<step>`, the
    untrained `/0` among them), which holds only part of them."""
    from mechclaims.models.kinds.sorting import run_folder
    from mechclaims.training.sorting import RECORD_FILE

    path = run_folder(config) / RECORD_FILE
    if re.search(r"/\d+$", model.name) or not path.is_file():
        return None
    losses = np.asarray(json.loads(path.read_text(encoding="utf-8"))["losses"], dtype=np.float64)
    return [float(span.mean()) for span in np.array_split(losses, min(LOSS_POINTS, len(losses)))]


def head_modes(source: Any, mode: Wanted = "simple") -> Measurement:
    """SORT-1, SORT-2: per run of the family, whether its heads end in `mode` ("simple": vocabulary-splitting or
    copy-suppression). Distribution: 1.0 per run in the mode, else 0.0; statistics: the fraction of runs in each
    mode, the lowest held-out token accuracy, and `unsettled_runs`, the runs that had not settled into their final
    mode by 75% of their training (the claims' gate: a run stopped while still developing says nothing about where
    it ends). Details: each run's row (mode, overlaps, sorted-order scores, settled step, its mode at every
    checkpoint), and `outcomes`, each run's mode, which a regression check compares exactly."""
    wanted = SIMPLE if mode == "simple" else frozenset({mode})
    runs, indicators, advantages, curves, steps = [], [], {}, {}, {}
    for member in _members(source):
        config = _config(member)
        found = head_modes_of(member)
        tokens = _sorted_half_logits(member, config)
        accuracy = float(np.mean(tokens[0].argmax(axis=1) == tokens[1]))
        runs.append({"model": member.name, "weight_decay": config.weight_decay, "mean_gap": round(config.mean_gap, 3),
                     "mode": found.mode, "copy_overlap": round(found.copy_overlap, 3),
                     "suppression_overlap": round(found.suppression_overlap, 3), "coverage": round(found.coverage, 3),
                     "copied": [int(n) for n in found.copied.sum(axis=1)],
                     "suppressed": [int(n) for n in found.suppressed.sum(axis=1)],
                     "pieces": list(found.pieces), "sorted_order": [round(float(v), 3) for v in found.sorted_order],
                     "qk_correlation": _most_similar(found.qk_correlation),
                     "held_out_accuracy": round(accuracy, 4), **_history(member, config)})
        indicators.append(1.0 if found.mode in wanted else 0.0)
        advantages[member.name] = found.advantages.tolist()
        curve = _loss_curve(member, config)
        if curve is not None:
            curves[member.name] = curve
            steps[member.name] = config.steps
    fractions = {name.replace("-", "_"): float(np.mean([run["mode"] == name for run in runs])) for name in MODES}
    return Measurement(
        distribution=np.array(indicators),
        statistics={"mode_fraction": float(np.mean(indicators)), **fractions, "runs": float(len(runs)),
                    "min_accuracy": min(run["held_out_accuracy"] for run in runs),
                    "unsettled_runs": float(sum(not run["settled"] for run in runs))},
        details={"runs": runs, "ov_advantages": advantages, "loss_curves": curves, "steps": steps,
                 "unsettled": _unsettled(runs), "outcomes": {run["model"]: run["mode"] for run in runs}},
    )


def mode_by_gap(source: Any) -> Measurement:
    """SORT-3: whether the mode the heads end in depends on the mean gap between adjacent sorted numbers. The
    family's runs are grouped by their configuration's mean gap; for each mode, its fraction of runs per gap.
    Statistic `largest_change`: the largest difference, over modes, between a mode's highest and lowest fraction
    across the gaps (0: the same mix at every gap; 1: a mode present in every run at one gap and in none at
    another). Distribution: each mode's change."""
    measured = head_modes(source)
    gaps = sorted({run["mean_gap"] for run in measured.details["runs"]})
    table = []
    for gap in gaps:
        modes = [run["mode"] for run in measured.details["runs"] if run["mean_gap"] == gap]
        table.append({"mean_gap": gap, "runs": len(modes), **{mode: modes.count(mode) / len(modes) for mode in MODES}})
    changes = [max(row[mode] for row in table) - min(row[mode] for row in table) for mode in MODES]
    return Measurement(
        distribution=np.array(changes),
        distribution_label="change of a mode's fraction of runs across the mean gaps",
        statistics={"largest_change": float(max(changes)), "gaps": float(len(gaps)),
                    "min_accuracy": measured.statistics["min_accuracy"],
                    "unsettled_runs": measured.statistics["unsettled_runs"]},
        details={**measured.details, "by_gap": table},
    )


def suppressor_ablation(source: Any, ablate: Literal["suppressing", "copying"] = "suppressing") -> Measurement:
    """SORT-5: in each run whose heads end in copy-suppression, zero the suppressing head's output (`ablate`
    "copying": the copying head's, the null) and compare held-out predictions before and after
    (list_sorting.calibration). Distribution: 1.0 per such run where the confidence (mean max probability)
    rises and the expected calibration error grows, else 0.0; `suppression_runs` counts the runs (the claim's
    gate: without one the claim does not apply; so is `unsettled_runs`, as for SORT-1)."""
    rows, indicators, histories = [], [], []
    for member in _members(source):
        histories.append({"model": member.name, **_history(member, _config(member))})
        found = head_modes_of(member)
        if found.mode != "copy-suppression":
            continue
        copier, suppressor = found.suppression_pair
        config = _config(member)
        before = calibration(*_sorted_half_logits(member, config))
        after = calibration(*_sorted_half_logits(member, config, suppressor if ablate == "suppressing" else copier))
        indicators.append(1.0 if after.confidence > before.confidence and
                          after.calibration_error > before.calibration_error else 0.0)
        rows.append({"model": member.name, "copying_head": copier, "suppressing_head": suppressor,
                     "ablated": suppressor if ablate == "suppressing" else copier,
                     **{f"{name}_before": round(getattr(before, name), 5) for name in before.__dataclass_fields__},
                     **{f"{name}_after": round(getattr(after, name), 5) for name in after.__dataclass_fields__}})
    deltas = {f"mean_delta_{name}": float(np.mean([row[f"{name}_after"] - row[f"{name}_before"] for row in rows]))
              for name in ("accuracy", "confidence", "entropy", "calibration_error")} if rows else {}
    return Measurement(
        distribution=np.array(indicators),
        distribution_label="1: confidence up and calibration worse after the ablation",
        statistics={"suppression_runs": float(len(rows)), **deltas,
                    "unsettled_runs": float(sum(not run["settled"] for run in histories))},
        details={"ablations": rows, "unsettled": _unsettled(histories)},
    )


def learning_coefficient_stages(source: Any, lr: float = 1e-4, n_beta: float = 100.0, localization: float = 100.0,
                                chains: int = 2, draws: int = 100) -> Measurement:
    """SORT-4: at every saved checkpoint of each run, the heads' mode and the Local Learning Coefficient (devinterp's
    SGLD estimate; mechclaims.training.learning_coefficient, with these sampler settings). Distribution: per run
    with an overlapping-ranges stage, the final LLC minus the LLC at that stage's end
    (list_sorting.llc_change_after_overlap); `overlap_runs` counts those runs (the claim's gate)."""
    from safetensors.torch import load_file

    from mechclaims.models.kinds.sorting import run_folder
    from mechclaims.training.learning_coefficient import SamplerSettings, learning_coefficient
    from mechclaims.training.sorting import MODEL_FILE, checkpoint_steps, head_modes

    settings = SamplerSettings(lr=lr, n_beta=n_beta, localization=localization, chains=chains, draws=draws)
    changes, runs, curves = [], [], {}
    for member in _members(source):
        config = _config(member)
        steps, modes, means, spreads = checkpoint_steps(config), [], [], []
        for step in steps:
            path = run_folder(config) / f"checkpoint-{step}" / MODEL_FILE
            if not path.is_file():
                raise MechclaimsError(f"{member.name} has no checkpoint at step {step} ({path}): delete its cached run "
                                      "to retrain it")
            tensors = load_file(str(path))
            modes.append(head_modes(tensors, config).mode)
            mean, spread = learning_coefficient(config, tensors, settings)
            means.append(mean)
            spreads.append(spread)
        change, end = llc_change_after_overlap(modes, means), overlap_end(modes)
        if change is not None:
            changes.append(change)
        runs.append({"model": member.name, "overlap_end_step": None if end is None else steps[end],
                     "final_mode": modes[-1], "llc_at_overlap_end": None if end is None else round(means[end], 4),
                     "final_llc": round(means[-1], 4), "change": None if change is None else round(change, 4)})
        curves[member.name] = {"steps": steps, "llc": means, "std": spreads, "modes": modes}
    return Measurement(
        distribution=np.array(changes),
        distribution_label="final LLC minus the LLC at the end of the overlapping-ranges stage",
        statistics={"overlap_runs": float(len(changes)),
                    **({"mean_change": float(np.mean(changes))} if changes else {})},
        details={"llc_runs": runs, "llc_curves": curves},
    )
