"""Spectral super-resolution: generate a DESI-resolution spectrum from low-resolution inputs.

Stars are conditioned on their Gaia XP coefficients (``tok_xp_bp``/``tok_xp_rp``), galaxies on
photometry + image. The spectrum codec's 273 tokens are one *normalisation* token (the mean flux
of the spectrum, log10(n + 1) on a fixed linear grid of 1024 bins over [-1, 5]) and 272 *shape*
tokens (LFQ codes of the spectrum divided by that mean).

The normalisation is an absolute flux, which the low-resolution inputs measure directly, so it
is not left to sampling: with ``scale="photometry"`` (default) the normalisation token is set
from the object's broadband fluxes through the real filter curves (LS g/r/i/z, Gaia G/BP/RP,
:class:`engine.tasks.spectra_fit.SyntheticPhotometry`) and shown to the encoder before any shape
token, and each decoded sample is rescaled so its synthetic photometry matches the measured one
(spectrophotometric calibration). ``scale="model"`` takes the median of the model's own
distribution for the normalisation token instead (for models trained to predict it; the first
nano model is not: its distribution there is nearly uniform, and sampling it gave fluxes off by
up to five decades, reduced chi^2 ~1e7). Objects without usable photometry fall back to the model.

The shape tokens are filled by iterative unmasking (MaskGIT: each step samples every masked
token at ``temperature`` and keeps the most confident ones on a cosine schedule; ROAR: keeps a
random subset), feeding the already decoded tokens back as encoder inputs, as
``aion.fourm.generate`` does, with a private ``torch.Generator`` so a seed gives the same
samples without touching global RNG state. The first step is computed once per object and
sampled for all its samples; hidden tokens are cut from the encoder sequence rather than padded.
Several samples per object give a spread; the codec decodes the tokens onto the DESI grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch

from engine.data import schema
from engine.errors import MissingModalityError, ModelError, ValidationError
from engine.model.modalities import MODALITIES
from engine.tasks.features import PHOTOMETRY_KEYS, tokenize
from engine.tasks.spectra_fit import SyntheticPhotometry

TARGET_KEY = "tok_spectrum_desi"
XP_KEYS = ("tok_xp_bp", "tok_xp_rp")
SCHEMES = ("maskgit", "roar")
SCALES = ("photometry", "model")
NORM_POSITION = 0  # the spectrum codec puts its normalisation token first


@dataclass(frozen=True)
class GenerationConfig:
    """How to generate. The defaults are the interactive path (``predict``, the app): 4 samples from
    3 unmasking steps = 1 forward pass per object + 2 batched over its samples; evaluation uses
    :data:`EVALUATION`."""

    n_samples: int = 4
    steps: int = 3
    temperature: float = 1.0
    scheme: str = "maskgit"
    seed: int = 0
    scale: str = "photometry"

    def __post_init__(self) -> None:
        if self.n_samples < 1:
            raise ValidationError(f"n_samples must be >= 1, got {self.n_samples!r}")
        if not 1 <= self.steps <= MODALITIES[TARGET_KEY].num_tokens - 1:
            raise ValidationError(f"steps must be in 1..{MODALITIES[TARGET_KEY].num_tokens - 1}, got {self.steps!r}")
        if self.temperature < 0:
            raise ValidationError(f"temperature must be >= 0, got {self.temperature!r}")
        if self.scheme not in SCHEMES:
            raise ValidationError(f"unknown decoding scheme {self.scheme!r}; accepted: {', '.join(SCHEMES)}")
        if self.scale not in SCALES:
            raise ValidationError(f"unknown flux scale source {self.scale!r}; accepted: {', '.join(SCALES)}")


INTERACTIVE = GenerationConfig()
EVALUATION = GenerationConfig(n_samples=4, steps=8)


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


# --- the flux scale -------------------------------------------------------------------------


@cache
def desi_photometry() -> SyntheticPhotometry:
    """Synthetic photometry on the DESI grid (filter curves read once per process)."""
    return SyntheticPhotometry(schema.desi_wavelength())


def normalization_tokens(codec, mean_flux: np.ndarray) -> torch.Tensor:
    """The codec's normalisation token for spectra of mean flux ``mean_flux`` (1e-17 erg/s/cm^2/A); -1 where
    unknown (NaN). Same arithmetic as ``AutoencoderSpectrumCodec._encode``: log10(max(n, 0.1) + 1), quantized."""
    n = torch.as_tensor(np.asarray(mean_flux, float), dtype=torch.float32)
    known = torch.isfinite(n)
    value = torch.log10(torch.clamp(torch.nan_to_num(n, nan=1.0), min=0.1) + 1.0)
    tokens = codec.normalization_quantizer.encode(value.to(_codec_device(codec))).long().cpu()
    return torch.where(known, tokens, torch.full_like(tokens, -1))


def normalization_flux(codec, tokens: torch.Tensor) -> np.ndarray:
    """Mean flux (1e-17 erg/s/cm^2/A) a normalisation token stands for (inverse of :func:`normalization_tokens`)."""
    value = codec.normalization_quantizer.decode(torch.as_tensor(tokens).to(_codec_device(codec)))
    return (torch.clamp(10 ** value.float() - 1.0, min=0.1)).cpu().numpy()


def _codec_device(codec) -> torch.device:
    return next(codec.parameters()).device


# --- generation -----------------------------------------------------------------------------


def _logits(
    model, inputs: dict, masks: dict, ids: torch.Tensor, decoded: torch.Tensor, targets: torch.Tensor | None = None
) -> torch.Tensor:
    """Logits (rows, n_targets, vocab) of the ``targets`` (default: every token not yet decoded), in ascending
    position order; the encoder sees the conditioning and the ``decoded`` spectrum tokens only.

    Hidden tokens sort last in the official encoder, so the encoder sequence is cut to the longest row
    of visible tokens instead of carrying every hidden token as padding."""
    targets = ~decoded if targets is None else targets
    n_vis = sum((~m).sum(1) for m in masks.values()) + decoded.sum(1)
    n_targets = int(targets[0].sum())
    out = model._forward(
        {**inputs, TARGET_KEY: ids},
        target_mask={TARGET_KEY: ~targets},
        input_mask={**masks, TARGET_KEY: ~decoded},
        num_decoder_tokens=n_targets,
        num_encoder_tokens=max(int(n_vis.max()), 1),
    )[TARGET_KEY]
    return out.reshape(ids.shape[0], n_targets, -1).float()


def _hidden_positions(decoded: torch.Tensor) -> torch.Tensor:
    """Positions of the hidden tokens per row, ascending (the decoder's deterministic order)."""
    n = decoded.shape[1]
    remaining = int((~decoded[0]).sum())
    return torch.argsort(decoded.float() + torch.arange(n, device=decoded.device)[None] * 1e-6, dim=1)[:, :remaining]


def _median_token(logits: torch.Tensor) -> torch.Tensor:
    """Median of a categorical over an ordinal vocabulary (the normalisation grid is linear in log flux)."""
    cdf = logits.softmax(-1).cumsum(-1)
    return (cdf < 0.5).sum(-1).clamp(max=logits.shape[-1] - 1)


@torch.inference_mode()
def generate_tokens(
    model,
    cond_tokens: dict[str, torch.Tensor],
    cond_present: dict[str, np.ndarray],
    config: GenerationConfig,
    norm_tokens: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sampled ``tok_spectrum_desi`` ids (B, S, 273) for B objects, S = ``config.n_samples``.

    ``norm_tokens`` (B,): the normalisation token per object (from photometry), -1 where unknown; unknown
    ones (or all, when None) are the median of the model's distribution, decided before any shape token.
    """
    device = next(model.parameters()).device
    s = config.n_samples
    b = next(iter(cond_tokens.values())).shape[0]
    n = MODALITIES[TARGET_KEY].num_tokens
    gen = torch.Generator(device="cpu").manual_seed(config.seed)
    inputs, masks = {}, {}
    for key, tok in cond_tokens.items():
        t = tok.to(device).long().reshape(b, -1)
        inputs[key] = t
        absent = torch.as_tensor(~np.asarray(cond_present[key], bool), device=device)
        masks[key] = absent[:, None].expand_as(t).clone()
    ids = torch.zeros(b, n, dtype=torch.long, device=device)
    decoded = torch.zeros(b, n, dtype=torch.bool, device=device)
    norm = torch.full((b,), -1, dtype=torch.long) if norm_tokens is None else torch.as_tensor(norm_tokens).long().cpu()
    if norm.shape != (b,):
        raise ValidationError(f"norm_tokens must have shape ({b},), got {tuple(norm.shape)}")
    if bool((norm < 0).any()):  # the model's own estimate from the conditioning alone, the only target
        only_norm = torch.zeros_like(decoded)
        only_norm[:, NORM_POSITION] = True
        logits = _logits(model, inputs, masks, ids, decoded, targets=only_norm)[:, 0].cpu()
        norm = torch.where(norm < 0, _median_token(logits), norm)
    ids[:, NORM_POSITION] = norm.to(device)
    decoded[:, NORM_POSITION] = True

    for step, count in enumerate(cosine_schedule(n - 1, config.steps)):
        logits = _logits(model, inputs, masks, ids, decoded).cpu()
        if step == 0 and s > 1:  # every sample of an object has the same inputs so far: one pass, S draws
            logits = logits.repeat_interleave(s, 0)
            inputs = {k: v.repeat_interleave(s, 0) for k, v in inputs.items()}
            masks = {k: v.repeat_interleave(s, 0) for k, v in masks.items()}
            ids, decoded = ids.repeat_interleave(s, 0), decoded.repeat_interleave(s, 0)
        remaining = logits.shape[1]
        pos = _hidden_positions(decoded.cpu())
        if config.temperature == 0:
            sample = logits.argmax(-1)
            conf = torch.ones(sample.shape)
        else:
            logp = (logits / config.temperature).log_softmax(-1)
            gumbel = -torch.log(-torch.log(torch.rand(logp.shape, generator=gen).clamp_(1e-20, 1.0)))
            sample = (logp + gumbel).argmax(-1)  # Gumbel-max: an exact categorical draw
            conf = logp.gather(-1, sample[..., None])[..., 0]
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


def super_resolve(loaded, dataset, object_ids, config: GenerationConfig = INTERACTIVE) -> dict:
    """Generate spectra for objects that all share one conditioning (same kind, same XP availability).

    Returns ``wavelength`` (L,), ``samples`` (B, S, L) in 1e-17 erg/s/cm^2/A, ``mean``/``std`` (B, L),
    ``input_kind``, ``keys``, ``scale_source`` (B,: "photometry" or "model") and ``calibration`` (B, S: the
    synthetic-photometry factor applied to each sample; 1 with ``scale="model"``).
    """
    ids = np.atleast_1d(np.asarray(object_ids, dtype=np.int64))
    rows = dataset.objects(ids)
    kinds = set(rows["kind"].astype(str))
    xp_flag = schema.source("xp_gaia").flag
    has_xp = rows[xp_flag].to_numpy(bool) if xp_flag in rows.columns else np.zeros(len(ids), bool)
    kind = kinds.pop() if len(kinds) == 1 else None
    if kind is None or (kind == "star" and len(set(has_xp.tolist())) != 1):
        raise ValidationError("super_resolve needs objects of one kind (and, for stars, one XP availability) per call")
    input_kind, keys = conditioning(loaded, kind, kind == "star" and bool(has_xp[0]))
    tokens, present = tokenize(loaded, dataset, ids, keys)
    if not any(p.any() for p in present.values()):
        raise MissingModalityError(f"object_id {ids[:5].tolist()} have none of the generator inputs {list(keys)}")
    codec = loaded.codecs[TARGET_KEY]
    phot = desi_photometry()
    observed = phot.observed(rows)
    norm = normalization_tokens(codec, phot.mean_flux(observed)) if config.scale == "photometry" else None
    gen_tokens = generate_tokens(loaded.model, tokens, present, config, norm_tokens=norm)
    samples = decode_spectra(loaded, gen_tokens)
    from_phot = np.zeros(len(ids), bool) if norm is None else (norm >= 0).numpy()
    calibration = np.ones(samples.shape[:2])
    if from_phot.any():
        calibration[from_phot] = phot.scale(samples[from_phot], observed[from_phot])
        samples = samples * calibration[..., None].astype(samples.dtype)
    return {
        "wavelength": schema.desi_wavelength(),
        "samples": samples,
        "mean": samples.mean(1),
        "std": samples.std(1),
        "input_kind": input_kind,
        "keys": list(keys),
        "scale_source": np.where(from_phot, "photometry", "model"),
        "calibration": calibration,
        "norm_flux": normalization_flux(codec, gen_tokens[:, 0, NORM_POSITION]),
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
    loaded, dataset, *, seed: int = 0, config: GenerationConfig = EVALUATION, max_per_kind: int = 40,
    batch_objects: int = 8, progress: bool = True,
) -> tuple[dict, dict]:
    """Score generated vs nearest-neighbour spectra on held-out galaxies and stars.

    Both are scored with reduced chi^2 against the true spectrum and its ivar, and read out the same way
    (line redshift for galaxies, template Teff/log g/[Fe/H] for stars). The baseline gets the same
    synthetic-photometry calibration as the generated spectra, so the comparison is about the spectral
    shape; ``chi2_codec_roundtrip_median`` (true spectrum -> tokens -> spectrum) is the best the tokens allow,
    and the read-outs of that round trip (``*_codec_roundtrip_*``) say whether the tokens keep the lines,
    ``flux_ratio_median`` (median generated / median true flux) checks the absolute scale.

    Returns (metrics dict, examples dict of arrays for the plots).
    """
    import time

    from tqdm.auto import tqdm

    from engine.model.modalities import load_modalities
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
        means, stds, seconds, cpu = [], [], 0.0, 0.0
        bar = tqdm(total=len(test_ids), desc=f"super-resolve {kind}s", disable=not progress, unit="obj")
        for start in range(0, len(test_ids), batch_objects):
            chunk = test_ids[start : start + batch_objects]
            t0, c0 = time.perf_counter(), time.process_time()
            out = super_resolve(loaded, dataset, chunk, GenerationConfig(**{**config.__dict__, "seed": config.seed + start}))
            seconds, cpu = seconds + time.perf_counter() - t0, cpu + time.process_time() - c0
            means.append(out["mean"])
            stds.append(out["std"])
            bar.update(len(chunk))
        bar.close()
        gen = np.concatenate(means)
        true_flux, true_ivar, _, _ = spectra(dataset, test_ids)
        base = nearest_neighbour_spectra(dataset, train_ids, test_ids, input_kind)
        phot = desi_photometry()
        base = base * phot.scale(base, phot.observed(dataset.objects(test_ids)))[:, None]
        tokens = loaded.codecs.encode({TARGET_KEY: load_modalities(dataset, test_ids, [TARGET_KEY])[TARGET_KEY]})[TARGET_KEY]
        roundtrip = decode_spectra(loaded, tokens[:, None])[:, 0]
        chi_gen = metrics.reduced_chi2(gen, true_flux, true_ivar)
        chi_base = metrics.reduced_chi2(base, true_flux, true_ivar)
        good = true_ivar > 0
        true_med = np.array([np.median(f[g]) if g.any() else np.nan for f, g in zip(true_flux, good, strict=True)])
        res = {"n": int(len(test_ids)), "input_kind": input_kind,
               "chi2_generated_median": float(np.median(chi_gen)), "chi2_baseline_median": float(np.median(chi_base)),
               "chi2_codec_roundtrip_median": float(np.median(metrics.reduced_chi2(roundtrip, true_flux, true_ivar))),
               "generated_better_fraction": float(np.mean(chi_gen < chi_base)),
               "generated_better_p": metrics.sign_test_p(int((chi_gen < chi_base).sum()), int((chi_gen != chi_base).sum())),
               "flux_ratio_median": float(np.nanmedian(np.median(gen, 1) / true_med)),
               "seconds_per_object": seconds / len(test_ids), "cpu_seconds_per_object": cpu / len(test_ids),
               "torch_threads": torch.get_num_threads()}
        truth = cat.set_index("object_id").loc[test_ids]
        if kind == "galaxy" and "truth_z" in truth.columns:
            zt = truth["truth_z"].to_numpy(float)
            for name, fl in (("generated", gen), ("baseline", base), ("codec_roundtrip", roundtrip), ("true_spectrum", true_flux)):
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
                for name, fl in (("generated", gen), ("baseline", base), ("codec_roundtrip", roundtrip), ("true_spectrum", true_flux)):
                    pred = labeller(fl)
                    for j, c in enumerate(label_cols):
                        res[f"{c.removeprefix('truth_')}_{name}_mae"] = float(np.nanmean(np.abs(pred[:, j] - true_lab[:, j])))
        results[kind] = res
        k = min(3, len(test_ids))
        examples.update({f"{kind}_object_id": test_ids[:k], f"{kind}_true": true_flux[:k], f"{kind}_ivar": true_ivar[:k],
                         f"{kind}_mean": gen[:k], f"{kind}_std": np.concatenate(stds)[:k], f"{kind}_baseline": base[:k]})
    return results, examples
