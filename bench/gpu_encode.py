"""One short GPU benchmark of the engine's encode path against the official code (run on a GPU box).

Measured in one run, on the same model instances and batches (random weights):

1. Transformer, AION-1 Base shape (223 M params; 7 modalities: LS image 576 + DESI 273 + four
   fluxes + z = 854 input tokens), batch 256: official ``AION.encode`` fp32, official under
   bf16 autocast, engine SDPA bf16 (the engine's GPU default), engine SDPA fp32. Every token is
   kept (``num_encoder_tokens`` = 854). Agreement of engine vs official outputs is reported.
2. End to end, raw image (4 x 96 x 96) + raw DESI spectrum + 4 fluxes + z -> embedding,
   through the codecs at published sizes (image 70 M, spectrum 24.5 M params): the official
   chain (fp32 codecs + official fp32 encode) vs the engine chain (codecs fp32 -> exact token
   ids; then SDPA bf16) and the engine with bf16 codec networks too (quantizers kept fp32;
   token agreement with fp32 reported).
3. With ``--compile``: the engine's ``compile_encoder`` (what ``aion-engine embed --compile``
   does) in both, and in the end-to-end chain also the codec networks' ``_encode`` compiled
   here (an experiment: the engine's embed keeps its codecs eager fp32). Also the bf16-weight
   variant (the whole module cast instead of autocast), which gained nothing.

Reference (``notes/anchors.md``, H200, torch 2.11): official fp32 202 obj/s, official bf16
491, SDPA bf16 1776 at 854 tokens; end to end ~165 (official fp32) vs ~790 (bf16 everywhere).

    python bench/gpu_encode.py --compile --cudnn-benchmark   # ~4 min on one H200 (what ran)
    python bench/gpu_encode.py --smoke              # seconds, CPU, tiny shapes: checks the script runs

Writes ``bench/results/encode_gpu.json`` (``encode_gpu_smoke.json`` with ``--smoke``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from engine.data import schema
from engine.model.codecs import build_codecs
from engine.model.encode import encode_tokens
from engine.model.fast import compile_encoder, disable_fast_attention, enable_fast_attention
from engine.model.loading import build_model
from engine.model.modalities import spec
from engine.model.presets import get_preset

RESULTS = Path(__file__).resolve().parent / "results"
KEYS = ("tok_image", "tok_spectrum_desi", "tok_flux_g", "tok_flux_r", "tok_flux_i", "tok_flux_z", "tok_z")
SCALARS = KEYS[2:]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int, warmup: int = 2) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def random_tokens(batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {k: torch.randint(0, 1000, (batch, spec(k).num_tokens), generator=g).to(device) for k in KEYS}


def bench_transformer(
    preset, batch: int, repeats: int, device: torch.device, compile_too: bool = False
) -> dict:
    torch.manual_seed(0)
    model = build_model(preset, KEYS).to(device).eval()
    tokens = random_tokens(batch, device)
    total = sum(t.shape[1] for t in tokens.values())
    bf16 = torch.bfloat16

    def official(dtype):
        def run():
            with torch.inference_mode(), autocast(device, dtype):
                return model.encode(tokens, num_encoder_tokens=total)

        return run

    def engine(dtype):
        return lambda: encode_tokens(model, tokens, "none", dtype=dtype or torch.float32)

    disable_fast_attention(model)
    ref32 = official(None)().float()
    ref16 = official(bf16)().float()
    t_off32 = timed(official(None), device, repeats)
    t_off16 = timed(official(bf16), device, repeats)
    enable_fast_attention(model)
    eng32 = engine(None)()
    eng16 = engine(bf16)()
    t_eng16 = timed(engine(bf16), device, repeats)
    t_eng32 = timed(engine(None), device, repeats)
    cos = torch.nn.functional.cosine_similarity(ref32.mean(1), eng16.mean(1)).min()
    # bf16 weights (the whole module cast, norms and elementwise work in bf16 too) instead of
    # autocast over fp32 weights, which runs norms/SwiGLU in fp32 and re-casts every weight.
    half = bf16_copy(model)
    engw = encode_tokens(half, tokens, "none", dtype=bf16)
    t_engw = timed(lambda: encode_tokens(half, tokens, "none", dtype=bf16), device, repeats)
    cos_w = torch.nn.functional.cosine_similarity(ref32.mean(1), engw.mean(1)).min()
    row = {
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "tokens": total,
        "batch": batch,
        "official_fp32_obj_s": round(batch / t_off32, 1),
        "official_bf16_obj_s": round(batch / t_off16, 1),
        "engine_sdpa_bf16_obj_s": round(batch / t_eng16, 1),
        "engine_sdpa_fp32_obj_s": round(batch / t_eng32, 1),
        "speedup_vs_official_fp32": round(t_off32 / t_eng16, 2),
        "speedup_vs_official_bf16": round(t_off16 / t_eng16, 2),
        "max_abs_diff_fp32_sdpa_vs_official": float((eng32 - ref32).abs().max()),
        "max_abs_diff_bf16_sdpa_vs_official_bf16": float((eng16 - ref16).abs().max()),
        "min_cosine_pooled_bf16_engine_vs_fp32_official": float(cos),
        "engine_sdpa_bf16_weights_obj_s": round(batch / t_engw, 1),
        "speedup_bf16_weights_vs_official_bf16": round(t_off16 / t_engw, 2),
        "min_cosine_pooled_bf16_weights_vs_fp32_official": float(cos_w),
    }
    if compile_too and device.type == "cuda":
        try:  # what `aion-engine embed --compile` does: fp32 weights, bf16 autocast, compiled encoder
            t0 = time.perf_counter()
            compile_encoder(model)
            engc = encode_tokens(model, tokens, "none", dtype=bf16)
            row["compile_s"] = round(time.perf_counter() - t0, 1)
            t_c = timed(engine(bf16), device, repeats)
            row["engine_sdpa_bf16_compiled_obj_s"] = round(batch / t_c, 1)
            row["speedup_compiled_vs_official_bf16"] = round(t_off16 / t_c, 2)
            row["speedup_compiled_vs_official_fp32"] = round(t_off32 / t_c, 2)
            cos_c = torch.nn.functional.cosine_similarity(ref32.mean(1), engc.mean(1)).min()
            row["min_cosine_pooled_compiled_vs_fp32_official"] = float(cos_c)
        except Exception as exc:  # a compiler failure must not lose the eager numbers
            row["compile_error"] = f"{type(exc).__name__}: {exc}"[:300]
    return row


def bf16_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A bf16-weight copy of a model (the original stays fp32)."""
    return copy.deepcopy(model).to(torch.bfloat16).eval()


