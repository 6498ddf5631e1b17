"""Report figures as self-contained `data:image/png;base64,...` URIs (matplotlib, Agg).

Each figure is a pure function of its arguments, so its URI is kept in the cache folder under a hash of the
function, its arguments, this module's code and matplotlib's version (`remembered`): a report re-rendered from
the same results draws nothing.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

VERDICT_COLOURS = {"PASS": "#2e7d32", "FAIL": "#c62828", "TRIVIAL": "#f9a825"}
PNG_URI = "data:image/png;base64,"
FOLDER = "figures"


def _digest(value: Any, into: Any) -> None:
    """Feed `value` (JSON-like data, numbers, arrays, dataclasses) to the hash `into`, long number lists as bytes."""
    if isinstance(value, (list, tuple, np.ndarray)) and len(value) > 16:
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            array = None
        if array is not None:
            into.update(f"array{array.shape}".encode())
            into.update(array.tobytes())
            return
    if isinstance(value, dict):
        into.update(b"{")
        for key in sorted(value, key=str):
            into.update(json.dumps(str(key)).encode())
            _digest(value[key], into)
        into.update(b"}")
    elif isinstance(value, (list, tuple)):
        into.update(b"[")
        for item in value:
            _digest(item, into)
        into.update(b"]")
    else:
        into.update(repr(value).encode())


def remembered(draw: Callable[..., str]) -> Callable[..., str]:
    """`draw`'s URI from the cache folder when the same figure was drawn before, else drawn and kept (atomically;
    an unreadable or malformed entry is drawn again)."""

    @functools.wraps(draw)
    def cached(*args: Any, **kwargs: Any) -> str:
        from mechclaims.atomic import atomic_write_text
        from mechclaims.cache import source_hash, default_cache_dir

        digest = hashlib.sha256(f"{draw.__qualname__} {matplotlib.__version__} {source_hash(__name__)}".encode())
        _digest([args, kwargs], digest)
        key = digest.hexdigest()
        path = default_cache_dir() / FOLDER / key[:2] / f"{key}.txt"
        try:
            uri = path.read_text(encoding="ascii")
            if uri.startswith(PNG_URI):
                return uri
        except (OSError, ValueError):
            pass
        uri = draw(*args, **kwargs)
        try:
            atomic_write_text(path, uri)
        except OSError:
            pass
        return uri

    return cached


@dataclass(frozen=True)
class ThresholdMarks:
    """Where a claim's threshold sits on a sweep: `x` on the swept axis (the cut-off, or the value), `y`
    the value the swept fraction must meet (None when the value itself is swept); `whose` labels it
    ("paper", "suite" or "overridden")."""

    x: float
    y: float | None
    axis_label: str
    whose: str

    def draw(self, axes: Any) -> None:
        vertical = "threshold" if self.y is None else "cut-off"
        axes.axvline(self.x, color="black", linestyle="--", linewidth=1, label=f"{self.whose} {vertical}")
        if self.y is not None:
            axes.axhline(self.y, color="black", linestyle="-.", linewidth=0.8, label=f"{self.whose} value")
        axes.set_xlabel(self.axis_label)


def _png_uri(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return PNG_URI + base64.b64encode(buffer.getvalue()).decode("ascii")


@remembered
def distribution_histogram(real: list[float], null: list[float] | None, label: str, cutoff: float | None = None) -> str:
    """Real and null distributions on one density histogram with shared bins; the cut-off as a line."""
    figure, axes = plt.subplots(figsize=(5, 3))
    values = np.asarray(real, dtype=float)
    nulls = None if null is None else np.asarray(null, dtype=float)
    everything = values if nulls is None else np.concatenate([values, nulls])
    bins = np.histogram_bin_edges(everything[np.isfinite(everything)], bins=60)
    axes.hist(values, bins=bins, density=True, alpha=0.6, color="#1565c0", label="model")
    if nulls is not None:
        axes.hist(nulls, bins=bins, density=True, alpha=0.5, color="#9e9e9e", label="null")
    if cutoff is not None:
        axes.axvline(cutoff, color="black", linestyle="--", linewidth=1, label=f"threshold at {cutoff:g}")
    axes.set_xlabel(label)
    axes.set_ylabel("density")
    axes.legend(fontsize=7)
    return _png_uri(figure)


def _interval_band(axes: Any, xs: list[float], intervals: list[Any], colour: str) -> None:
    """Shade the 95% intervals around a curve, where every point has one."""
    if intervals and all(intervals):
        axes.fill_between(xs, [i[0] for i in intervals], [i[1] for i in intervals], color=colour, alpha=0.15,
                          linewidth=0)


@remembered
def sweep_curve(points: list[dict[str, Any]], marks: ThresholdMarks) -> str:
    """Statistic against the swept threshold, real and null (95% bands for fractions), markers coloured by verdict."""
    figure, axes = plt.subplots(figsize=(5, 3))
    xs = [p["x"] for p in points]
    axes.plot(xs, [p["statistic"] for p in points], color="#1565c0", linewidth=1, label="model")
    axes.scatter(xs, [p["statistic"] for p in points], c=[VERDICT_COLOURS[p["verdict"]] for p in points], s=18, zorder=3)
    _interval_band(axes, xs, [p.get("interval") for p in points], "#1565c0")
    if all(p["null_statistic"] is not None for p in points):
        axes.plot(xs, [p["null_statistic"] for p in points], color="#9e9e9e", linestyle=":", label="null")
        _interval_band(axes, xs, [p.get("null_interval") for p in points], "#9e9e9e")
    marks.draw(axes)
    axes.set_ylabel("statistic")
    axes.legend(fontsize=7)
    return _png_uri(figure)


@remembered
def measurement_curve(real: dict[str, Any], null: dict[str, Any] | None) -> str:
    """A measurement's curve (e.g. fraction explained against bundle size or layer), real beside null."""
    figure, axes = plt.subplots(figsize=(5, 3))
    axes.plot(real["x"], real["y"], color="#1565c0", marker="o", markersize=3, label="model")
    if null is not None:
        axes.plot(null["x"], null["y"], color="#9e9e9e", linestyle=":", marker="o", markersize=3, label="null")
    axes.set_xlabel(real["x_label"])
    axes.set_ylabel(real["y_label"])
    axes.legend(fontsize=7)
    return _png_uri(figure)


