"""``aion-engine embed``: embeddings of every object of a dataset for one view (resumable; torchrun-ready)."""

from __future__ import annotations

import argparse
import json
import os

HELP = "compute a view's embeddings for every object (float16 memmap, resumable, shards under torchrun)"
VIEWS = ("image", "spectrum", "photometry", "joint")


def setup_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="dataset folder")
    parser.add_argument("--model", required=True, help="model folder, hub id, or 'pixel-pca' (the baseline)")
    parser.add_argument("--view", required=True, nargs="+", choices=(*VIEWS, "all"),
                        help="view(s) to embed; several (or 'all') share one pass: each batch is tokenized once")
    parser.add_argument("--batch-size", type=int, default=64, help="objects per encoder call (default 64)")
    parser.add_argument("--chunk-batches", type=int, default=8,
                        help="batches per resumable chunk: a kill loses at most one chunk (default 8)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda if available)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the encoder: ~20 s once, then ~2.4x faster on a GPU (long jobs only)")
    parser.add_argument("--json", action="store_true", help="print the embeddings metadata as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _distributed(device: str):
    """(rank, world_size, barrier, device) from torchrun's environment; single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, None, device
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    return dist.get_rank(), dist.get_world_size(), dist.barrier, device


def run_cli(args: argparse.Namespace) -> int:
    from engine.errors import ValidationError
    from engine.index.pipeline import embed_views

    if args.batch_size < 1 or args.chunk_batches < 1:
        raise ValidationError(f"--batch-size and --chunk-batches must be >= 1, got {args.batch_size}, {args.chunk_batches}")
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    rank, world, barrier, device = _distributed(device)
    views = list(VIEWS) if "all" in args.view else list(dict.fromkeys(args.view))
    results = embed_views(args.dataset, args.model, views, batch_size=args.batch_size,
                          chunk_batches=args.chunk_batches, device=device, rank=rank, world_size=world,
                          barrier=barrier, progress=not args.quiet, compile=args.compile)
    if rank != 0:
        return 0
    for view, result in results.items():
        meta = result.meta or {}
        if args.json:
            print(json.dumps({**meta, "seconds": round(result.seconds, 2), "chunks_computed": result.encoded_chunks,
                              "chunks_total": result.total_chunks, "view_dir": str(result.view_dir)}, indent=2))
        else:
            resumed = result.total_chunks - result.encoded_chunks
            print(f"embedded {meta.get('n_valid')}/{meta.get('count')} objects ({view}, dim {meta.get('dim')}) "
                  f"in {result.seconds:.1f}s" + (f", {resumed} chunk(s) resumed" if resumed else "")
                  + f" -> {result.view_dir}")
    return 0
