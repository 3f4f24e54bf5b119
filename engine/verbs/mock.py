"""``aion-engine mock``: write a mock survey dataset (images, spectra, photometry, truth)."""

from __future__ import annotations

import argparse

HELP = "generate a mock survey (galaxies, stars, quasars: LS/HSC images, DESI/SDSS spectra, Gaia XP, truth)"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def setup_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=_positive_int, required=True, help="number of objects")
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (same seed, same data)")
    parser.add_argument("--out", required=True, help="dataset folder to write")
    parser.add_argument("--workers", type=_positive_int, default=None, help="processes (default: all cores)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    parser.add_argument("--preview", action="store_true", help="also write PNG contact sheets to OUT/preview/")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run_cli(args: argparse.Namespace) -> int:
    import time

    from engine.data.mock import generate

    start = time.perf_counter()
    out = generate(args.out, args.n, args.seed, workers=args.workers, overwrite=args.overwrite,
                   progress=not args.no_progress, preview=args.preview)
    elapsed = time.perf_counter() - start
    print(f"wrote {args.n} objects to {out} in {elapsed:.1f} s ({args.n / elapsed:.1f} objects/s)")
    return 0