@remembered
def sweep_comparison(curves: dict[str, list[dict[str, Any]]], marks: ThresholdMarks) -> str:
    """One claim's sweep across models: each model's statistic (solid) and its null (dotted, same colour)."""
    figure, axes = plt.subplots(figsize=(6, 3.4))
    for index, (model, points) in enumerate(curves.items()):
        colour = plt.get_cmap("tab10")(index % 10)
        xs = [p["x"] for p in points]
        axes.plot(xs, [p["statistic"] for p in points], color=colour, linewidth=1.2, label=model)
        if all(p["null_statistic"] is not None for p in points):
            axes.plot(xs, [p["null_statistic"] for p in points], color=colour, linestyle=":", linewidth=1,
                      label=f"{model} null")
    marks.draw(axes)
    axes.set_ylabel("statistic")
    axes.legend(fontsize=6)
    return _png_uri(figure)


@remembered
def trajectory_curve(points: list[dict[str, Any]], value: float, statistic: str, title: str) -> str:
    """A claim along training: the statistic against the step, markers coloured by verdict, the null dotted (95%
    bands for fractions) and the threshold's value as a line; a log step axis when the steps span a factor of 100."""
    figure, axes = plt.subplots(figsize=(5.5, 3.2))
    steps = [p["step"] for p in points]
    measured = [p for p in points if p["statistic"] is not None]
    axes.plot([p["step"] for p in measured], [p["statistic"] for p in measured], color="#1565c0", linewidth=1,
              label="model")
    axes.scatter([p["step"] for p in measured], [p["statistic"] for p in measured],
                 c=[VERDICT_COLOURS[p["verdict"]] for p in measured], s=20, zorder=3)
    _interval_band(axes, [p["step"] for p in measured], [p["interval"] for p in measured], "#1565c0")
    nulls = [p for p in points if p["null_statistic"] is not None]
    if nulls:
        axes.plot([p["step"] for p in nulls], [p["null_statistic"] for p in nulls], color="#9e9e9e", linestyle=":",
                  label="null")
        _interval_band(axes, [p["step"] for p in nulls], [p["null_interval"] for p in nulls], "#9e9e9e")
    axes.axhline(value, color="black", linestyle="--", linewidth=0.8, label=f"threshold {value:g}")
    if min(steps) > 0 and max(steps) >= 100 * min(steps):
        axes.set_xscale("log")
    axes.set_xlabel("training step")
    axes.set_ylabel(statistic)
    axes.set_title(title, fontsize=8)
    axes.legend(fontsize=6)
    return _png_uri(figure)


