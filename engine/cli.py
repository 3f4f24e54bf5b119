"""``aion-engine``: parse, call, report. Sub-commands live in :mod:`engine.verbs`, one per module."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

import engine.verbs
from engine.errors import EngineError

#: Order in ``--help``; verbs found in engine/verbs but not listed come after, alphabetically.
VERB_ORDER = ("mock", "ingest", "train", "embed", "index", "similar", "predict", "evaluate", "prepare")


def _verb_modules() -> dict[str, object]:
    names = [m.name for m in pkgutil.iter_modules(engine.verbs.__path__) if not m.name.startswith("_")]
    ordered = [v for v in VERB_ORDER if v in names] + sorted(set(names) - set(VERB_ORDER))
    return {name: importlib.import_module(f"engine.verbs.{name}") for name in ordered}


def build_parser() -> argparse.ArgumentParser:
    # no abbreviated options: `--k 3` must not silently mean `--kind 3` (similar has both -k and --kind)
    parser = argparse.ArgumentParser(prog="aion-engine", description="AION Explorer engine", allow_abbrev=False)
    sub = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND")
    for name, module in _verb_modules().items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP, allow_abbrev=False)
        module.setup_parser(p)
        p.set_defaults(_run=module.run_cli)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except EngineError as exc:
        print(f"aion-engine {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"aion-engine {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
