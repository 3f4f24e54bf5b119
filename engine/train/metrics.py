"""Did the model learn? Held-out masked-token accuracy per modality, and redshift from ``tok_z``.

* Masked-token accuracy: held-out objects, masks drawn by the training sampler (fixed seed),
  top-1 accuracy of the decoder per target modality, next to the *unigram baseline*: always
  predicting that modality's most frequent training token. A model that learned nothing
  scores the baseline. Scalar ids are sorted quantile bins (1024 per modality), where exact
  top-1 is harsh, so they also get accuracy within ±10 bins (about ±1 percentile).
* Redshift: held-out galaxies, encoder fed the Legacy Survey image + LS photometry tokens,
  decoder asked for ``tok_z``; the prediction is the mean of the predicted distribution over
  the z codec's bins. R² against the catalogue truth (``truth_z`` where the mock has it).
  The decoder runs on the training target budget of slots (``tok_z`` + empty padding, as in
  training; :mod:`engine.model.decode` says why); ``one_slot_r2`` is the same read-out through
  ``AION.forward``'s single slot, kept beside it.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.model.decode import decoder_logits
from engine.model.modalities import LS_FLUX_KEYS, spec
from engine.train.masking import MaskingConfig

NEAR_BINS = 10


def decoder_outputs(model, mod_dict: dict, n_in: int, n_tgt: int):
    """``FourM.forward`` up to the decoder output, keeping target ids and the modality of each slot."""
    enc = {m: model.encoder_embeddings[m](d) for m, d in mod_dict.items() if m in model.encoder_embeddings}
    tok, emb, mask, _ = model.forward_mask_encoder(enc, n_in)
    dec = {m: model.decoder_embeddings[m].forward_embed(d) for m, d in mod_dict.items() if m in model.decoder_embeddings}
    dtok, demb, _, target_ids, dattn, dmod = model.forward_mask_decoder(dec, n_tgt)
    x = model.forward_encoder(tok + emb, encoder_mask=mask)
    context = model.decoder_proj_context(x) + emb
    y = model.forward_decoder(dtok + demb, context, encoder_mask=mask, decoder_attention_mask=dattn)
    return y, target_ids, dmod


def unigram_modes(table, rows: np.ndarray) -> dict[str, int]:
    """Most frequent token id per modality over the present objects of ``rows``."""
    modes = {}
    for k in table.keys:
        vals = table.tokens[k][rows][table.present[k][rows]].ravel().astype(np.int64)
        modes[k] = int(np.bincount(vals).argmax()) if vals.size else 0
    return modes


@torch.no_grad()
def masked_token_accuracy(model, table, val_rows, train_rows, masking: MaskingConfig, *, batch_size: int,
                          n_batches: int, seed: int, device) -> dict[str, dict]:
    from engine.train.pretrain import make_batch

    modes = unigram_modes(table, train_rows)
    stats = {k: {"correct": 0, "unigram_correct": 0, "near": 0, "unigram_near": 0, "n": 0, "loss_sum": 0.0}
             for k in table.keys}
    ordered = {k for k in table.keys if spec(k).kind in ("scalar", "xp")}  # ids are sorted quantile bins
    for i in range(n_batches):
        rows = val_rows[i * batch_size : (i + 1) * batch_size]
        if not len(rows):
            break
        rng = np.random.default_rng([seed, 10_000_019, i])
        mod_dict = make_batch(table, rows, masking, rng, device)
        y, target_ids, dmod = decoder_outputs(model, mod_dict, masking.input_budget, masking.target_budget)
        for k in table.keys:
            sel = dmod == model.modality_info[k]["id"]
            if not sel.any():
                continue
            logits = model.decoder_embeddings[k].forward_logits(y[sel]).float()
            tgt = target_ids[sel].long()
            s = stats[k]
            s["correct"] += int((logits.argmax(-1) == tgt).sum())
            s["unigram_correct"] += int((tgt == modes[k]).sum())
            s["loss_sum"] += float(torch.nn.functional.cross_entropy(logits, tgt, reduction="sum"))
            s["n"] += int(tgt.numel())
            if k in ordered:
                s["near"] += int(((logits.argmax(-1) - tgt).abs() <= NEAR_BINS).sum())
                s["unigram_near"] += int(((tgt - modes[k]).abs() <= NEAR_BINS).sum())
    out = {}
    for k, s in stats.items():
        if s["n"]:
            out[k] = {"accuracy": s["correct"] / s["n"], "unigram_accuracy": s["unigram_correct"] / s["n"],
                      "cross_entropy": s["loss_sum"] / s["n"], "n_targets": s["n"]}
            if k in ordered:
                out[k]["accuracy_within_10_bins"] = s["near"] / s["n"]
                out[k]["unigram_accuracy_within_10_bins"] = s["unigram_near"] / s["n"]
    return out


@torch.no_grad()
def redshift_r2(model, codecs, table, dataset, val_rows, *, input_keys: list[str], batch_size: int, device,
                decoder_slots: int | None = None) -> dict:
    """R² of z read from the decoder's ``tok_z`` distribution, on held-out galaxies with the inputs present,
    with the decoder on ``decoder_slots`` slots (the training target budget; None = one slot)."""
    keys = [k for k in input_keys if k in table.tokens and k in model.encoder_embeddings]
    if "tok_z" not in model.decoder_embeddings or not keys:
        return {"skipped": "model lacks tok_z output or the input modalities"}
    cat = dataset.objects(table.object_ids[val_rows])
    truth_col = "truth_z" if "truth_z" in cat.columns else "z"
    truth = cat[truth_col].to_numpy(dtype=np.float64)
    anchor = "tok_image" if "tok_image" in keys else keys[0]
    ok = np.isfinite(truth) & table.present[anchor][val_rows]
    if "kind" in cat.columns:
        ok &= cat["kind"].to_numpy() == "galaxy"
    rows, truth = val_rows[ok], truth[ok]
    if len(rows) < 3:
        return {"skipped": f"only {len(rows)} held-out galaxies with {anchor}"}
    z_codec = codecs["tok_z"]
    n_bins = z_codec.quantizer.codebook_size
    centers = z_codec.quantizer.decode(torch.arange(n_bins)).double().to(device)
    preds = {"slots": [], "one": []}
    for start in range(0, len(rows), batch_size):
        r = rows[start : start + batch_size]
        inputs = {k: torch.from_numpy(table.tokens[k][r].astype(np.int64)).to(device) for k in keys}
        masks = {k: torch.from_numpy(~table.present[k][r][:, None].repeat(table.tokens[k].shape[1], 1)).to(device)
                 for k in keys}
        target = {"tok_z": torch.zeros(len(r), 1, dtype=torch.bool, device=device)}
        passes = {"slots": decoder_slots, "one": None} if (decoder_slots or 1) > 1 else {"slots": None}
        for name, slots in passes.items():
            logits = decoder_logits(model, inputs, masks, target, slots)["tok_z"].reshape(len(r), -1).double()
            probs = torch.softmax(logits[:, :n_bins], dim=-1)
            preds[name].append((probs * centers).sum(-1).cpu().numpy())
    pred = np.concatenate(preds["slots"])
    one = np.concatenate(preds["one"]) if preds["one"] else pred  # one slot asked for: the same pass
    ss_tot = max(float(((truth - truth.mean()) ** 2).sum()), 1e-12)
    return {"r2": 1.0 - float(((truth - pred) ** 2).sum()) / ss_tot, "n": int(len(rows)), "inputs": keys,
            "decoder_slots": int(decoder_slots or 1), "one_slot_r2": 1.0 - float(((truth - one) ** 2).sum()) / ss_tot,
            "truth_column": truth_col, "mean_prediction": float(pred.mean()), "mean_truth": float(truth.mean()),
            "median_abs_dz_over_1pz": float(np.median(np.abs(pred - truth) / (1 + truth))),
            "truth_within_codec_range": float(np.mean((truth >= float(centers[0])) & (truth <= float(centers[-1]))))}


def evaluate(model, codecs, table, dataset, val_rows, train_rows, masking, *, batch_size, n_batches, seed, device) -> dict:
    model.eval()
    acc = masked_token_accuracy(model, table, val_rows, train_rows, masking, batch_size=batch_size,
                                n_batches=n_batches, seed=seed, device=device)
    z = redshift_r2(model, codecs, table, dataset, val_rows, input_keys=["tok_image", *LS_FLUX_KEYS],
                    batch_size=batch_size, device=device, decoder_slots=masking.target_budget)
    z_phot = redshift_r2(model, codecs, table, dataset, val_rows, input_keys=list(LS_FLUX_KEYS),
                         batch_size=batch_size, device=device, decoder_slots=masking.target_budget)
    return {"masked_token_accuracy": acc, "redshift_image_photometry": z, "redshift_photometry_only": z_phot}
