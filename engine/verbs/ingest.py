"""``aion-engine ingest``: turn real survey files into a dataset (same contract as the mock survey)."""

from __future__ import annotations

import argparse

HELP = (
    "ingest real data: Multimodal Universe HDF5, survey FITS (SDSS, DESI, Legacy Survey, Gaia XP), "
    "published embeddings"
)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number of arcsec, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of arcsec, got {text!r}")
    return value


def setup_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        required=True,
        choices=("mmu", "fits", "embeddings"),
        help="mmu: MMU HDF5 files; fits: SDSS spec / DESI coadd / LS cutout FITS, Gaia XP "
        "ECSV/CSV/FITS; embeddings: Parquet table of precomputed vectors",
    )
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="input files or folders (searched recursively)"
    )
    parser.add_argument("--out", required=True, help="dataset folder to write")
    parser.add_argument(
        "--radius-arcsec",
        type=_positive_float,
        default=1.0,
        help="cross-match radius (reciprocal nearest neighbour), default 1.0",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    parser.add_argument("--name", default=None, help="dataset name (default: the folder name)")
    parser.add_argument(
        "--strict", action="store_true", help="any bad file stops the ingest (nothing written)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    emb = parser.add_argument_group("--format embeddings")
    emb.add_argument("--id-col", default="object_id", help="int64 id column (default object_id)")
    emb.add_argument("--ra-col", default="ra", help="RA column in degrees (default ra)")
    emb.add_argument("--dec-col", default="dec", help="Dec column in degrees (default dec)")
    emb.add_argument("--vector-col", default=None, help="list-of-float column (default: the only one)")
    emb.add_argument("--kind-col", default="kind", help="galaxy/star/qso column if present (default kind)")
    emb.add_argument(
        "--view", default="image", help="view the vectors belong to (image, spectrum, photometry, joint)"
    )
    emb.add_argument(
        "--model", default="aion-base", help="model id the vectors came from (names the index folder)"
    )


def run_cli(args: argparse.Namespace) -> int:
    import json
    import sys

    if args.format == "embeddings":
        from engine.data.ingest import ingest_embeddings
        from engine.data.readers.embeddings_table import EmbeddingColumns

        cols = EmbeddingColumns(args.id_col, args.ra_col, args.dec_col, args.vector_col, args.kind_col)
        report = ingest_embeddings(
            args.paths,
            args.out,
            columns=cols,
            view=args.view,
            model=args.model,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            name=args.name,
        )
    else:
        from engine.data.ingest import ingest

        report = ingest(
            args.paths,
            args.out,
            args.format,
            radius_arcsec=args.radius_arcsec,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            name=args.name,
            strict=args.strict,
        )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        for f in report.bad:
            print(f"aion-engine ingest: skipped bad file: {f.error}", file=sys.stderr)
    else:
        for line in report.lines():
            stream = sys.stderr if line.startswith("skipped bad file") else sys.stdout
            print(("aion-engine ingest: " if stream is sys.stderr else "") + line, file=stream)
    return 0
