"""The JSON Schema of results.json ("mechclaims.results/1", described in `results`), checked whenever a saved run is
read: a hand-edited or damaged file is one line naming where it breaks the schema, never a traceback from the
report's templates or figures.

Types are strict where the report or a re-sweep reads a value; keys the suite does not read may be added.
"""

from __future__ import annotations

from typing import Any, Iterator

from mechclaims.claim import FRACTION_STATISTICS, OPS, Verdict
from mechclaims.errors import MechclaimsError

NUMBER = {"type": "number"}
OPTIONAL_NUMBER = {"type": ["number", "null"]}
TEXT = {"type": "string"}
OPTIONAL_TEXT = {"type": ["string", "null"]}
NUMBERS = {"type": "array", "items": NUMBER}
VERDICT = {"enum": [verdict.value for verdict in Verdict]}
JUDGED = (Verdict.PASS.value, Verdict.FAIL.value, Verdict.TRIVIAL.value)
"""Verdicts a threshold decided, whose measurement a sweep reads again."""
FINDING_STATUSES = ("known finding", "changed since baseline", "new finding")
"""A failing claim against its model's baseline (`results.Finding`): recorded there, no longer failing, not recorded."""
INTERVAL = {"oneOf": [{"type": "null"}, {"type": "array", "items": NUMBER, "minItems": 2, "maxItems": 2}]}


def _record(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    """An object with these required and optional keys (other keys allowed)."""
    return {"type": "object", "required": sorted(required), "properties": {**required, **(optional or {})}}


def _map(values: dict[str, Any]) -> dict[str, Any]:
    """An object whose every value has the schema `values`."""
    return {"type": "object", "additionalProperties": values}


def _optional(schema: dict[str, Any]) -> dict[str, Any]:
    return {"oneOf": [{"type": "null"}, schema]}


def _grid(cell: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "array", "items": cell}}


THRESHOLD = _record(
    {"statistic": TEXT, "op": {"enum": list(OPS)}, "value": NUMBER, "origin": TEXT, "describe": TEXT},
    {"at": OPTIONAL_NUMBER, "sweep": {"oneOf": [{"type": "null"}, NUMBERS]}, "overridden": {"type": "boolean"}},
)
CURVE = _record({"x": NUMBERS, "y": NUMBERS, "x_label": TEXT, "y_label": TEXT})
SOME_NUMBERS = {**NUMBERS, "minItems": 1}
DETAILS = _record({}, {
    "circuit_edges": {"type": "array", "items": _record({"from": {"type": "string", "pattern": r"^\d+\."},
                                                         "to": {"type": "string", "pattern": r"^\d+\."},
                                                         "count": NUMBER, "side": {"enum": ["dest", "src"]}})},
    "sv_use": _record({"head": TEXT, "rank": {"type": "integer", "minimum": 1, "maximum": 4096},
                       "rows": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}}}),
    "head_distributions": _map(SOME_NUMBERS),
    "category_cosines": _record({"categories": {"type": "array", "items": TEXT}, "matrix": _grid(NUMBER)}),
    "ov_advantages": _map({"type": "array", "minItems": 1, "items": SOME_NUMBERS}),
    "loss_curves": _map(NUMBERS),
    "steps": _map({"type": "integer", "minimum": 0}),
    "llc_curves": _map(_record({"steps": NUMBERS, "llc": NUMBERS, "std": NUMBERS, "modes": {"type": "array",
                                                                                         "items": TEXT}})),
    "runs": {"type": "array", "items": {"type": "object"}},
})
"""The details the report draws as figures; any other detail is printed as text."""
MEASUREMENT = _record(
    {"statistics": _map(OPTIONAL_NUMBER)},
    {"distribution": {"oneOf": [{"type": "null"}, NUMBERS]}, "distribution_label": TEXT, "details": DETAILS,
     "curves": _map(CURVE),
     "by_param": _map(_record({"values": NUMBERS, "distributions": {"type": "array", "items": NUMBERS}}))},
)
SWEEP = _record({"axis": TEXT, "points": {"type": "array", "items": _record(
    {"x": NUMBER, "statistic": OPTIONAL_NUMBER, "null_statistic": OPTIONAL_NUMBER, "verdict": VERDICT},
    {"interval": INTERVAL, "null_interval": INTERVAL})}})
PARAM_SWEEP = _record({"axis": TEXT, "param": TEXT, "x": NUMBERS, "y": NUMBERS, "statistic": _grid(OPTIONAL_NUMBER),
                       "null_statistic": _grid(OPTIONAL_NUMBER), "verdict": _grid(VERDICT)})
