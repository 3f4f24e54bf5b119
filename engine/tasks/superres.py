"""Spectral super-resolution: generate a DESI-resolution spectrum from low-resolution inputs.

Stars are conditioned on their Gaia XP coefficients (``tok_xp_bp``/``tok_xp_rp``), galaxies on
photometry + image. The masked-modeling decoder fills the 273 ``tok_spectrum_desi`` tokens by
iterative unmasking (MaskGIT: each step samples every masked token at ``temperature`` and
keeps the most confident ones on a cosine schedule; ROAR: keeps a random subset), feeding the
already decoded tokens back as encoder inputs, exactly as ``aion.fourm.generate`` does but
with a private ``torch.Generator`` so a seed gives the same samples without touching global
RNG state. Several samples per object give a spread; the spectrum codec decodes the tokens
onto the DESI wavelength grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from engine.data import schema
from engine.errors import MissingModalityError, ModelError, ValidationError
from engine.model.modalities import MODALITIES
from engine.tasks.features import PHOTOMETRY_KEYS, tokenize

TARGET_KEY = "tok_spectrum_desi"
XP_KEYS = ("tok_xp_bp", "tok_xp_rp")
SCHEMES = ("maskgit", "roar")


@dataclass(frozen=True)
class GenerationConfig:
    n_samples: int = 4
    steps: int = 8
    temperature: float = 1.0
    scheme: str = "maskgit"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_samples < 1:
            raise ValidationError(f"n_samples must be >= 1, got {self.n_samples!r}")
        if not 1 <= self.steps <= MODALITIES[TARGET_KEY].num_tokens:
            raise ValidationError(f"steps must be in 1..{MODALITIES[TARGET_KEY].num_tokens}, got {self.steps!r}")
        if self.temperature < 0:
            raise ValidationError(f"temperature must be >= 0, got {self.temperature!r}")
        if self.scheme not in SCHEMES:
            raise ValidationError(f"unknown decoding scheme {self.scheme!r}; accepted: {', '.join(SCHEMES)}")


def cosine_schedule(n_tokens: int, steps: int) -> list[int]:
    """Tokens revealed at each step (MaskGIT cosine: few first, many last); sums to n_tokens, each >= 1."""
    remaining = [math.floor(n_tokens * math.cos(math.pi / 2 * (t + 1) / steps)) for t in range(steps)]
    remaining[-1] = 0
    counts, prev = [], n_tokens
    for r in remaining:
        counts.append(max(1, prev - r))
        prev -= counts[-1]
    counts[-1] += prev  # rounding leftovers land on the last step
    return counts


def conditioning(loaded, kind: str, has_xp: bool) -> tuple[str, tuple[str, ...]]:
    """(input_kind, token keys) the generator conditions on for an object of ``kind``."""
    if TARGET_KEY not in loaded.config.get("domains_out", ()):
        raise ModelError(f"model {loaded.model_id!r} cannot generate {TARGET_KEY!r} (not in its domains_out)")
    model_in = set(loaded.token_keys)
    if kind == "star" and has_xp and all(k in model_in for k in XP_KEYS):
        return "xp", XP_KEYS
    keys = tuple(k for k in PHOTOMETRY_KEYS if k in model_in)
    if kind != "star" and "tok_image" in model_in:
        keys = (*keys, "tok_image")
    if not keys:
        raise ModelError(f"model {loaded.model_id!r} accepts none of the low-resolution inputs {list(PHOTOMETRY_KEYS)}")
    return "photometry", keys


@torch.inference_mode()
def generate_tokens(
    model,
    cond_tokens: dict[str, torch.Tensor],
    cond_present: dict[str, np.ndarray],
    config: GenerationConfig,
) -> torch.Tensor:
    """Sampled ``tok_spectrum_desi`` ids (B, S, 273) for B objects, S = ``config.n_samples``."""
    device = next(model.parameters()).device
    s = config.n_samples
    b = next(iter(cond_tokens.values())).shape[0]
    n = MODALITIES[TARGET_KEY].num_tokens
    gen = torch.Generator(device="cpu").manual_seed(config.seed)
    inputs, masks = {}, {}
    for key, tok in cond_tokens.items():
        t = tok.to(device).long().reshape(b, -1).repeat_interleave(s, 0)
        inputs[key] = t
        absent = torch.as_tensor(~np.asarray(cond_present[key], bool), device=device).repeat_interleave(s, 0)
        masks[key] = absent[:, None].expand_as(t).clone()
    bs = b * s
    ids = torch.zeros(bs, n, dtype=torch.long, device=device)
    decoded = torch.zeros(bs, n, dtype=torch.bool, device=device)
    n_enc = sum(t.shape[1] for t in inputs.values()) + n
    for count in cosine_schedule(n, config.steps):
        remaining = int((~decoded[0]).sum())
        logits = model._forward(
            {**inputs, TARGET_KEY: ids},
            target_mask={TARGET_KEY: decoded.clone()},
            input_mask={**masks, TARGET_KEY: ~decoded},
            num_decoder_tokens=remaining,
            num_encoder_tokens=n_enc,
        )[TARGET_KEY].reshape(bs, remaining, -1).float().cpu()
        # positions of the still-masked tokens, ascending (the decoder's deterministic order)
        pos = torch.argsort(decoded.float().cpu() + torch.arange(n)[None] * 1e-6, dim=1)[:, :remaining]
        if config.temperature == 0:
            sample = logits.argmax(-1)
            conf = torch.ones_like(sample, dtype=torch.float32)
        else:
            probs = (logits / config.temperature).softmax(-1)
            sample = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=gen).reshape(bs, remaining)
            conf = probs.gather(-1, sample[..., None])[..., 0]
        if config.scheme == "roar":
            conf = torch.rand(conf.shape, generator=gen)
        keep = torch.topk(conf, min(count, remaining), dim=1).indices
        chosen = pos.gather(1, keep).to(device)
        ids.scatter_(1, chosen, sample.gather(1, keep).to(device))
        decoded.scatter_(1, chosen, True)
    return ids.reshape(b, s, n)


def decode_spectra(loaded, tokens: torch.Tensor, wavelength: np.ndarray | None = None) -> np.ndarray:
    """Decode (B, S, 273) token ids to flux (B, S, L) on ``wavelength`` (default: the DESI grid)."""
    lam = schema.desi_wavelength() if wavelength is None else np.asarray(wavelength, float)
    b, s, n = tokens.shape
    flat = tokens.reshape(b * s, n)
    grid = torch.as_tensor(np.tile(lam.astype(np.float32), (b * s, 1)))
    spec = loaded.codecs.decode(TARGET_KEY, flat, wavelength=grid)
    return spec.flux.float().cpu().numpy().reshape(b, s, -1)


def super_resolve(loaded, dataset, object_ids, config: GenerationConfig = GenerationConfig()) -> dict:
    """Generate spectra for objects that all share one conditioning (same kind, same XP availability).

    Returns ``wavelength`` (L,), ``samples`` (B, S, L), ``mean``/``std`` (B, L), ``input_kind``,
    ``keys``.
    """
    ids = np.atleast_1d(np.asarray(object_ids, dtype=np.int64))
    rows = dataset.objects(ids)
    kinds = set(rows["kind"].astype(str))
    xp_flag = schema.source("xp_gaia").flag
    has_xp = rows[xp_flag].to_numpy(bool) if xp_flag in rows.columns else np.zeros(len(ids), bool)
    kind = kinds.pop() if len(kinds) == 1 else None
    if kind is None or (kind == "star" and len(set(has_xp.tolist())) != 1):
        raise ValueError("super_resolve needs objects of one kind (and, for stars, one XP availability) per call")
    input_kind, keys = conditioning(loaded, kind, kind == "star" and bool(has_xp[0]))
    tokens, present = tokenize(loaded, dataset, ids, keys)
    if not any(p.any() for p in present.values()):
        raise MissingModalityError(f"object_id {ids[:5].tolist()} have none of the generator inputs {list(keys)}")
    gen_tokens = generate_tokens(loaded.model, tokens, present, config)
    samples = decode_spectra(loaded, gen_tokens)
    return {
        "wavelength": schema.desi_wavelength(),
        "samples": samples,
        "mean": samples.mean(1),
        "std": samples.std(1),
        "input_kind": input_kind,
        "keys": list(keys),
    }


# --- evaluation on held-out objects -------------------------------------------------------


def _lowres_vectors(dataset, rows, ids: np.ndarray, input_kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(shape vectors for nearest-neighbour search, brightness per object for flux scaling)."""
    from engine.tasks.arrays import photometry_features

    if input_kind == "xp":
        coeff = np.asarray(dataset.read("xp_gaia", ids, fields=("coeff",))["coeff"], float)
        coeff = np.nan_to_num(coeff)
        norm = np.linalg.norm(coeff, axis=1)
        return coeff / np.maximum(norm, 1e-12)[:, None], norm
    feats = np.nan_to_num(photometry_features(rows), nan=0.0)
    bright = rows["flux_r"].to_numpy(float) if "flux_r" in rows.columns else np.ones(len(rows))
    return feats, np.where(np.isfinite(bright) & (bright > 0), bright, 1.0)


