"""Output locations are checked before any work (issue: no output may overwrite an input; an unwritable output
folder is found before measuring): the checks themselves, and the commands that use them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from helpers import synthetic_results
from mechclaims.__main__ import main
from mechclaims.errors import MechclaimsError
from mechclaims.outputs import output_file, writable_folder


def test_a_folder_path_through_a_file_is_refused_and_a_new_folder_is_not(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("x")
    for path, says in ((taken, f"{taken} is a file:"), (taken / "a" / "b", f"is under {taken}, which is a file")):
        with pytest.raises(MechclaimsError, match="pass a folder you can write to") as caught:
            writable_folder(path, "--report-dir")
        assert says in str(caught.value) and str(caught.value).startswith("--report-dir ")
    assert writable_folder(tmp_path / "new" / "deeper", "--report-dir") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()


def test_an_output_file_may_not_be_an_input_by_any_name(tmp_path: Path) -> None:
    source = tmp_path / "results.json"
    source.write_text("{}")
    (tmp_path / "link.json").symlink_to(source)
    for alias in (source, tmp_path / "link.json", tmp_path / "sub" / ".." / "results.json"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(MechclaimsError, match="is also an input"):
            output_file(alias, "--out", [source])
    assert output_file(tmp_path / "report.html", "--out", [source]) == tmp_path / "report.html"
    with pytest.raises(MechclaimsError, match="is a folder: name a file"):
        output_file(tmp_path, "--out", [source])
    with pytest.raises(MechclaimsError, match="which is a file"):
        output_file(source / "report.html", "--out", [source])


def _saved(tmp_path: Path) -> tuple[Path, str]:
    saved = tmp_path / "results.json"
    saved.write_text(json.dumps(synthetic_results()))
    return saved, saved.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "{r}", "--out", "{r}"], "--out {r} is also an input"),
        (["sweep", "{r}", "--sweep", "knittel2024.mlp0_token_bundles=0.3:0.5:0.1", "--out", "{r}"],
         "--out {r} is also an input"),
        (["sweep", "{r}", "--sweep", "knittel2024.mlp0_token_bundles=0.3:0.5:0.1", "--json", "{r}"],
         "--json {r} is also an input"),
        (["sweep", "{r}", "--sweep", "knittel2024.mlp0_token_bundles=0.3:0.5:0.1", "--out", "{d}/s.html", "--json",
          "{d}/s.html"], "--json and --out both name"),
        (["report", "{r}", "--out", "{r}/report.html"], "which is a file"),
        (["evaluate", "knittel2024.embed_raw_orthogonal", "random:nothing", "--json", "{r}/x.json"], "which is a file"),
    ],
)
def test_commands_refuse_outputs_that_would_destroy_an_input_before_reading_it(
    tmp_path: Path, capsys: Any, args: list[str], message: str
) -> None:
    saved, before = _saved(tmp_path)
    fill = {"r": str(saved), "d": str(tmp_path)}
    assert main([arg.format(**fill) for arg in args]) == 2
    error = capsys.readouterr().err.strip()
    assert message.format(**fill) in error and "\n" not in error
    assert saved.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_json_and_out_naming_one_file_through_a_link_are_refused(tmp_path: Path, capsys: Any) -> None:
    """`sweep --json L --out S` where L is a symbolic link to the existing S: one file, refused before writing."""
    saved, _ = _saved(tmp_path)
    out = tmp_path / "sweep.html"
    out.write_text("earlier sweep")
    (tmp_path / "link.json").symlink_to(out)
    args = ["sweep", str(saved), "--sweep", "knittel2024.mlp0_token_bundles=0.3:0.5:0.1", "--out", str(out),
            "--json", str(tmp_path / "link.json")]
    assert main(args) == 2
    assert "--json and --out both name" in capsys.readouterr().err
    assert out.read_text() == "earlier sweep"
