"""Where does the morphology signal go? Galaxy10 accuracy of heads on different *frozen* features of
the same held-out galaxies (the probes' split), written to ``bench/results/probe_features.json``.

Features compared (all from the shipped model, nothing fine-tuned):

* ``encoder outputs, mean + MLP``   — the shipped morphology probe (the paper's recipe);
* ``encoder outputs, attentive``    — one attentive-pooling query + MLP;
* ``encoder outputs, conv``         — a small CNN over the 24 x 24 grid of image-token outputs;
* ``encoder outputs, chunked conv`` — the same, the image fed in 5 interleaved chunks of 115 tokens
  (the encoder was trained on at most 128 input tokens);
* ``input embeddings, conv``        — the same CNN over the encoder's *input* embeddings of the image
  codes (the embedding table lookup, before any transformer block).

Reads the probes' token cache for ``photometry+image`` (built by ``aion-engine evaluate`` or
``prepare``)::

    .venv/bin/python bench/probe_features.py --dataset data/mock-default --model assets/models/aion-nano
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.data.store import open_dataset  # noqa: E402
from engine.model.encode import tokenize_batch  # noqa: E402
from engine.model.loading import load_model  # noqa: E402
from engine.tasks import probes  # noqa: E402
from engine.tasks.features import open_token_cache  # noqa: E402
from engine.tasks.fitting import FitConfig, fit, predict  # noqa: E402
from engine.tasks.heads import AttentivePooling, MorphologyProbe, mlp  # noqa: E402
from engine.tasks.splits import split_rows  # noqa: E402

GRID = 24


class GridConv(nn.Module):
    """A small CNN over the 24 x 24 grid of per-token features -> class logits."""

    def __init__(self, dim: int, n_classes: int, width: int = 64):
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, width))
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),
            nn.Conv2d(width, width, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),
            nn.Conv2d(width, width, 3, padding=1), nn.GELU(),
        )
        self.head = nn.Sequential(nn.Dropout(0.1), nn.Linear(2 * width, n_classes))

    def forward(self, grid_tokens: torch.Tensor) -> torch.Tensor:
        b = grid_tokens.shape[0]
        x = self.body(self.proj(grid_tokens.float()).transpose(1, 2).reshape(b, -1, GRID, GRID))
        return self.head(torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1))


class Attentive(nn.Module):
    def __init__(self, dim: int, n_classes: int):
        super().__init__()
        self.pool, self.head = AttentivePooling(dim, 1, 4), mlp(dim, 256, n_classes)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(tokens.float(), mask)[:, 0])


def accuracy(module: nn.Module, inputs: tuple, y: torch.Tensor, split, seed: int) -> float:
    fit_r, val_r, test_r = split
    cfg = FitConfig(epochs=30, batch_size=64, lr=2e-3, seed=seed, progress=False)
    fit(module, tuple(t[fit_r] for t in inputs), y[fit_r], tuple(t[val_r] for t in inputs), y[val_r],
        nn.functional.cross_entropy, cfg, desc="probe")
    pred = predict(module, tuple(t[test_r] for t in inputs)).argmax(-1)
    return float((pred == y[test_r]).float().mean())


def encode_image(model, codes: torch.Tensor, chunks: int) -> torch.Tensor:
    """Encoder outputs of the image tokens alone, fed in ``chunks`` interleaved position sets."""
    out = torch.zeros(len(codes), GRID * GRID, model.encoder_embeddings["tok_image"].token_emb.embedding_dim)
    for c in range(chunks):
        keep = np.arange(GRID * GRID)[c::chunks]
        mask = torch.ones(len(codes), GRID * GRID, dtype=torch.bool)
        mask[:, keep] = False
        for s in range(0, len(codes), 100):
            with torch.inference_mode():
                o = model.encode({"tok_image": codes[s : s + 100]}, input_mask={"tok_image": mask[s : s + 100]},
                                 num_encoder_tokens=len(keep))
            out[s : s + 100, keep] = o.float()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", type=Path, default=ROOT / "data" / "mock-default")
    p.add_argument("--model", default=str(ROOT / "assets" / "models" / "aion-nano"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "probe_features.json")
    args = p.parse_args()
    torch.manual_seed(args.seed)
    ds = open_dataset(args.dataset)
    loaded = load_model(args.model)
    folder = probes.probes_dir(ds, args.model) / "tokens" / "photometry+image"
    cache = open_token_cache(folder)
    if cache.meta.get("model_hash") != loaded.hash:
        raise SystemExit(f"{folder}: token cache of another model; run `aion-engine evaluate` first")
    ids = np.asarray(cache.object_ids)
    label = probes._labels(ds.catalog, ids, [probes.MORPHOLOGY_TARGET])[:, 0]
    use = np.isfinite(label) & (label >= 0)
    ids_k, y = ids[use], torch.from_numpy(label[use].astype(np.int64))
    split = split_rows(ids_k, args.seed)
    feats, msk = probes._tensor(cache, cache.rows(ids_k))
    d = loaded.dim
    tok = feats[..., d:] if feats.shape[-1] == 2 * d else feats  # the last encoder layer (features.py, version 2)
    grid = tok[:, cache.layout.slice_of("tok_image")]
    codes = torch.cat([tokenize_batch(loaded, ds, ids_k[s : s + 100], ["tok_image"])[0]["tok_image"]
                       for s in range(0, len(ids_k), 100)]).long()
    with torch.no_grad():
        embedded = loaded.model.encoder_embeddings["tok_image"].token_emb(codes).float()
    n_classes, dim = 10, d
    t0 = time.time()
    scores = {
        "encoder outputs, mean + MLP (shipped probe)": accuracy(MorphologyProbe(dim, n_classes), (tok, msk), y, split, args.seed),
        "encoder outputs, attentive + MLP": accuracy(Attentive(dim, n_classes), (tok, msk), y, split, args.seed),
        "encoder outputs, conv": accuracy(GridConv(dim, n_classes), (grid,), y, split, args.seed),
        "encoder outputs (image alone, 5 chunks of 115), conv": accuracy(
            GridConv(dim, n_classes), (encode_image(loaded.model, codes, 5),), y, split, args.seed),
        "input embeddings of the image codes, conv": accuracy(GridConv(dim, n_classes), (embedded,), y, split, args.seed),
    }
    result = {"dataset": ds.name, "model_hash": loaded.hash, "n_galaxies": len(ids_k), "n_test": len(split[2]),
              "chance": float(torch.bincount(y).max() / len(y)), "accuracy": scores,
              "seconds": round(time.time() - t0, 1), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
