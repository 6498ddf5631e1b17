"""The models a run measures, each loaded once (a family's members too), with their weight nulls; a failed load
is remembered, not retried (every claim on that model gets the same one-line ERROR)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from mechclaims.errors import MechclaimsError
from mechclaims.models import GaussianNull, Model, load_model, specs
from mechclaims.models.family import Family
from mechclaims.nulls import NULL_SEED, WeightNull


@dataclass
class ModelPool:
    """`remember`: models known by their identity in the cache folder load only when read (`load_model`)."""

    models: dict[str, Model | Family] = field(default_factory=dict)
    nulls: dict[str, GaussianNull] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    remember: bool = True

    def get(self, spec: str) -> Model | Family:
        """The model `spec` names, or the Family of its members' models when it names several."""
        if spec in self.failures:
            raise MechclaimsError(self.failures[spec])
        if spec not in self.models:
            try:
                members = specs.members(specs.parse(spec))
                self.models[spec] = (Family(spec, tuple(self.get(m) for m in members)) if members
                                     else load_model(spec, self.remember))
            except MechclaimsError as exc:
                self.failures[spec] = str(exc)
                raise
        return self.models[spec]

    def prepare(self, wanted: Iterable[str]) -> None:
        """Ready together what the named models need before they load (their kinds' `prepare`: the suite's own
        models train in parallel, one process per CPU thread). A spec that fails here is left for `get`, which
        reports it."""
        pending = [spec for spec in dict.fromkeys(wanted) if spec not in self.models and spec not in self.failures]
        try:
            specs.prepare([specs.parse(spec) for spec in pending], torch.get_num_threads())
        except Exception:  # preparing only saves time: `get` does what is left and reports what fails
            return

    def add(self, model: Model | Family) -> Model | Family:
        """A model loaded elsewhere (e.g. in a notebook), known by its name from now on; one with other weights
        under a name already known replaces it."""
        known = self.models.get(model.name)
        if known is None or known.fingerprint != model.fingerprint:
            self.models[model.name] = model
        return self.models[model.name]

    def weight_null(self, model: Model, null: WeightNull) -> GaussianNull:
        """The weight null of a loaded model, built once."""
        key = f"{null.role}:{model.name}"
        if key not in self.nulls:
            self.nulls[key] = GaussianNull(model, NULL_SEED, null.keep)
        return self.nulls[key]
