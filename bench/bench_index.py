"""Benchmark the engine's FAISS index kinds on clustered 768-d vectors (not part of `make test`).

For each size (default 100 k and 1 M) and each kind (flat, hnsw, ivfpq = IVF-PQ + exact
re-rank) it builds the index exactly as ``aion-engine index`` does, tunes it with the engine's
own rule (recall@10 >= 0.95 on database queries), then measures on *held-out* queries:
build time, memory (RSS growth and serialised size), recall@10 against exact search, and
p50/p99 latency of one query at a time (what the app does). With ``--e2e`` it also writes the
auto-chosen index as a real view folder (catalog + embeddings + manifest) and times
``Searcher.similar(object_id)`` end to end, metadata included.

Results go to ``bench/results/index.json`` (rewritten after every step, so a run cut short
keeps what it measured) and a plot to ``bench/results/index.png``.

    nice -n 10 .venv/bin/python bench/bench_index.py --sizes 100000 1000000 --e2e
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from engine.index import faiss_build as fb

RESULTS = Path(__file__).resolve().parent / "results"
TMP = RESULTS / "tmp"


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def clustered(n: int, dim: int, seed: int, spread: float = 0.5, n_clusters: int = 1000, intrinsic: int = 48) -> np.ndarray:
    """Unit vectors drawn like embeddings: cluster centres + a shared low-rank (48-d) spread at half the centre scale + small
    isotropic noise. Fully isotropic 768-d noise would be an unrealistically hard ANN case."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    basis = (rng.standard_normal((intrinsic, dim)) / np.sqrt(intrinsic) * 1.0).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    block = 100_000
    for s in range(0, n, block):
        m = min(block, n - s)
        lab = rng.integers(n_clusters, size=m)
        x = centers[lab] + spread * (rng.standard_normal((m, intrinsic), dtype=np.float32) @ basis)
        x += 0.3 * rng.standard_normal((m, dim), dtype=np.float32)
        out[s : s + m] = x
    faiss.normalize_L2(out)
    return out


def file_size_of(index: faiss.Index) -> int:
    TMP.mkdir(parents=True, exist_ok=True)
    path = TMP / "size_probe.faiss"
    faiss.write_index(index, str(path))
    size = path.stat().st_size
    path.unlink()
    return size


def bench_kind(kind: str, xb: np.ndarray, xq: np.ndarray, truth: np.ndarray, k: int = 10,
               latency_queries: int = 300) -> dict:
    gc.collect()
    rss0 = rss_bytes()
    built = fb.build_index(xb, kind, use_gpu=False, progress=True)
    rss1 = rss_bytes()
    t0 = time.perf_counter()
    tuning = fb.tune(built, xb, k=k)
    tune_s = time.perf_counter() - t0
    sp = fb.search_parameters(built.kind, tuning.params)
    _, ids = built.index.search(xq, k, params=sp)
    heldout_recall = fb.recall_at_k(ids, truth)
    _, ids_min = built.index.search(xq, k, params=fb.search_parameters(built.kind, tuning.minimal))
    heldout_recall_min = fb.recall_at_k(ids_min, truth)
    times, cpu = [], []
    for i in range(min(len(xq), latency_queries)):
        t, c = time.perf_counter(), time.process_time()
        built.index.search(xq[i : i + 1], k, params=sp)
        times.append((time.perf_counter() - t) * 1e3)
        cpu.append((time.process_time() - c) * 1e3)
    t = time.perf_counter()
    built.index.search(xq, k, params=sp)
    batch_ms = (time.perf_counter() - t) * 1e3 / len(xq)
    return {
        "kind": kind,
        "factory": built.factory,
        "build_s": round(built.build_s, 2),
        "tune_s": round(tune_s, 2),
        "params": tuning.params,
        "recall10_db_queries": round(tuning.recall, 4),
        "recall10_heldout": round(heldout_recall, 4),
        "params_minimal": tuning.minimal,
        "recall10_heldout_at_minimal": round(heldout_recall_min, 4),
        "p50_ms": round(float(np.percentile(times, 50)), 3),
        "p99_ms": round(float(np.percentile(times, 99)), 3),
        "cpu_p50_ms": round(float(np.percentile(cpu, 50)), 3),
        "cpu_p99_ms": round(float(np.percentile(cpu, 99)), 3),
        "load_avg_1m": os.getloadavg()[0],
        "batched_ms_per_query": round(batch_ms, 4),
        "rss_growth_bytes": max(0, rss1 - rss0),
        "index_file_bytes": file_size_of(built.index),
        "_built": built,
        "_tuning": tuning,
    }