def nearest_neighbour_spectra(dataset, train_ids: np.ndarray, test_ids: np.ndarray, input_kind: str) -> np.ndarray:
    """Baseline: each test object's nearest training neighbour in the low-res space -> its true spectrum,
    scaled by the brightness ratio (XP coefficient norm, or r-band flux)."""
    from engine.tasks.arrays import spectra

    cat = dataset.catalog.set_index("object_id", drop=False)
    v_tr, b_tr = _lowres_vectors(dataset, cat.loc[train_ids], train_ids, input_kind)
    v_te, b_te = _lowres_vectors(dataset, cat.loc[test_ids], test_ids, input_kind)
    mu, sd = v_tr.mean(0), v_tr.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    a, b = (v_tr - mu) / sd, (v_te - mu) / sd
    nn = np.argmin(((b[:, None, :] - a[None]) ** 2).sum(-1), axis=1)
    flux_tr, ivar_tr, lam, _ = spectra(dataset, train_ids[nn])
    for row, good in zip(flux_tr, ivar_tr > 0, strict=True):  # fill the neighbour's bad pixels (zeroed) by interpolation
        if good.any() and not good.all():
            row[~good] = np.interp(lam[~good], lam[good], row[good])
    return flux_tr * (b_te / b_tr[nn])[:, None]


