"""report.html from a synthetic results dict: structure, escaping, self-containment, re-rendering."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from mechclaims.__main__ import main
from mechclaims.report import render_html, render_report
from mechclaims.results import merge_results

from helpers import synthetic_results


class _Tags(HTMLParser):
    """Collects start tags with their attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _tags(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(html)
    return parser.tags


def test_matrix_has_one_row_per_claim_and_a_cell_per_model() -> None:
    html = render_html(synthetic_results())
    rows = re.findall(r'<tr class="claim-row">(.*?)</tr>', html, flags=re.S)
    assert len(rows) == 2
    assert all(len(re.findall(r"<td", row)) == 2 + 2 for row in rows)
    for verdict_class in ("verdict-PASS", "verdict-FAIL", "verdict-NA", "verdict-TRIVIAL"):
        assert verdict_class in html


def test_model_strings_are_escaped_never_markup() -> None:
    html = render_html(synthetic_results())
    assert "&lt;script&gt;document.title=&#34;pwned&#34;&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    tags = _tags(html)
    assert not [t for t, _ in tags if t in ("script", "b")]
    assert not [a for t, a in tags if t == "img" and not (a.get("src") or "").startswith("data:image/png;base64,")]


def test_report_is_self_contained() -> None:
    html = render_html(synthetic_results())
    for _, attrs in _tags(html):
        for name in ("src", "href"):
            assert not (attrs.get(name) or "").startswith(("http:", "https:", "//"))


def test_sections_show_statistic_null_ratio_threshold_origin_and_reasons() -> None:
    html = render_html(synthetic_results())
    assert "real / null = 1.5" in html
    assert "<code>variant=&lt;raw&gt;</code>" in html
    assert "1.5</strong> (95% CI [0.4, 0.6]);" in html and "null = 1 (95% CI [0.01, 0.05]);" in html
    assert "mean_abs_ratio &lt;= 2" in html and 'class="origin origin-suite"' in html
    assert "the model uses RMSNorm, which does not centre vectors" in html
    assert "--model auto resolved to <strong>smollm2-135m</strong>" in html
    assert html.count("data:image/png;base64,") == 1 + 4 + 3 + 2
    assert html.count('alt="fraction at cosine &gt;= 0.5 against bundle size, model vs null"') == 3


def test_sweeps_render_per_model_and_as_a_heatmap() -> None:
    """Two models' sweeps of one claim share a figure; a two-parameter sweep is a heatmap."""
    html = render_html(synthetic_results())
    assert html.count('alt="sweep of the threshold on 2 models"') == 1
    assert html.count('alt="sweep of the cut-off and max_tokens"') == 1


def test_changed_since_baseline_is_marked_in_the_matrix_and_listed() -> None:
    html = render_html(synthetic_results())
    matrix = re.search(r'<table id="matrix">(.*?)</table>', html, flags=re.S)
    assert matrix is not None and matrix.group(1).count('class="changed"') == 1
    assert "changed since baseline (regression)" in matrix.group(1)
    listed = re.search(r'<ul id="changed">(.*?)</ul>', html, flags=re.S)
    assert listed is not None and "moved +0.5: old 2.5 (FAIL), new 3 (FAIL), tolerance ±0.01" in listed.group(1)
    assert "on &lt;img src=x onerror=alert(1)&gt;" in listed.group(1)


def test_report_is_written_atomically_and_rerendered_from_saved_results(tmp_path: Path) -> None:
    """`python -m mechclaims report results.json` re-renders without loading any model."""
    saved = tmp_path / "results.json"
    saved.write_text(json.dumps(synthetic_results()))
    out = tmp_path / "out" / "report.html"
    assert main(["report", str(saved), "--out", str(out)]) == 0
    assert out.read_text() == render_html(synthetic_results())
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]
    render_report(synthetic_results(), out)
    assert out.stat().st_mode & 0o044