def bench_e2e(built: fb.BuiltIndex, tuning: fb.Tuning, xb: np.ndarray, n_lookups: int = 200) -> dict:
    """Write a real view folder around ``built`` and time Searcher.similar(object_id) (+ metadata)."""
    import pandas as pd

    from engine.index import manifest as mf
    from engine.index.embeddings import write_embeddings
    from engine.index.searcher import Searcher

    n, dim = xb.shape
    root = TMP / f"e2e-{n}"
    shutil.rmtree(root, ignore_errors=True)
    data = root / "data"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    cat = pd.DataFrame(
        {
            "object_id": np.arange(n, dtype=np.int64) + 10_000_000,
            "ra": rng.uniform(0, 360, n),
            "dec": rng.uniform(-30, 60, n),
            "kind": rng.choice(["galaxy", "star", "qso"], n, p=[0.8, 0.15, 0.05]),
            "z": rng.uniform(0, 1.5, n),
        }
    )
    cat.to_parquet(data / "catalog.parquet", index=False)
    (data / "dataset.json").write_text(json.dumps({"name": "bench", "hash": "bench-e2e"}))
    view = root / "indexes" / "bench" / "synthetic" / "image"
    write_embeddings(
        view,
        xb.astype(np.float16),
        np.ones(n, bool),
        model_id="synthetic",
        model_hash="synthetic",
        dataset_hash="bench-e2e",
        view="image",
    )
    mf.write_index_and_manifest(
        view,
        built,
        tuning,
        dataset_hash="bench-e2e",
        model_id="synthetic",
        model_hash="synthetic",
        latency=fb.single_query_latency_ms(built, xb, tuning.params),
    )
    t0 = time.perf_counter()
    searcher = Searcher.open(data, "synthetic", "image", view_dir=view, model_hash="synthetic")
    open_s = time.perf_counter() - t0
    ids = rng.choice(cat["object_id"].to_numpy(), n_lookups, replace=False)
    times, cpu = [], []
    for oid in ids:
        t, c = time.perf_counter(), time.process_time()
        hits = searcher.similar(int(oid), k=10)
        _ = [h.to_dict() for h in hits]
        times.append((time.perf_counter() - t) * 1e3)
        cpu.append((time.process_time() - c) * 1e3)
    filt = {}
    for name, kw in {"qso, 0.5<z<1": {"kinds": ["qso"], "z_range": (0.5, 1.0)},
                     "galaxy, z<0.3": {"kinds": ["galaxy"], "z_range": (0.0, 0.3)}}.items():
        selectivity = float(searcher.allowed_rows(**kw).mean())
        ms = []
        for oid in ids[:20]:  # the first is cold (page cache, lazy columns); the median is the steady state
            t = time.perf_counter()
            hits = searcher.similar(int(oid), k=10, **kw)
            ms.append((time.perf_counter() - t) * 1e3)
        filt[name] = {"selectivity": round(selectivity, 4), "first_ms": round(ms[0], 2),
                      "p50_ms": round(float(np.median(ms)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
                      "hits": len(hits)}
    shutil.rmtree(root, ignore_errors=True)
    return {
        "n": n,
        "kind": built.kind,
        "open_s": round(open_s, 2),
        "similar_p50_ms": round(float(np.percentile(times, 50)), 3),
        "similar_p99_ms": round(float(np.percentile(times, 99)), 3),
        "similar_cpu_p50_ms": round(float(np.percentile(cpu, 50)), 3),
        "load_avg_1m": os.getloadavg()[0],
        "filtered_similar": filt,
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for size in results["sizes"] for r in size["kinds"]]
    if not rows:
        return
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    colors = {"flat": "tab:gray", "hnsw": "tab:blue", "ivfpq": "tab:orange"}
    for size in results["sizes"]:
        for r in size["kinds"]:
            label = f"{r['kind']} n={size['n']:,}"
            marker = "o" if size["n"] < 500_000 else "s"
            axes[0].scatter(
                r["p50_ms"], r["recall10_heldout"], c=colors[r["kind"]], marker=marker, label=label
            )
            axes[1].bar(label, r["build_s"], color=colors[r["kind"]])
            axes[2].bar(label, r["index_file_bytes"] / 1e9, color=colors[r["kind"]])
    axes[0].axhline(0.95, ls="--", c="k", lw=0.8)
    axes[0].axvline(5, ls=":", c="k", lw=0.8)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("p50 latency per query (ms, one at a time)")
    axes[0].set_ylabel("recall@10 (held-out queries)")
    axes[0].legend(fontsize=7)
    axes[1].set_ylabel("build time (s)")
    axes[2].set_ylabel("index size (GB)")
    for ax in axes[1:]:
        ax.tick_params(axis="x", rotation=60, labelsize=7)
    fig.suptitle(
        f"FAISS cosine indexes, {results['dim']}-d clustered vectors, {results['machine']['cpus']} CPUs"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--kinds", nargs="+", default=["flat", "ivfpq", "hnsw"], choices=fb.KINDS)
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--spread", type=float, default=0.5,
                   help="within-cluster spread relative to the centres (0.5 clustered; 1.0 clusters overlap: hard)")
    p.add_argument("--e2e-kind", choices=fb.KINDS, help="kind used for --e2e (default: the auto choice for n)")
    p.add_argument("--latency-queries", type=int, default=300, help="single queries timed per kind (default 300)")
    p.add_argument(
        "--e2e", action="store_true", help="also time Searcher.similar end to end on the auto kind"
    )
    p.add_argument("--out", type=Path, default=RESULTS / "index.json")
    args = p.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results = {
        "benchmark": "faiss cosine indexes (engine.index.faiss_build)",
        "dim": args.dim,
        "data": f"clustered: 1000 centres (N(0,1) per dim) + {args.spread} x shared 48-d spread + 0.3 isotropic noise, "
                "unit rows",
        "spread": args.spread,
        "machine": {
            "cpus": os.cpu_count(),
            "faiss_threads": faiss.omp_get_max_threads(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
        },
        "versions": {"faiss": faiss.__version__, "numpy": np.__version__},
        "recall_target": fb.RECALL_TARGET,
        "auto_rule": {"flat_max_n": fb.FLAT_MAX_N, "hnsw_max_n": fb.HNSW_MAX_N},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sizes": [],
    }

    def save() -> None:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        plot(results, args.out.with_suffix(".png"))

    for n in args.sizes:
        t0 = time.perf_counter()
        x = clustered(n + args.queries, args.dim, seed=n, spread=args.spread)
        xb, xq = x[:n], np.ascontiguousarray(x[n:])
        del x
        t_gen = time.perf_counter() - t0
        t0 = time.perf_counter()
        _, truth = fb.exact_knn(xb, xq, 10)
        entry = {
            "n": n,
            "generate_s": round(t_gen, 1),
            "truth_s": round(time.perf_counter() - t0, 1),
            "kinds": [],
        }
        results["sizes"].append(entry)
        auto = args.e2e_kind or fb.choose_kind(n)
        for kind in args.kinds:
            print(f"[bench] n={n:,} kind={kind} ...", flush=True)
            r = bench_kind(kind, xb, xq, truth, latency_queries=args.latency_queries)
            built, tuning = r.pop("_built"), r.pop("_tuning")
            print(f"[bench]   {r}", flush=True)
            entry["kinds"].append(r)
            if args.e2e and kind == auto:
                try:
                    entry["e2e"] = bench_e2e(built, tuning, xb)
                except Exception as exc:  # keep the index numbers even if the end-to-end part breaks
                    entry["e2e"] = {"error": f"{type(exc).__name__}: {exc}"}
                print(f"[bench]   e2e {entry['e2e']}", flush=True)
            del built
            gc.collect()
            save()
        entry["auto_kind"] = fb.choose_kind(n)
        entry["e2e_kind"] = auto
        del xb, xq
        gc.collect()
        save()
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    save()
    print(f"[bench] wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
