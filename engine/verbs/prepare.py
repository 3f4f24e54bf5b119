"""``aion-engine prepare``: build what the app needs (data, embeddings, indexes, predictions), idempotently."""

from __future__ import annotations

import argparse
import json

HELP = "build everything the app reads, skipping what is up to date (--default: mock survey + shipped nano model)"


def setup_parser(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--default", action="store_true", help="the default mock survey and the shipped nano model")
    what.add_argument("--dataset", help="a dataset folder (with --model)")
    parser.add_argument("--model", help="model folder or hub id (with --dataset)")
    parser.add_argument("--views", nargs="+", default=None, help="views to embed and index (default: all four)")
    parser.add_argument("--no-predictions", action="store_true", help="skip the per-object predictions")
    parser.add_argument("--json", action="store_true", help="print what each step did as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run_cli(args: argparse.Namespace) -> int:
    import logging

    from engine.errors import ValidationError
    from engine.prepare import VIEWS, prepare, prepare_default

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    views = tuple(args.views or VIEWS)
    bad = [v for v in views if v not in VIEWS]
    if bad:
        raise ValidationError(f"--views: unknown view(s) {bad}; accepted: {', '.join(VIEWS)}")
    if args.default:
        report = prepare_default(progress=not args.quiet)
    else:
        if not args.model:
            raise ValidationError("--dataset needs --model (a model folder or hub id)")
        report = prepare(args.dataset, args.model, views=views, predictions=not args.no_predictions,
                         progress=not args.quiet)
    if args.json:
        print(json.dumps({"dataset": report.dataset, "model": report.model, "steps": report.steps,
                          "seconds": report.seconds}, indent=2))
    else:
        for step, status in report.steps.items():
            print(f"{step:>18}: {status} ({report.seconds[step]:.1f}s)")
    return 0