def test_several_saved_runs_render_as_one_comparison(tmp_path: Path) -> None:
    """Two runs with the same model: both columns stay (the second suffixed with its run id), both runs listed."""
    first, second = synthetic_results(), synthetic_results()
    second["run"] = {**second["run"], "id": "def456", "argv": ["claims", "--model", "other"]}
    paths = []
    for index, data in enumerate((first, second)):
        paths.append(tmp_path / f"run{index}.json")
        paths[-1].write_text(json.dumps(data))
    out = tmp_path / "report.html"
    assert main(["report", *map(str, paths), "--out", str(out)]) == 0
    html = out.read_text()
    rows = re.findall(r'<tr class="claim-row">(.*?)</tr>', html, flags=re.S)
    assert all(len(re.findall(r"<td", row)) == 2 + 4 for row in rows)
    assert "<th>smollm2-135m @ def456</th>" in html and "Merged from 2 runs" in html
    assert merge_results([first]) is first


def test_rerendering_rejects_a_file_that_is_not_results(tmp_path: Path, capsys: Any) -> None:
    bogus = tmp_path / "results.json"
    bogus.write_text('{"schema": "something else"}')
    assert main(["report", str(bogus)]) == 2
    error = capsys.readouterr().err.strip()
    assert "not a mechclaims results file" in error and "\n" not in error


def test_token_ids_print_as_integers_and_statistics_to_four_figures() -> None:
    results = synthetic_results()
    pairs = results["results"][0]["measurement"]["details"]["most_similar_pairs"]
    pairs[0].update({"a_id": 45180, "b_id": 50256, "cos": 0.912345})
    html = render_html(results)
    assert "<td>45180</td>" in html and "<td>50256</td>" in html and "<td>0.9123</td>" in html
    assert "4.518e+04" not in html


def test_a_figure_drawn_before_comes_from_the_cache_folder_and_a_damaged_entry_is_drawn_again(
    tmp_path: Path, monkeypatch: Any
) -> None:
    from mechclaims.report import figures

    monkeypatch.setenv("MECHCLAIMS_CACHE_DIR", str(tmp_path))
    drawn: list[int] = []
    savefig = figures.plt.Figure.savefig
    monkeypatch.setattr(figures.plt.Figure, "savefig", lambda self, *a, **k: (drawn.append(1), savefig(self, *a, **k)))
    values = [float(i % 7) for i in range(500)]
    first = figures.distribution_histogram(values, None, "cosine", 0.5)
    assert first.startswith(figures.PNG_URI) and len(drawn) == 1
    assert figures.distribution_histogram(values, None, "cosine", 0.5) == first and len(drawn) == 1
    assert figures.distribution_histogram(values, None, "cosine", 0.6) != first and len(drawn) == 2
    assert figures.distribution_histogram(values[:-1] + [9.0], None, "cosine", 0.5) != first and len(drawn) == 3
    entries = list((tmp_path / figures.FOLDER).rglob("*.txt"))
    assert len(entries) == 3
    for entry in entries:
        entry.write_bytes(b"\x00garbage")
    assert figures.distribution_histogram(values, None, "cosine", 0.5) == first and len(drawn) == 4


def test_a_family_with_checkpoint_modes_gets_a_mode_strip_per_run() -> None:
    """The list-sorting rows carry each run's mode at every checkpoint: the report draws the strip figure for
    them, and only for them."""
    results = synthetic_results()
    details = results["results"][0]["measurement"]["details"]
    alt = "each run&#39;s head mode at every checkpoint, with the step it settled at"
    assert alt not in render_html(results)
    details["runs"] = [{"model": f"sorting:ci@{seed}", "mode": mode, "weight_decay": 0.1, "mean_gap": 4.167,
                        "settled_step": settled, "settle_by": 2250,
                        "checkpoint_modes": [[250, "none"], [500, "overlapping"], [750, mode]]}
                       for seed, (mode, settled) in enumerate([("vocabulary-splitting", 750), ("none", None)])]
    assert alt in render_html(results)


def test_the_circuit_figure_draws_the_strongest_edges_and_every_planted_one_while_the_table_lists_all() -> None:
    from mechclaims.report import figures

    edges = [{"from": f"0.{i}@IO", "to": f"1.{i}@end", "count": 1000 - i, "side": "src", "planted": i in (3, 700)}
             for i in range(750)]
    drawn = figures.drawn_edges(edges, 25)
    assert [e["from"] for e in drawn] == [f"0.{i}@IO" for i in range(25)] + ["0.700@IO"]
    results = synthetic_results()
    measurement = results["results"][0]["measurement"]
    results["results"][0]["measurement"] = {**measurement, "details": {"circuit_edges": edges}}
    html = render_html(results)
    assert html.count("@IO</td>") == 750
    assert 'alt="traced circuit graph"' in html