@remembered
def sweep_heatmap(grid: dict[str, Any], threshold_x: float, param_value: float | None, value: float) -> str:
    """A two-parameter sweep: the statistic over (cut-off x parameter), model beside null, the contour
    where it crosses the claim's value, and the claim's own cut-off and parameter marked."""
    panels = [("model", grid["statistic"])]
    if all(v is not None for row in grid["null_statistic"] for v in row):
        panels.append(("null", grid["null_statistic"]))
    figure, axes_row = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.4), squeeze=False)
    xs, ys = np.asarray(grid["x"]), np.asarray(grid["y"])
    image = None
    for axes, (title, values) in zip(axes_row[0], panels):
        z = np.asarray(values, dtype=float)
        image = axes.pcolormesh(xs, ys, z, shading="nearest", vmin=0.0, vmax=1.0, cmap="viridis")
        if len(xs) > 1 and len(ys) > 1 and z.min() < value < z.max():
            axes.contour(xs, ys, z, levels=[value], colors="white", linewidths=1.2)
        axes.axvline(threshold_x, color="red", linestyle="--", linewidth=1)
        if param_value is not None:
            axes.axhline(param_value, color="red", linestyle="--", linewidth=1)
        axes.set_title(f"{title} (white: statistic = {value:g}; red: the claim's setting)", fontsize=7)
        axes.set_xlabel("cut-off")
        axes.set_ylabel(grid["param"])
    figure.colorbar(image, ax=axes_row[0][-1], label="statistic")
    return _png_uri(figure)


CIRCUIT_EDGES_DRAWN = 25
"""The traced-circuit figure draws this many of the strongest edges (a traced graph can hold 750 heads)."""


def drawn_edges(edges: list[dict[str, Any]], drawn: int = CIRCUIT_EDGES_DRAWN) -> list[dict[str, Any]]:
    """The edges the circuit figure draws: the first `drawn` (the list comes strongest first) and every planted one."""
    return edges[:drawn] + [edge for edge in edges[drawn:] if edge.get("planted")]


@remembered
def circuit_graph(edges: list[dict[str, Any]], title: str, drawn: int = CIRCUIT_EDGES_DRAWN) -> str:
    """The traced circuit's `drawn` strongest edges (the list comes strongest first; a planted model's known edges
    are always drawn, in red): heads ("L.H@role") placed by layer (networkx multipartite layout), edges upstream ->
    downstream, width by the number of prompts holding them; query-side solid, key-side dashed. The report's table
    below the figure lists every edge."""
    import networkx as nx

    shown = drawn_edges(edges, drawn)
    graph = nx.DiGraph()
    for edge in shown:
        graph.add_edge(edge["from"], edge["to"], count=edge["count"], side=edge["side"],
                       planted=bool(edge.get("planted")))
    for node in graph.nodes:
        graph.nodes[node]["layer"] = int(str(node).split(".")[0])
    positions = nx.multipartite_layout(graph, subset_key="layer")
    figure, axes = plt.subplots(figsize=(8, 5))
    top = max((e["count"] for e in shown), default=1)
    for side, style in (("dest", "solid"), ("src", "dashed")):
        for planted, colour in ((False, "#424242"), (True, "#d32f2f")):
            chosen = [(a, b) for a, b, d in graph.edges(data=True) if d["side"] == side and d["planted"] == planted]
            widths = [0.5 + 3 * graph.edges[e]["count"] / top for e in chosen]
            nx.draw_networkx_edges(graph, positions, edgelist=chosen, width=widths, style=style, alpha=0.7, ax=axes,
                                   arrows=True, arrowsize=8, edge_color=colour)
    nx.draw_networkx_nodes(graph, positions, node_size=120, node_color="#90caf9", ax=axes)
    nx.draw_networkx_labels(graph, positions, font_size=6, ax=axes)
    planted_note = "; red: planted edges" if any(edge.get("planted") for edge in edges) else ""
    axes.set_title(f"{title}: strongest {min(drawn, len(edges))} of {len(edges)} edges{planted_note}", fontsize=9)
    axes.axis("off")
    return _png_uri(figure)