COMPARISON = _record({"status": TEXT}, {"message": OPTIONAL_TEXT, "old_statistic": OPTIONAL_NUMBER,
                                        "new_statistic": OPTIONAL_NUMBER, "old_verdict": OPTIONAL_TEXT,
                                        "new_verdict": OPTIONAL_TEXT, "tolerance": OPTIONAL_NUMBER})


RESULT = _record(
    {"model": TEXT, "claim": TEXT, "verdict": VERDICT, "threshold": THRESHOLD},
    {"reason": OPTIONAL_TEXT, "statistic": OPTIONAL_NUMBER, "null_statistic": OPTIONAL_NUMBER, "interval": INTERVAL,
     "null_interval": INTERVAL, "params": {"type": ["object", "null"]},
     "params_overridden": {"type": ["array", "null"], "items": TEXT}, "seconds": OPTIONAL_NUMBER,
     "cache_hit": {"type": ["boolean", "null"]}, "measurement": _optional(MEASUREMENT), "null": _optional(MEASUREMENT),
     "sweep": _optional(SWEEP), "param_sweep": _optional(PARAM_SWEEP), "baseline": _optional(COMPARISON),
     "finding": _optional(_record({"status": {"enum": list(FINDING_STATUSES)}, "message": TEXT})),
     "traceback": OPTIONAL_TEXT},
)
CLAIM = _record(
    {"paper": TEXT, "section": TEXT, "statement": TEXT, "threshold": THRESHOLD, "rationale": OPTIONAL_TEXT,
     "params": {"type": "object"}, "null": OPTIONAL_TEXT, "trivial_if_null_passes": {"type": "boolean"}},
    {"tolerance": OPTIONAL_NUMBER,
     "inputs": {"type": ["array", "null"], "items": _record({"dataset": TEXT}, {"options": {"type": "object"}})},
     "gates": {"type": "array", "items": _record({"statistic": TEXT, "op": TEXT, "value": NUMBER, "reason": TEXT})},
     "subjects": {"type": "array", "items": TEXT}, "slow": {"type": "boolean"}},
)
COUNT = {"type": "integer", "minimum": 0}
CAPABILITIES = _record({"architecture": TEXT, "kind": TEXT, "positions": TEXT, "norm": TEXT,
                        "gated_mlp": {"type": "boolean"}, "tied_embeddings": {"type": "boolean"}, "d_model": COUNT,
                        "n_layers": COUNT, "n_heads": COUNT, "n_kv_heads": COUNT, "d_vocab": COUNT})
MODEL = _record(
    {"fingerprint": TEXT, "capabilities": CAPABILITIES, "resolved_from": OPTIONAL_TEXT},
    {"initialised_at_load": {"type": "array", "items": TEXT}, "recipe": OPTIONAL_TEXT},
)
ARGV = {"type": "array", "items": TEXT}
TIME = {"type": "number", "minimum": 0, "maximum": 1e11}
"""Seconds since 1970 that a calendar can show (to the year 5138)."""
RUN = _record(
    {"id": TEXT, "started": TIME, "versions": _map(OPTIONAL_TEXT), "git_revision": OPTIONAL_TEXT,
     "machine": _record({"platform": TEXT, "cpus": {"type": ["integer", "null"]}}),
     "threads": {"type": ["integer", "null"]}, "argv": ARGV},
    {"finished": {"oneOf": [{"type": "null"}, TIME]}, "interrupted": {"type": "boolean"},
     "merged": {"type": "array", "items": _record({"id": TEXT, "git_revision": OPTIONAL_TEXT, "argv": ARGV})},
     "product_kernel": _optional(_record({"name": TEXT, "reason": TEXT})),
     "cluster": _record({"engine": TEXT, "address": TEXT, "local": {"type": "boolean"},
                         "workers": {"type": "integer", "minimum": 0}, "placed_by_memory": {"type": "boolean"},
                         "tasks": _map(_record({"worker": OPTIONAL_TEXT, "attempts": {"type": "integer", "minimum": 0},
                                                "memory_bytes": {"type": "integer", "minimum": 0},
                                                "error": OPTIONAL_TEXT})),
                         "retried": {"type": "array", "items": TEXT}})},
)
RESULTS = _record({"schema": TEXT, "run": RUN, "models": _map(MODEL), "claims": _map(CLAIM),
                   "results": {"type": "array", "items": RESULT}})