def evaluate_superres(
    loaded, dataset, *, seed: int = 0, config: GenerationConfig = GenerationConfig(), max_per_kind: int = 40,
    batch_objects: int = 8, progress: bool = True,
) -> tuple[dict, dict]:
    """Score generated vs nearest-neighbour spectra on held-out galaxies and stars.

    Returns (metrics dict, examples dict of arrays for the plots).
    """
    from tqdm.auto import tqdm

    from engine.tasks import metrics
    from engine.tasks.arrays import spectra
    from engine.tasks.spectra_fit import TemplateLabeller, line_redshift
    from engine.tasks.splits import is_held_out, unit_hash

    cat = dataset.catalog
    lam = schema.desi_wavelength()
    flag = schema.source("spectrum_desi").flag
    xp_flag = schema.source("xp_gaia").flag
    if flag not in cat.columns or not dataset.has_source("spectrum_desi"):
        raise MissingModalityError(f"{dataset.root}: no DESI spectra to score super-resolution against")
    results: dict = {"config": config.__dict__, "max_per_kind": max_per_kind}
    examples: dict = {"wavelength": lam}
    for kind in ("galaxy", "star"):
        sel = (cat["kind"].astype(str) == kind).to_numpy() & cat[flag].to_numpy(bool)
        use_xp = False
        if kind == "star" and xp_flag in cat.columns and all(k in loaded.token_keys for k in XP_KEYS):
            use_xp = bool((sel & cat[xp_flag].to_numpy(bool)).any())
            if use_xp:
                sel &= cat[xp_flag].to_numpy(bool)
        ids = cat["object_id"].to_numpy()[sel]
        held = is_held_out(ids, seed)
        test_ids, train_ids = ids[held], ids[~held]
        if len(test_ids) == 0 or len(train_ids) == 0:
            continue
        test_ids = np.sort(test_ids[np.argsort(unit_hash(test_ids, seed + 3))[:max_per_kind]])
        input_kind, _ = conditioning(loaded, kind, use_xp)
        means, stds = [], []
        bar = tqdm(total=len(test_ids), desc=f"super-resolve {kind}s", disable=not progress, unit="obj")
        for start in range(0, len(test_ids), batch_objects):
            chunk = test_ids[start : start + batch_objects]
            out = super_resolve(loaded, dataset, chunk, GenerationConfig(**{**config.__dict__, "seed": config.seed + start}))
            means.append(out["mean"])
            stds.append(out["std"])
            bar.update(len(chunk))
        bar.close()
        gen = np.concatenate(means)
        true_flux, true_ivar, _, _ = spectra(dataset, test_ids)
        base = nearest_neighbour_spectra(dataset, train_ids, test_ids, input_kind)
        chi_gen = metrics.reduced_chi2(gen, true_flux, true_ivar)
        chi_base = metrics.reduced_chi2(base, true_flux, true_ivar)
        res = {"n": int(len(test_ids)), "input_kind": input_kind,
               "chi2_generated_median": float(np.median(chi_gen)), "chi2_baseline_median": float(np.median(chi_base)),
               "generated_better_fraction": float(np.mean(chi_gen < chi_base))}
        truth = cat.set_index("object_id").loc[test_ids]
        if kind == "galaxy" and "truth_z" in truth.columns:
            zt = truth["truth_z"].to_numpy(float)
            for name, fl in (("generated", gen), ("baseline", base), ("true_spectrum", true_flux)):
                zp = np.array([line_redshift(lam, f) for f in fl])
                dz = np.abs(zp - zt) / (1 + zt)
                res[f"z_{name}_within_0.01"] = float(np.mean(dz < 0.01))
                res[f"z_{name}_nmad"] = metrics.nmad_dz(zt, zp)
        if kind == "star":
            label_cols = [c for c in ("truth_teff", "truth_logg", "truth_feh") if c in truth.columns]
            if label_cols:
                t_flux = spectra(dataset, train_ids)[0]
                labeller = TemplateLabeller(t_flux, cat.set_index("object_id").loc[train_ids, label_cols].to_numpy(float))
                true_lab = truth[label_cols].to_numpy(float)
                for name, fl in (("generated", gen), ("baseline", base), ("true_spectrum", true_flux)):
                    pred = labeller(fl)
                    for j, c in enumerate(label_cols):
                        res[f"{c.removeprefix('truth_')}_{name}_mae"] = float(np.nanmean(np.abs(pred[:, j] - true_lab[:, j])))
        results[kind] = res
        k = min(3, len(test_ids))
        examples.update({f"{kind}_object_id": test_ids[:k], f"{kind}_true": true_flux[:k], f"{kind}_ivar": true_ivar[:k],
                         f"{kind}_mean": gen[:k], f"{kind}_std": np.concatenate(stds)[:k], f"{kind}_baseline": base[:k]})
    return results, examples