@remembered
def usage_heatmap(rows: list[list[int]], rank: int, title: str) -> str:
    """Which singular vectors (columns) each firing (rows) selected."""
    grid = np.zeros((max(len(rows), 1), rank))
    for i, chosen in enumerate(rows):
        grid[i, chosen] = 1.0
    figure, axes = plt.subplots(figsize=(6, 3.5))
    axes.imshow(grid, aspect="auto", cmap="Greys", interpolation="nearest")
    axes.set_xlabel("singular vector index")
    axes.set_ylabel("firing (prompt)")
    axes.set_title(title, fontsize=9)
    return _png_uri(figure)


@remembered
def category_heatmap(categories: list[str], matrix: list[list[float]], title: str) -> str:
    """Mean cosine between the words of two categories (diagonal: within one), each cell annotated."""
    values = np.asarray(matrix, dtype=float)
    size = 0.45 * len(categories) + 2
    figure, axes = plt.subplots(figsize=(size + 1, size))
    image = axes.imshow(values, cmap="viridis")
    axes.set_xticks(range(len(categories)), categories, rotation=60, ha="right", fontsize=7)
    axes.set_yticks(range(len(categories)), categories, fontsize=7)
    for (i, j), value in np.ndenumerate(values):
        axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=5, color="white")
    axes.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axes, label="mean cosine")
    return _png_uri(figure)


@remembered
def head_histograms(real: dict[str, list[float]], null: list[float] | None, label: str) -> str:
    """Small multiples, one per head: its distribution (model) over the pooled null distribution."""
    heads = list(real)[:6]
    nulls = None if null is None else np.asarray(null, dtype=float)
    figure, axes = plt.subplots(1, max(len(heads), 1), figsize=(2.2 * max(len(heads), 1), 2.4), squeeze=False)
    for axis, head in zip(axes[0], heads):
        values = np.asarray(real[head], dtype=float)
        bins = np.histogram_bin_edges(values if nulls is None else np.concatenate([values, nulls]), bins=20)
        axis.hist(values, bins=bins, density=True, alpha=0.6, color="#1565c0", label="model")
        if nulls is not None:
            axis.hist(nulls, bins=bins, density=True, alpha=0.5, color="#9e9e9e", label="null (all heads)")
        axis.set_title(f"head {head}", fontsize=8)
        axis.tick_params(labelsize=6)
    axes[0][0].set_xlabel(label, fontsize=7)
    axes[0][0].legend(fontsize=6)
    return _png_uri(figure)


@remembered
def head_diagonals(advantages: dict[str, list[list[float]]], title: str) -> str:
    """One panel per run: each head's OV diagonal advantage over the numbers (heads x numbers, diverging colours
    centred on zero: copied numbers warm, suppressed cold)."""
    runs = list(advantages)[:10]
    figure, axes = plt.subplots(len(runs), 1, figsize=(7, 0.5 + 0.75 * len(runs)), squeeze=False)
    for axis, run in zip(axes[:, 0], runs):
        values = np.asarray(advantages[run], dtype=float)
        limit = float(np.abs(values).max()) or 1.0
        axis.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
        axis.set_yticks(range(len(values)), [f"h{h}" for h in range(len(values))], fontsize=6)
        axis.set_xticks([])
        axis.set_ylabel(run, fontsize=6, rotation=0, ha="right", va="center")
    axes[-1, 0].set_xticks(range(0, len(values[0]), 2), [str(n) for n in range(0, len(values[0]), 2)], fontsize=6)
    axes[-1, 0].set_xlabel("number", fontsize=7)
    axes[0, 0].set_title(f"{title}\nred: copies, blue: suppresses; each run on its own scale", fontsize=8)
    return _png_uri(figure)


