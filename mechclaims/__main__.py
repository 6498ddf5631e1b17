"""`python -m mechclaims models | report RESULTS.json [MORE.json ...] [--out report.html]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mechclaims.errors import MechclaimsError
from mechclaims.models import BUNDLED


def _models(_: argparse.Namespace) -> None:
    print("Hugging Face names (gpt2, ...), checkpoint folders, random:<spec>, auto, and the bundled models:")
    for name, bundled in BUNDLED.items():
        print(f"  {name:<14} {bundled.description} (package {bundled.package.replace('_', '-')})")


def _report(args: argparse.Namespace) -> None:
    from mechclaims.report import render_report
    from mechclaims.results import load_results, merge_results

    render_report(merge_results([load_results(path) for path in args.results]), args.out)
    print(f"wrote {args.out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mechclaims")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("models", help="list the model specs mechclaims understands").set_defaults(run=_models)
    report = commands.add_parser("report", help="re-render report.html from saved results.json files (several: "
                                 "one comparison), loading no model")
    report.add_argument("results", type=Path, nargs="+")
    report.add_argument("--out", type=Path, default=Path("reports/report.html"))
    report.set_defaults(run=_report)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except MechclaimsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
