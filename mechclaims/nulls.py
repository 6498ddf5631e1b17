"""Null baselines, in three kinds (docs/design.md): what a claim's statistic is compared against.

- Weight nulls: the same measurement on i.i.d. Gaussian weights of the same shapes, keeping the
  matrices named in `keep` (`random_targets` keeps the token vectors a search runs over). They
  have no forward pass, so a claim that runs inputs cannot use one.
- Model nulls: another model spec derived from the model's, loaded like any model, so it can run
  prompts: the `random:` model of the same architecture (every matrix re-drawn with its own mean
  and std), or, for the suite's trained models, their untrained initialisation (`<spec>/0`) or the same
  configuration trained on shuffled targets (`<spec>/shuffled`).
- Measurement nulls: a parameter of the measure set to its null value (e.g. a random basis).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

NULL_SEED = 0


@dataclass(frozen=True)
class WeightNull:
    """Gaussian weights of the same shapes; matrices named in `keep` stay the model's own."""

    name: str
    keep: frozenset[str] = frozenset()

    @property
    def role(self) -> str:
        return f"{self.name}:{NULL_SEED}"


@dataclass(frozen=True)
class ModelNull:
    """The model spec `template` makes of the model's (`{spec}` stands for it)."""

    name: str
    template: str

    @property
    def role(self) -> str:
        return f"{self.name}:{NULL_SEED}"

    def spec_of(self, spec: str) -> str:
        return self.template.format(spec=spec)


@dataclass(frozen=True)
class MeasurementNull:
    """The same model measured with `param = value`, the measure's own null setting."""

    param: str
    value: Any

    @property
    def name(self) -> str:
        return f"{self.param}={self.value}"

    @property
    def role(self) -> str:
        return f"measurement:{self.name}"


Null = Union[WeightNull, ModelNull, MeasurementNull]
NULLS: dict[str, Null] = {
    "gaussian": WeightNull("gaussian"),
    "random_targets": WeightNull("random_targets", frozenset({"W_E", "W_pos", "W_U"})),
    "random_model": ModelNull("random_model", "random:{spec}"),
    "untrained": ModelNull("untrained", "{spec}/0"),
    "shuffled_targets": ModelNull("shuffled_targets", "{spec}/shuffled"),
}
"""Null baselines a claim names by string; a MeasurementNull is given as an object."""