def check_results(data: Any, where: str) -> None:
    """`data` fits RESULTS and its arrays fit one another (`_misfits`), or a MechclaimsError naming the first
    misfit's place in the file and the fix."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    error = best_match(Draft202012Validator(RESULTS).iter_errors(data))
    found = (list(error.absolute_path), " ".join(error.message.split())[:200]) if error else next(_misfits(data), None)
    if found is not None:
        path, problem = found
        place = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".")
        raise MechclaimsError(f"{where} is a damaged results file (at {place or 'the top'}: {problem}): re-run the claims")


def _misfits(data: dict[str, Any]) -> Iterator[tuple[list[Any], str]]:
    """What a schema cannot say: a judged row (PASS, FAIL, TRIVIAL) holds the number its threshold reads (the named
    statistic, or a distribution to take a fraction of), a curve's x and y are as long as each other, a kept parameter has one
    distribution per value, an overridden parameter is a parameter, and a parameter sweep's value is a number and
    its grids have one row per y and one column per x; a cluster's retried tasks are among its tasks."""
    cluster = data["run"].get("cluster") or {"tasks": {}, "retried": []}
    for index, spec in enumerate(cluster["retried"]):
        if spec not in cluster["tasks"]:
            yield ["run", "cluster", "retried", index], f"{spec!r} is retried but not among the cluster's tasks"
    for index, row in enumerate(data["results"]):
        statistic = row["threshold"]["statistic"]
        judged = row["verdict"] in JUDGED
        for role in ("measurement", "null"):
            measured = row.get(role) or {}
            if judged and measured and statistic in FRACTION_STATISTICS and not measured.get("distribution"):
                yield ["results", index, role, "distribution"], f"{statistic} needs a distribution of one value or more"
            elif judged and measured and statistic not in FRACTION_STATISTICS and measured["statistics"].get(statistic) is None:
                yield ["results", index, role, "statistics"], f"the threshold's statistic {statistic} has no value"
            for key, problem in _detail_misfits(measured.get("details") or {}):
                yield ["results", index, role, "details", *key], problem
            for name, curve in (measured.get("curves") or {}).items():
                if len(curve["x"]) != len(curve["y"]):
                    yield ["results", index, role, "curves", name], f"x has {len(curve['x'])} points, y {len(curve['y'])}"
            for name, axis in (measured.get("by_param") or {}).items():
                if len(axis["values"]) != len(axis["distributions"]):
                    yield (["results", index, role, "by_param", name],
                           f"{len(axis['values'])} values, {len(axis['distributions'])} distributions")
        params = row.get("params") or {}
        for name in row.get("params_overridden") or ():
            if name not in params:
                yield ["results", index, "params_overridden"], f"{name!r} is overridden but not among the params"
        grid = row.get("param_sweep")
        kept = params.get(grid["param"]) if grid else None
        if kept is not None and (isinstance(kept, bool) or not isinstance(kept, (int, float))):
            yield ["results", index, "params", grid["param"]], f"the swept parameter's value {kept!r} is not a number"
        for key in ("statistic", "null_statistic", "verdict") if grid else ():
            if [len(cells) for cells in grid[key]] != [len(grid["x"])] * len(grid["y"]):
                yield ["results", index, "param_sweep", key], f"not {len(grid['y'])} rows of {len(grid['x'])}"


def _detail_misfits(details: dict[str, Any]) -> Iterator[tuple[list[Any], str]]:
    """Figure details whose arrays do not fit one another: selected singular vectors outside the rank, a category
    matrix that is not categories x categories, a run's OV grid that is not rectangular, an LLC curve whose arrays
    differ in length, a run table whose rows lack a mode, a weight decay or a mean gap."""
    use = details.get("sv_use")
    if use and any(not 0 <= column < use["rank"] for row in use["rows"] for column in row):
        yield ["sv_use", "rows"], f"a selected singular vector lies outside rank {use['rank']}"
    grid = details.get("category_cosines")
    if grid and [len(row) for row in grid["matrix"]] != [len(grid["categories"])] * len(grid["categories"]):
        yield ["category_cosines", "matrix"], f"not {len(grid['categories'])} x {len(grid['categories'])}"
    for run, rows in (details.get("ov_advantages") or {}).items():
        if len({len(row) for row in rows}) != 1:
            yield ["ov_advantages", run], "rows of different lengths"
    for run, curve in (details.get("llc_curves") or {}).items():
        if len({len(curve[key]) for key in ("steps", "llc", "std", "modes")}) != 1:
            yield ["llc_curves", run], "steps, llc, std and modes differ in length"
    for index, run in enumerate(details.get("runs") or ()):
        if "mode" in run and not (isinstance(run["mode"], str) and all(
                isinstance(run.get(key), (int, float)) and not isinstance(run.get(key), bool)
                for key in ("weight_decay", "mean_gap"))):
            yield ["runs", index], "a run with a mode needs a text mode and numbers weight_decay and mean_gap"