def raw_batch(batch: int, device: torch.device):
    from aion import modalities as am

    rng = np.random.default_rng(0)
    wave = torch.from_numpy(schema.desi_wavelength()).float()
    image = am.LegacySurveyImage(
        flux=torch.from_numpy(rng.normal(0, 0.3, (batch, 4, 96, 96)).astype("f4")).to(device),
        bands=list(schema.LS_BANDS),
    )
    spectrum = am.DESISpectrum(
        flux=torch.from_numpy(1 + rng.normal(0, 0.1, (batch, len(wave))).astype("f4")).to(device),
        ivar=torch.full((batch, len(wave)), 100.0, device=device),
        mask=torch.zeros(batch, len(wave), dtype=torch.bool, device=device),
        wavelength=wave[None].repeat(batch, 1).to(device),
    )
    scalars = {
        k: spec(k).modality(value=torch.from_numpy(rng.lognormal(1, 1, batch).astype("f4")).to(device))
        for k in SCALARS
    }
    scalars["tok_z"] = spec("tok_z").modality(
        value=torch.from_numpy(rng.uniform(0, 1, batch).astype("f4")).to(device)
    )
    return {"tok_image": image, "tok_spectrum_desi": spectrum, **scalars}


def bench_end_to_end(
    preset, batch: int, repeats: int, device: torch.device, compile_too: bool = False
) -> dict:
    torch.manual_seed(0)
    model = build_model(preset, KEYS).to(device).eval()
    codecs = build_codecs(preset, KEYS).to(device).eval()
    raw = raw_batch(batch, device)
    bf16 = torch.bfloat16
    total = sum(spec(k).num_tokens for k in KEYS)

    def tokenize(dtype):  # bf16: networks under autocast, quantizers fp32 (CodecSet.encode)
        return codecs.encode(raw, dtype=dtype)

    def official_chain():
        tokens = tokenize(None)
        with torch.inference_mode():
            return model.encode(tokens, num_encoder_tokens=total).mean(1)

    def engine_chain(codec_dtype):
        def run():
            return encode_tokens(
                model, tokenize(codec_dtype), "mean", dtype=bf16 if device.type == "cuda" else None
            )

        return run

    codec_times = {}
    for key in ("tok_image", "tok_spectrum_desi"):
        one = {key: raw[key]}
        for name, dtype in (("fp32", None), ("bf16", bf16)):

            def run(one=one, dtype=dtype):
                codecs.encode(one, dtype=dtype)

            codec_times[f"{key}_{name}_obj_s"] = round(batch / timed(run, device, repeats), 1)
    codec_times["image_codec_params_m"] = round(
        sum(p.numel() for p in codecs["tok_image"].parameters()) / 1e6, 1
    )
    codec_times["spectrum_codec_params_m"] = round(
        sum(p.numel() for p in codecs["tok_spectrum_desi"].parameters()) / 1e6, 1
    )
    t32, t16 = tokenize(None), tokenize(bf16)
    agreement = {k: float((t32[k] == t16[k]).float().mean()) for k in ("tok_image", "tok_spectrum_desi")}
    disable_fast_attention(model)
    t_off = timed(official_chain, device, repeats)
    enable_fast_attention(model)
    t_eng = timed(engine_chain(None), device, repeats)
    t_eng16 = timed(engine_chain(bf16), device, repeats)
    half = bf16_copy(model)

    def engine_half_chain():
        return encode_tokens(half, tokenize(bf16), "mean", dtype=bf16 if device.type == "cuda" else None)

    t_half = timed(engine_half_chain, device, repeats)
    compiled = {}
    if compile_too and device.type == "cuda":
        try:  # compiled encoder; then the codec networks compiled too (quantizers stay fp32 eager)
            compile_encoder(model)
            engine_chain(bf16)()
            compiled["engine_chain_all_bf16_compiled_encoder_obj_s"] = round(
                batch / timed(engine_chain(bf16), device, repeats), 1
            )
            for key in ("tok_image", "tok_spectrum_desi"):
                codecs[key]._encode = torch.compile(codecs[key]._encode)
            engine_chain(bf16)()
            t_cc = timed(engine_chain(bf16), device, repeats)
            compiled["engine_chain_all_bf16_compiled_encoder_and_codecs_obj_s"] = round(batch / t_cc, 1)
            compiled["speedup_compiled_all_vs_official_chain"] = round(t_off / t_cc, 2)
            t16c = tokenize(bf16)
            compiled["compiled_bf16_codec_token_agreement"] = {
                k: float((t32[k] == t16c[k]).float().mean()) for k in ("tok_image", "tok_spectrum_desi")
            }
        except Exception as exc:
            compiled["compile_error"] = f"{type(exc).__name__}: {exc}"[:300]
    return {
        "batch": batch,
        "official_chain_fp32_obj_s": round(batch / t_off, 1),
        "engine_chain_codecs_fp32_obj_s": round(batch / t_eng, 1),
        "engine_chain_all_bf16_obj_s": round(batch / t_eng16, 1),
        "speedup_codecs_fp32": round(t_off / t_eng, 2),
        "speedup_all_bf16": round(t_off / t_eng16, 2),
        "engine_chain_bf16_codecs_bf16_weight_transformer_obj_s": round(batch / t_half, 1),
        "speedup_bf16_weight_transformer": round(t_off / t_half, 2),
        **compiled,
        "bf16_codec_token_agreement": agreement,
        "codecs": codec_times,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--large", action="store_true", help="also the Large shape (738 M)")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on whatever device: checks the script")
    ap.add_argument("--compile", action="store_true", help="also the compiled encoder (and codec networks)")
    ap.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN pick convolution kernels")
    ap.add_argument(
        "--out", type=Path, default=None, help="JSON path (default bench/results/encode_gpu*.json)"
    )
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        # torch's defaults, stated: fp32 matmuls stay fp32; cuDNN convolutions may use TF32.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = args.cudnn_benchmark
    shapes = [get_preset("base")] + ([get_preset("large")] if args.large else [])
    if args.smoke:
        nano = get_preset("nano")
        shapes = [
            dataclasses.replace(nano, name="smoke", dim=64, num_heads=2, encoder_depth=1, decoder_depth=1)
        ]
        args.batch, args.repeats = 2, 1
    elif device.type != "cuda":
        raise SystemExit("no CUDA device: run on a GPU machine, or pass --smoke to check the script on CPU")
    result = {
        "benchmark": "encode_gpu",
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "smoke": args.smoke,
        "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_tf32": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "transformer": {},
        "end_to_end": {},
    }
    out = args.out or RESULTS / ("encode_gpu_smoke.json" if args.smoke else "encode_gpu.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    for preset in shapes:
        row = bench_transformer(preset, args.batch, args.repeats, device, compile_too=args.compile)
        result["transformer"][preset.name] = row
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(preset.name, json.dumps(row), flush=True)
        out.write_text(json.dumps(result, indent=2))  # keep what was measured if a later step dies
    e2e = bench_end_to_end(shapes[0], args.batch, args.repeats, device, compile_too=args.compile)
    result["end_to_end"][shapes[0].name] = e2e
    print("end_to_end", json.dumps(e2e), flush=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
