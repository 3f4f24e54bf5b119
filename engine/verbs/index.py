"""``aion-engine index``: build the FAISS cosine index of a view's embeddings, with measured recall."""

from __future__ import annotations

import argparse
import json

HELP = "build a view's FAISS similarity index (auto: exact Flat when small, HNSW or IVF-PQ + re-rank when large)"
VIEWS = ("image", "spectrum", "photometry", "joint")
KINDS = ("auto", "flat", "hnsw", "ivfpq")


def setup_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="dataset folder")
    parser.add_argument("--model", required=True, help="model folder, hub id, or 'pixel-pca'")
    parser.add_argument("--view", required=True, choices=VIEWS)
    parser.add_argument("--kind", default="auto", choices=KINDS, help="index kind (default auto; see docs/index.md)")
    gpu = parser.add_mutually_exclusive_group()
    gpu.add_argument("--gpu", dest="gpu", action="store_true", default=None, help="build on GPU (faiss-gpu)")
    gpu.add_argument("--no-gpu", dest="gpu", action="store_false", help="build on CPU even if a GPU is seen")
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run_cli(args: argparse.Namespace) -> int:
    from engine.index.pipeline import build_view_index

    m = build_view_index(args.dataset, args.model, args.view, kind=args.kind, use_gpu=args.gpu,
                         progress=not args.quiet)
    if args.json:
        print(json.dumps(m, indent=2))
    else:
        lat = m.get("latency", {})
        print(f"{m['kind']} index ({m['factory']}) of {m['count']} {m['view']} vectors, dim {m['dim']}: "
              f"recall@10 {m['recall_at_10']:.3f} (measured), build {m['build_s']:.2f}s, "
              f"p50 {lat.get('p50_ms', float('nan')):.2f} ms/query, params {m['search_params']}")
    return 0
