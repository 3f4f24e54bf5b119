"""The GPU benchmark script cannot run here; its --smoke mode keeps it from rotting."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_encode_smoke(tmp_path):
    out = tmp_path / "gpu.json"
    _load("gpu_encode").main(["--smoke", "--out", str(out)])
    result = json.loads(out.read_text())
    row = result["transformer"]["smoke"]
    assert row["tokens"] == 854 and row["max_abs_diff_fp32_sdpa_vs_official"] <= 1e-4
    e2e = result["end_to_end"]["smoke"]
    assert (
        e2e["engine_chain_codecs_fp32_obj_s"] > 0
        and 0.5 < e2e["bf16_codec_token_agreement"]["tok_image"] <= 1
    )
