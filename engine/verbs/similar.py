"""``aion-engine similar``: the objects most similar to one (or to a FITS file), with filters and feedback."""

from __future__ import annotations

import argparse
import json

HELP = "top-k most similar objects to an object id, a FITS cutout/spectrum, or a set of liked objects"
VIEWS = ("image", "spectrum", "photometry", "joint")


def _range(text: str) -> tuple[str, float | None, float | None]:
    try:
        col, lo, hi = text.split(":")
        return col, (float(lo) if lo else None), (float(hi) if hi else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--range {text!r}: expected COLUMN:MIN:MAX (either bound may be empty)") from None


def setup_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="dataset folder")
    parser.add_argument("--model", required=True, help="model folder, hub id, or 'pixel-pca'")
    parser.add_argument("--view", required=True, choices=VIEWS, help="the index searched")
    query = parser.add_mutually_exclusive_group(required=True)
    query.add_argument("--object-id", type=int, help="query with this object (excluded from the results)")
    query.add_argument("--file", help="query with new data: a FITS image cutout or spectrum")
    query.add_argument("--like", type=int, nargs="+", metavar="ID", help="relevance feedback: more like these")
    parser.add_argument("--unlike", type=int, nargs="+", default=[], metavar="ID", help="with --like: less like these")
    parser.add_argument("--query-view", choices=VIEWS,
                        help="cross-modal: take --object-id's embedding from this view (e.g. image -> --view spectrum)")
    parser.add_argument("-k", type=int, default=10, help="number of results (default 10)")
    parser.add_argument("--kind", action="append", choices=("galaxy", "star", "qso"), help="keep only this kind (repeatable)")
    parser.add_argument("--z-min", type=float)
    parser.add_argument("--z-max", type=float)
    parser.add_argument("--range", type=_range, action="append", default=[], metavar="COL:MIN:MAX",
                        help="keep objects with MIN <= catalog column <= MAX (repeatable)")
    parser.add_argument("--json", action="store_true", help="print results as JSON")


def run_cli(args: argparse.Namespace) -> int:
    from engine.errors import ValidationError
    from engine.index.searcher import Searcher

    if args.k < 1:
        raise ValidationError(f"-k must be >= 1, got {args.k}")
    if args.unlike and not args.like:
        raise ValidationError("--unlike needs --like")
    if args.query_view and args.object_id is None:
        raise ValidationError("--query-view needs --object-id")
    filters = {
        "kinds": args.kind,
        "z_range": (args.z_min, args.z_max) if (args.z_min is not None or args.z_max is not None) else None,
        "ranges": {col: (lo, hi) for col, lo, hi in args.range} or None,
    }
    searcher = Searcher.open(args.dataset, args.model, args.view)
    if args.file:
        hits, query = searcher.similar_to_file(args.file, args.k, **filters), {"file": args.file}
    elif args.like:
        hits = searcher.feedback(args.like, args.unlike, args.k, **filters)
        query = {"like": args.like, "unlike": args.unlike}
    elif args.query_view and args.query_view != args.view:
        source = Searcher.open(searcher.dataset, args.model, args.query_view)
        hits = searcher.cross_modal(source, args.object_id, args.k, **filters)
        query = {"object_id": args.object_id, "query_view": args.query_view}
    else:
        hits, query = searcher.similar(args.object_id, args.k, **filters), {"object_id": args.object_id}
    if args.json:
        print(json.dumps({"query": query, "view": args.view, "model": args.model, "index_kind": searcher.kind,
                          "results": [h.to_dict() for h in hits]}, indent=2))
        return 0
    print(f"{'rank':>4} {'object_id':>20} {'score':>7} {'ra':>10} {'dec':>10} {'kind':>7} {'z':>7}")
    for h in hits:
        z = "" if h.z is None else f"{h.z:.4f}"
        print(f"{h.rank:>4} {h.object_id:>20} {h.score:>7.4f} {h.ra:>10.5f} {h.dec:>10.5f} {h.kind:>7} {z:>7}")
    return 0
