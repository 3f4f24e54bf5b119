"""Benchmark the engine's encode path (SDPA attention) against the official ``AION.encode`` on CPU.

Both paths run the same model instance (random weights) on the same token batch, with every
input token kept (``num_encoder_tokens`` = the true count; the official default of 256 would
drop most of them and flatter the official path). Runs are interleaved (official, engine,
official, ...) so background load on a shared machine hits both alike; the median of the
repeats is reported. Shapes:

- ``nano``: the shipped preset over its default modalities (image 576 + DESI 273 + XP 110 +
  6 fluxes + z = 966 tokens);
- ``mid``: dim 192, 3+3 blocks, the anchors' 7 modalities (image, DESI, four fluxes, z = 854
  tokens), the shape measured in ``notes/anchors.md`` (official 7.1 obj/s, SDPA 25.8 obj/s).

Also times the nano codecs (image, spectrum) that feed the transformer, since on CPU they
bound end-to-end throughput, and (``--e2e-objects``) a mock survey embedded raw -> four views:
the engine's ``embed_views`` (tokenize once, group by present modalities, SDPA) against plain
use of the official package (per view: codecs on every row, official masked ``AION.encode``).
Results: ``bench/results/encode_cpu.json`` + ``encode_cpu.png``.

    .venv/bin/python bench/bench_encode.py            # ~2-4 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from engine.model.codecs import build_codecs
from engine.model.encode import encode_tokens
from engine.model.fast import disable_fast_attention, enable_fast_attention
from engine.model.loading import build_model
from engine.model.modalities import spec
from engine.model.presets import get_preset

RESULTS = Path(__file__).resolve().parent / "results"
ANCHOR_KEYS = (
    "tok_image",
    "tok_spectrum_desi",
    "tok_flux_g",
    "tok_flux_r",
    "tok_flux_i",
    "tok_flux_z",
    "tok_z",
)


def random_tokens(keys, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randint(0, 1000, (batch, spec(k).num_tokens), generator=g) for k in keys}


def time_call(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def bench_transformer(name: str, preset, keys, batch: int, repeats: int) -> dict:
    torch.manual_seed(0)
    model = build_model(preset, keys).eval()
    tokens = random_tokens(keys, batch)
    total = sum(t.shape[1] for t in tokens.values())

    def official():
        with torch.inference_mode():
            model.encode(tokens, num_encoder_tokens=total)

    def engine():
        encode_tokens(model, tokens, "mean")

    def engine_bf16():  # CPUs with AMX / AVX512-BF16 run bf16 matmuls natively; not the CPU default
        encode_tokens(model, tokens, "mean", dtype=torch.bfloat16)

    disable_fast_attention(model)
    official()  # warm-up
    enable_fast_attention(model)
    engine()
    engine_bf16()
    t_off, t_eng, t_bf16 = [], [], []
    for _ in range(repeats):  # interleaved
        disable_fast_attention(model)
        t_off += time_call(official, 1)
        enable_fast_attention(model)
        t_eng += time_call(engine, 1)
        t_bf16 += time_call(engine_bf16, 1)
    # agreement on this batch (fp32)
    with torch.inference_mode():
        disable_fast_attention(model)
        ref = model.encode(tokens, num_encoder_tokens=total)
        enable_fast_attention(model)
        fast = model.encode(tokens, num_encoder_tokens=total)
    pooled = encode_tokens(model, tokens, "mean")
    pooled_bf16 = encode_tokens(model, tokens, "mean", dtype=torch.bfloat16)
    cos_bf16 = float(torch.nn.functional.cosine_similarity(pooled, pooled_bf16).min())
    med_off, med_eng, med_bf16 = statistics.median(t_off), statistics.median(t_eng), statistics.median(t_bf16)
    row = {
        "shape": name,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "dim": preset.dim,
        "blocks": f"{preset.encoder_depth}+{preset.decoder_depth}",
        "tokens": total,
        "batch": batch,
        "repeats": repeats,
        "official_obj_s": round(batch / med_off, 2),
        "engine_obj_s": round(batch / med_eng, 2),
        "ratio": round(med_off / med_eng, 2),
        "engine_bf16_obj_s": round(batch / med_bf16, 2),
        "ratio_bf16": round(med_off / med_bf16, 2),
        "bf16_min_cosine_vs_fp32": round(cos_bf16, 6),
        "official_s": [round(t, 4) for t in t_off],
        "engine_s": [round(t, 4) for t in t_eng],
        "engine_bf16_s": [round(t, 4) for t in t_bf16],
        "max_abs_diff_fp32": float((ref - fast).abs().max()),
    }
    print(
        f"{name:5s} {row['params_m']:6.2f} M params, {total} tokens, batch {batch}: official "
        f"{row['official_obj_s']:.1f} obj/s, engine {row['engine_obj_s']:.1f} obj/s -> {row['ratio']:.2f}x "
        f"(max |diff| {row['max_abs_diff_fp32']:.1e}); engine bf16 {row['engine_bf16_obj_s']:.1f} obj/s "
        f"(min cos vs fp32 {cos_bf16:.5f})",
        flush=True,
    )
    return row


def bench_codecs(preset, batch: int, repeats: int) -> list[dict]:
    from aion import modalities as am

    from engine.data import schema

    codecs = build_codecs(preset, ["tok_image", "tok_spectrum_desi"]).eval()
    rng = np.random.default_rng(0)
    wave = torch.from_numpy(schema.desi_wavelength()).float()
    image = am.LegacySurveyImage(
        flux=torch.from_numpy(rng.normal(0, 1, (batch, 4, 96, 96)).astype("f4")), bands=list(schema.LS_BANDS)
    )
    spectrum = am.DESISpectrum(
        flux=torch.from_numpy(1 + rng.normal(0, 0.1, (batch, len(wave))).astype("f4")),
        ivar=torch.full((batch, len(wave)), 100.0),
        mask=torch.zeros(batch, len(wave), dtype=torch.bool),
        wavelength=wave[None].repeat(batch, 1),
    )
    rows = []
    for key, mod in (("tok_image", image), ("tok_spectrum_desi", spectrum)):
        codecs.encode({key: mod})
        times = time_call(lambda key=key, mod=mod: codecs.encode({key: mod}), repeats)
        params = sum(p.numel() for p in codecs[key].parameters())
        rows.append(
            {
                "codec": key,
                "params_m": round(params / 1e6, 3),
                "batch": batch,
                "obj_s": round(batch / statistics.median(times), 1),
            }
        )
        print(f"codec {key}: {rows[-1]['params_m']} M params, {rows[-1]['obj_s']} obj/s", flush=True)
    return rows


def official_embed(loaded, dataset, ids, view: str, batch_size: int) -> np.ndarray:
    """What plain use of the official package does: per view, tokenize every row with the
    codecs, hide absent modalities with the official input mask, ``AION.encode`` with all
    tokens, mean over valid tokens."""
    from engine.model.modalities import load_modalities, view_token_keys

    keys = view_token_keys(view, loaded.token_keys)
    out = np.zeros((len(ids), loaded.dim), dtype=np.float32)
    for start in range(0, len(ids), batch_size):
        batch = ids[start : start + batch_size]
        mods = load_modalities(dataset, batch, keys)
        tokens = loaded.codecs.encode(mods)
        mask = {
            k: torch.from_numpy(~mods[k][1])[:, None].expand(-1, tokens[k].shape[1]).clone() for k in keys
        }
        total = sum(t.shape[1] for t in tokens.values())
        with torch.inference_mode():
            enc_tokens, enc_emb, enc_mask, _ = loaded.model.embed_inputs(
                tokens, mask=mask, num_encoder_tokens=total
            )
            ctx = loaded.model._encode(enc_tokens, enc_emb, enc_mask)
        valid = (~enc_mask[:, 0, :]).float()[..., None]
        out[start : start + len(batch)] = ((ctx * valid).sum(1) / valid.sum(1).clamp(min=1)).numpy()
    return out


def bench_end_to_end(n_objects: int, batch: int) -> dict:
    """Raw dataset -> embeddings for the four views, nano preset (random weights), mock survey."""
    import tempfile

    from engine.data import open_dataset
    from engine.data.mock import generate
    from engine.model.codecs import fill_quantile_table
    from engine.model.encode import embed_views
    from engine.model.loading import load_model, save_model
    from engine.model.modalities import load_modalities

    views = ("image", "spectrum", "photometry", "joint")
    nano = get_preset("nano")
    with tempfile.TemporaryDirectory() as tmp:
        root = generate(Path(tmp) / "mock", n_objects, 0, workers=1, progress=False)
        ds = open_dataset(root)
        torch.manual_seed(0)
        model = build_model(nano, nano.token_keys)
        codecs = build_codecs(nano, nano.token_keys)
        scalar_keys = [k for k in nano.token_keys if spec(k).kind in ("scalar", "xp")]
        for key, (mod, present) in load_modalities(ds, ds.ids, scalar_keys).items():
            fill_quantile_table(codecs[key], mod.value[torch.from_numpy(present.copy())])
        save_model(Path(tmp) / "nano", model, codecs)
        official_loaded = load_model(Path(tmp) / "nano")
        engine_loaded = load_model(Path(tmp) / "nano")
        ids = ds.ids
        t0 = time.perf_counter()
        ref = {v: official_embed(official_loaded, ds, ids, v, batch) for v in views}
        t_official = time.perf_counter() - t0
        t0 = time.perf_counter()
        got = embed_views(engine_loaded, ds, ids, views, batch_size=batch, progress=False)
        t_engine = time.perf_counter() - t0
        diffs = {v: float(np.abs(ref[v][got[v][1]] - got[v][0][got[v][1]]).max()) for v in views}
    row = {
        "objects": n_objects,
        "views": list(views),
        "batch": batch,
        "official_s": round(t_official, 2),
        "engine_s": round(t_engine, 2),
        "official_obj_views_s": round(n_objects * len(views) / t_official, 2),
        "engine_obj_views_s": round(n_objects * len(views) / t_engine, 2),
        "ratio": round(t_official / t_engine, 2),
        "max_abs_diff_valid_rows": diffs,
    }
    print(
        f"end to end, {n_objects} mock objects x {len(views)} views: official {t_official:.1f} s, "
        f"engine {t_engine:.1f} s -> {row['ratio']:.2f}x (max |diff| {max(diffs.values()):.1e})",
        flush=True,
    )
    return row


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(rows))
    w = 0.27
    ax.bar(x - w, [r["official_obj_s"] for r in rows], w, label="official AION.encode (fp32)")
    ax.bar(x, [r["engine_obj_s"] for r in rows], w, label="engine SDPA (fp32)")
    ax.bar(x + w, [r["engine_bf16_obj_s"] for r in rows], w, label="engine SDPA (bf16 autocast)")
    for i, r in enumerate(rows):
        ax.text(i, r["engine_obj_s"], f"{r['ratio']:.1f}x", ha="center", va="bottom")
        ax.text(i + w, r["engine_bf16_obj_s"], f"{r['ratio_bf16']:.1f}x", ha="center", va="bottom")
    ax.set_xticks(x, [f"{r['shape']}\n{r['params_m']} M, {r['tokens']} tok" for r in rows])
    ax.set_ylabel("objects / s (CPU)")
    ax.set_ylim(top=1.2 * max(max(r["engine_obj_s"], r["engine_bf16_obj_s"]) for r in rows))
    ax.set_title(f"AION encoder on {os.cpu_count()} CPU cores, batch {rows[0]['batch']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument(
        "--e2e-objects", type=int, default=256, help="mock objects for the end-to-end run (0: skip)"
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "encode_cpu.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    nano = get_preset("nano")
    mid = dataclasses.replace(nano, name="mid", dim=192, encoder_depth=3, decoder_depth=3, num_heads=3)
    load_before = os.getloadavg()
    rows = [
        bench_transformer("nano", nano, nano.token_keys, args.batch, args.repeats),
        bench_transformer("mid", mid, ANCHOR_KEYS, args.batch, args.repeats),
    ]
    codec_rows = bench_codecs(nano, args.batch, max(2, args.repeats // 2))
    e2e = bench_end_to_end(args.e2e_objects, args.batch) if args.e2e_objects > 0 else None
    result = {
        "benchmark": "encode_cpu",
        "what": "objects/s of the encoder: engine (SDPA) vs official AION.encode, same model and batch; "
        "ratio = fp32 vs fp32 (the CPU default); bf16 autocast shown separately",
        "transformer": rows,
        "nano_codecs": codec_rows,
        "end_to_end": e2e,
        "target": {"nano_ratio_min": 2.0, "met": rows[0]["ratio"] >= 2.0},
        "machine": {
            "cpu_count": os.cpu_count(),
            "threads": args.threads,
            "loadavg_before": [round(v, 2) for v in load_before],
            "loadavg_after": [round(v, 2) for v in os.getloadavg()],
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
        "command": "python bench/bench_encode.py "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items() if k != "out"),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    plot(rows, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
