"""`python -m mechclaims models | evaluate CLAIM MODEL [--param NAME=VALUE] [--json out.json]
| report RESULTS.json [MORE.json ...] [--out report.html]
| sweep RESULTS.json --sweep CLAIM[:PARAM]=START:STOP:STEP ... [--out sweep.html] [--json sweep.json]
| bench check|baseline|table BENCH.json ...` (see mechclaims/bench.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mechclaims import bench
from mechclaims.atomic import atomic_write_text
from mechclaims.errors import MechclaimsError
from mechclaims.models import BUNDLED
from mechclaims.outputs import output_file


def _models(_: argparse.Namespace) -> None:
    print("Hugging Face names (gpt2, ...), checkpoint folders, random:<spec>, auto, and the bundled models:")
    for name, bundled in BUNDLED.items():
        print(f"  {name:<14} {bundled.description} (package {bundled.package.replace('_', '-')})")


def _report(args: argparse.Namespace) -> None:
    from mechclaims.report import render_report
    from mechclaims.results import load_results, merge_results

    output_file(args.out, "--out", args.results)
    render_report(merge_results([load_results(path) for path in args.results]).to_json(), args.out)
    print(f"wrote {args.out}")


def _sweep(args: argparse.Namespace) -> None:
    from mechclaims.arguments import parse_sweeps
    from mechclaims.report import render_report
    from mechclaims.results import RESULTS_INDENT, load_results, merge_results
    from mechclaims.sweeps import resweep

    output_file(args.out, "--out", args.results)
    if args.json is not None:
        output_file(args.json, "--json", args.results)
        if args.json.resolve() == args.out.resolve():
            raise MechclaimsError(f"--json and --out both name {args.out}: name two files")
    sweeps, param_sweeps = parse_sweeps(args.sweep)
    swept = resweep(merge_results([load_results(path) for path in args.results]), sweeps, param_sweeps)
    for row in swept.results:
        if row.claim in {*sweeps, *param_sweeps} and row.sweep is not None:
            points = ", ".join(f"{p.x:g}: {p.statistic:.4g} {p.verdict}" for p in row.sweep.points)
            print(f"{row.claim} on {row.model}: {points}")
    data = swept.to_json()
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(data, indent=RESULTS_INDENT))
        print(f"wrote {args.json}")
    render_report(data, args.out)
    print(f"wrote {args.out}")


def _evaluate(args: argparse.Namespace) -> None:
    from mechclaims.arguments import parse_params, parse_thresholds
    from mechclaims.engine import Settings, evaluate
    from mechclaims.results import RESULTS_INDENT, json_default

    if args.json is not None:
        output_file(args.json, "--json")
    params = parse_params([f"{args.claim}:{text}" for text in args.param or []])
    settings = Settings(thresholds=parse_thresholds([f"{args.claim}={args.threshold}"] if args.threshold else []),
                        params=params, claims_dir=args.claims_dir)
    result = evaluate(args.claim, args.model, settings)
    print(f"{result.verdict.value} {result.summary()}" + (f"; {result.reason}" if result.reason else ""))
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(result.to_json(), indent=RESULTS_INDENT, default=json_default))
        print(f"wrote {args.json}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mechclaims")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("models", help="list the model specs mechclaims understands").set_defaults(run=_models)
    report = commands.add_parser("report", help="re-render report.html from saved results.json files (several: "
                                 "one comparison), loading no model")
    report.add_argument("results", type=Path, nargs="+")
    report.add_argument("--out", type=Path, default=Path("reports/report.html"))
    report.set_defaults(run=_report)
    sweep = commands.add_parser("sweep", help="sweep claims' thresholds (and a kept parameter) over saved "
                                "results.json files, loading no model; prints the verdicts and writes a report")
    sweep.add_argument("results", type=Path, nargs="+")
    sweep.add_argument("--sweep", action="append", required=True, metavar="CLAIM[:PARAM]=START:STOP:STEP",
                       help="as pytest's --sweep (repeatable); CLAIM:PARAM sweeps a parameter the measurement kept, "
                            "e.g. knittel2024.mlp0_token_bundles:max_tokens=1:10:1")
    sweep.add_argument("--out", type=Path, default=Path("reports/sweep.html"))
    sweep.add_argument("--json", type=Path, default=None, help="also write the swept results (results.json schema)")
    sweep.set_defaults(run=_sweep)
    one = commands.add_parser("evaluate", help="run one claim on one model without pytest and print its verdict")
    one.add_argument("claim", help="a claim id, e.g. knittel2024.embed_raw_orthogonal")
    one.add_argument("model", help="a model spec, as --model")
    one.add_argument("--param", action="append", metavar="NAME=VALUE", help="set a claim parameter (repeatable)")
    one.add_argument("--threshold", default=None, metavar="VALUE", help="replace the threshold value")
    one.add_argument("--claims-dir", type=Path, default=Path("claims"), help="the folder of claims modules")
    one.add_argument("--json", type=Path, default=None, help="also write the Result as JSON")
    one.set_defaults(run=_evaluate)
    bench.add_commands(commands)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except MechclaimsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
