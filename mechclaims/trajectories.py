"""Training trajectories: models that are one training run at several steps, and each claim's statistic along them.

A model is a point of a trajectory when its name says so: `<folder>/checkpoint-<step>` (a subfolder as the
transformers Trainer writes it; a folder of them expands into one model per step, `checkpoint_folders`) or
`<hub name>@step<step>` (a hub revision such as a Pythia training branch) or `sorting:<run>/<step>` (a checkpoint of
the suite's own sorting runs; `sorting:<run>/steps` expands into them). `trajectories` reads them back out of
results.json rows, so a saved run renders its trajectories as well as a live one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHECKPOINT_FOLDER = re.compile(r"checkpoint-(\d+)")
POINT = re.compile(r"(?P<trajectory>.+?)(?:/checkpoint-|@step)(?P<step>\d+)"
                   r"|(?P<run>(?:random(?:@\d+)?:)?sorting:[^/]+)/(?P<at>\d+)")


def checkpoint_folders(folder: Path) -> list[Path]:
    """The `checkpoint-<step>` subfolders of `folder`, by step (1, 2, 10: numbers, not text)."""
    found = [(int(match[1]), path) for path in folder.iterdir()
             if path.is_dir() and (match := CHECKPOINT_FOLDER.fullmatch(path.name))]
    return [path for _, path in sorted(found)]


@dataclass(frozen=True)
class Point:
    """One row of a trajectory: the claim's numbers on the model at `step`."""

    step: int
    model: str
    verdict: str
    statistic: float | None
    null_statistic: float | None
    interval: tuple[float, float] | None
    null_interval: tuple[float, float] | None


@dataclass
class Trajectory:
    """One claim along one training run: its points by step, and the threshold they are judged by."""

    name: str
    claim: str
    threshold: dict[str, Any]
    points: list[Point] = field(default_factory=list)

    @property
    def steps(self) -> list[int]:
        return [point.step for point in self.points]


def point_of(model: str) -> tuple[str, int] | None:
    """(trajectory, step) when `model` is a training checkpoint (`d/checkpoint-100`, `org/name@step100`,
    `sorting:ci@0/100`), else None."""
    match = POINT.fullmatch(model)
    if match is None:
        return None
    return (match["trajectory"], int(match["step"])) if match["trajectory"] else (match["run"], int(match["at"]))


def trajectories(results: dict[str, Any]) -> list[Trajectory]:
    """Every (training run, claim) of a results.json with at least two steps, points by step, runs and claims in
    the order results.json first names them."""
    found: dict[tuple[str, str], Trajectory] = {}
    for row in results["results"]:
        place = point_of(row["model"])
        if place is None:
            continue
        name, step = place
        trajectory = found.setdefault((name, row["claim"]), Trajectory(name, row["claim"], row["threshold"]))
        trajectory.points.append(Point(step, row["model"], row["verdict"], row.get("statistic"),
                                       row.get("null_statistic"), _pair(row.get("interval")),
                                       _pair(row.get("null_interval"))))
    for trajectory in found.values():
        trajectory.points.sort(key=lambda point: point.step)
    return [trajectory for trajectory in found.values() if len(set(trajectory.steps)) > 1]


def _pair(value: Any) -> tuple[float, float] | None:
    return None if value is None else (float(value[0]), float(value[1]))