@remembered
def loss_curves(curves: dict[str, list[float]], steps: dict[str, int], title: str) -> str:
    """Every run's training loss (span means) against the training step, log scale."""
    figure, axes = plt.subplots(figsize=(6, 3))
    for run, losses in curves.items():
        axes.plot(np.linspace(0, steps.get(run, len(losses)), len(losses)), losses, linewidth=1, label=run)
    axes.set_yscale("log")
    axes.set_xlabel("training step", fontsize=8)
    axes.set_ylabel("training loss (nats)", fontsize=8)
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=6, ncol=2)
    return _png_uri(figure)


MODE_COLOURS = {"vocabulary-splitting": "#1565c0", "copy-suppression": "#6a1b9a", "overlapping": "#ef6c00",
                "none": "#9e9e9e"}


@remembered
def mode_strips(runs: list[dict[str, Any]], title: str) -> str:
    """A strip per run: its head mode at every saved checkpoint (coloured as in `mode_fractions`), a black tick at
    the step it settled at and a dashed line where it had to settle by (75% of training)."""
    shown = [run for run in runs if run.get("checkpoint_modes")][:12]
    figure, axes = plt.subplots(figsize=(7, 0.8 + 0.3 * len(shown)))
    for row, run in enumerate(shown):
        steps = [int(step) for step, _ in run["checkpoint_modes"]]
        width = steps[0] if len(steps) == 1 else steps[1] - steps[0]
        for step, mode in run["checkpoint_modes"]:
            axes.barh(row, width, left=int(step) - width, color=MODE_COLOURS.get(mode, "#000000"), height=0.8)
        if run.get("settled_step") is not None:
            axes.plot([run["settled_step"] - width] * 2, [row - 0.45, row + 0.45], color="black", linewidth=2)
        axes.axvline(run["settle_by"], color="black", linestyle="--", linewidth=0.8)
    axes.set_yticks(range(len(shown)), [run["model"] for run in shown], fontsize=6)
    axes.invert_yaxis()
    axes.set_xlabel("training step (tick: settled from here; dashed: must settle by)", fontsize=8)
    axes.set_title(title, fontsize=9)
    for mode, colour in MODE_COLOURS.items():
        axes.barh(0, 0, color=colour, label=mode)
    axes.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1, 1))
    return _png_uri(figure)


@remembered
def mode_fractions(groups: dict[str, dict[str, float]], title: str) -> str:
    """Stacked bars: the fraction of runs in each head mode, per group of runs (weight decay, mean gap)."""
    figure, axes = plt.subplots(figsize=(1.6 + 1.3 * len(groups), 3))
    bottom = np.zeros(len(groups))
    for mode, colour in MODE_COLOURS.items():
        heights = np.array([fractions.get(mode, 0.0) for fractions in groups.values()])
        axes.bar(range(len(groups)), heights, bottom=bottom, color=colour, label=mode)
        bottom += heights
    axes.set_xticks(range(len(groups)), list(groups), fontsize=7)
    axes.set_ylim(0, 1)
    axes.set_ylabel("fraction of runs", fontsize=8)
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1, 1))
    return _png_uri(figure)


@remembered
def llc_curves(curves: dict[str, dict[str, list]], title: str) -> str:
    """Every run's LLC estimate (with its spread over chains) against the training step; checkpoints whose heads
    overlap are marked with circles."""
    figure, axes = plt.subplots(figsize=(6, 3))
    for run, curve in curves.items():
        steps, values, spread = (np.asarray(curve[key], dtype=float) for key in ("steps", "llc", "std"))
        line = axes.plot(steps, values, linewidth=1, label=run)[0]
        axes.fill_between(steps, values - spread, values + spread, color=line.get_color(), alpha=0.15)
        overlapping = np.array([mode == "overlapping" for mode in curve["modes"]])
        axes.plot(steps[overlapping], values[overlapping], "o", color=line.get_color(), markersize=3)
    axes.set_xlabel("training step (circles: heads in overlapping ranges)", fontsize=8)
    axes.set_ylabel("LLC estimate", fontsize=8)
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=6, ncol=2)
    return _png_uri(figure)
