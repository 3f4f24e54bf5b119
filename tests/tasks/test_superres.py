"""The generator: seeded, right shapes, finite, on the DESI grid, on the object's absolute flux scale;
synthetic photometry and the line-redshift read-out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.data import schema
from engine.errors import ValidationError
from engine.tasks.superres import (
    TARGET_KEY,
    GenerationConfig,
    _logits,
    cosine_schedule,
    decode_spectra,
    desi_photometry,
    generate_tokens,
    normalization_flux,
    normalization_tokens,
    super_resolve,
)

NANO = Path(__file__).resolve().parents[2] / "assets" / "models" / "aion-nano"


def _xp_inputs(b: int = 2):
    g = torch.Generator().manual_seed(0)
    cond = {"tok_xp_bp": torch.randint(0, 1024, (b, 55), generator=g), "tok_xp_rp": torch.randint(0, 1024, (b, 55), generator=g)}
    return cond, {k: np.ones(b, bool) for k in cond}


def _spectrum_galaxies(ds, n: int | None = None) -> np.ndarray:
    cat = ds.catalog.set_index("object_id")
    ids = np.array([i for i in ds.source_ids("spectrum_desi") if cat.loc[i, "kind"] == "galaxy"])
    return ids[:n] if n else ids


def test_cosine_schedule_reveals_every_token_once():
    for n, steps in ((272, 8), (272, 1), (10, 10), (272, 272)):
        counts = cosine_schedule(n, steps)
        assert len(counts) == steps and sum(counts) == n and min(counts) >= 1
    assert cosine_schedule(272, 8)[0] < cosine_schedule(272, 8)[-1]  # few first, many last


def test_generation_config_rejects_bad_values():
    with pytest.raises(ValidationError, match="steps"):
        GenerationConfig(steps=0)
    with pytest.raises(ValidationError, match="scheme"):
        GenerationConfig(scheme="beam")
    with pytest.raises(ValidationError, match="scale.*photometry, model"):
        GenerationConfig(scale="guess")


@pytest.mark.parametrize("scheme", ["maskgit", "roar"])
def test_generator_is_seeded_and_decodes_on_the_desi_grid(task_model_dir, scheme):
    from engine.model.loading import load_model

    loaded = load_model(task_model_dir)
    cond, present = _xp_inputs()
    rng_state = torch.get_rng_state()
    a = generate_tokens(loaded.model, cond, present, GenerationConfig(n_samples=3, steps=4, seed=7, scheme=scheme))
    assert torch.equal(torch.get_rng_state(), rng_state)  # private generator: global RNG untouched
    b = generate_tokens(loaded.model, cond, present, GenerationConfig(n_samples=3, steps=4, seed=7, scheme=scheme))
    c = generate_tokens(loaded.model, cond, present, GenerationConfig(n_samples=3, steps=4, seed=8, scheme=scheme))
    assert a.shape == (2, 3, 273) and torch.equal(a, b) and not torch.equal(a, c)
    assert int(a.min()) >= 0 and int(a.max()) < 1024
    assert not torch.equal(a[:, 0], a[:, 1])  # samples differ from each other
    greedy = generate_tokens(loaded.model, cond, present, GenerationConfig(n_samples=2, steps=4, temperature=0.0))
    assert torch.equal(greedy[:, 0], greedy[:, 1])  # temperature 0 is deterministic across samples
    flux = decode_spectra(loaded, a)
    assert flux.shape == (2, 3, len(schema.desi_wavelength())) and np.isfinite(flux).all()


def test_given_normalisation_tokens_are_kept_and_unknown_ones_come_from_the_model(task_model_dir):
    from engine.model.loading import load_model

    loaded = load_model(task_model_dir)
    cond, present = _xp_inputs()
    ids = generate_tokens(loaded.model, cond, present, GenerationConfig(n_samples=3, steps=2), norm_tokens=torch.tensor([400, -1]))
    assert (ids[0, :, 0] == 400).all()
    assert len(set(ids[1, :, 0].tolist())) == 1  # the model's median: one decision shared by all samples
    with pytest.raises(ValidationError, match="norm_tokens"):
        generate_tokens(loaded.model, cond, present, GenerationConfig(), norm_tokens=torch.tensor([1, 2, 3]))


def test_the_models_own_normalisation_sees_only_the_conditioning(task_model_dir):
    """scale="model": the normalisation token is the median of the official prediction with the whole spectrum
    hidden (a not-yet-generated shape token must never reach the encoder as if it were data)."""
    from engine.model.loading import load_model

    loaded = load_model(task_model_dir)
    cond, present = _xp_inputs()
    masks = {k: torch.zeros_like(v, dtype=torch.bool) for k, v in cond.items()}
    target = torch.ones(2, 273, dtype=torch.bool)
    target[:, 0] = False
    with torch.inference_mode():
        logits = loaded.model._forward(
            {**cond, TARGET_KEY: torch.zeros(2, 273, dtype=torch.long)}, target_mask={TARGET_KEY: target},
            input_mask={**masks, TARGET_KEY: torch.ones(2, 273, dtype=torch.bool)}, num_decoder_tokens=1,
            num_encoder_tokens=110 + 273,
        )[TARGET_KEY].reshape(2, -1).float()
    expected = (logits.softmax(-1).cumsum(-1) < 0.5).sum(-1)
    ids = generate_tokens(loaded.model, cond, present, GenerationConfig(n_samples=2, steps=2, scale="model"))
    assert torch.equal(ids[:, 0, 0], expected) and torch.equal(ids[:, 1, 0], expected)


def test_cutting_hidden_tokens_from_the_encoder_does_not_change_logits(task_model_dir):
    """The fast path drops hidden (padding) tokens from the encoder sequence; the official call keeps them."""
    from engine.model.loading import load_model

    loaded = load_model(task_model_dir)
    cond, present = _xp_inputs()
    present["tok_xp_rp"] = np.array([True, False])  # row 1 lacks a modality: rows of unequal length
    masks = {k: torch.as_tensor(~present[k])[:, None].expand_as(v).clone() for k, v in cond.items()}
    ids = torch.randint(0, 1024, (2, 273), generator=torch.Generator().manual_seed(1))
    decoded = torch.zeros(2, 273, dtype=torch.bool)
    decoded[:, :40] = True
    fast = _logits(loaded.model, cond, masks, ids, decoded)
    with torch.inference_mode():
        full = loaded.model._forward(
            {**cond, TARGET_KEY: ids}, target_mask={TARGET_KEY: decoded.clone()}, input_mask={**masks, TARGET_KEY: ~decoded},
            num_decoder_tokens=233, num_encoder_tokens=110 + 273,
        )[TARGET_KEY].reshape(2, 233, -1)
    torch.testing.assert_close(fast, full.float(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["decam2014-g", "decam2014-z", "gaiadr3-G", "gaiadr3-RP"])
def test_filter_curves_read_directly_equal_speclite(name):
    import speclite.filters

    from engine.tasks.spectra_fit import filter_curve

    ref = speclite.filters.load_filter(name)
    w, r = filter_curve(name)
    np.testing.assert_allclose(w, np.asarray(ref.wavelength))  # Angstrom, whatever unit the file uses
    np.testing.assert_allclose(r, np.asarray(ref.response))
    with pytest.raises(ValidationError, match="unknown filter curve 'nope'"):
        filter_curve("nope")


def test_synthetic_photometry_of_true_spectra_matches_the_catalog(tiny_mock):
    from engine.data import open_dataset
    from engine.tasks.arrays import spectra

    ds = open_dataset(tiny_mock)
    ids = np.asarray(ds.source_ids("spectrum_desi"))
    flux = spectra(ds, ids)[0]
    phot = desi_photometry()
    obs, syn = phot.observed(ds.objects(ids)), phot.maggies(flux)
    assert np.isnan(syn[:, phot.bands.index("flux_z")]).all()  # z is only 90 % on the DESI grid: not used
    r = phot.bands.index("flux_r")
    assert np.nanmedian(np.abs(np.log10(obs[:, r] / syn[:, r]))) < 0.03  # the same flux within 7 %


def test_photometric_normalisation_token_matches_the_codec_token_of_the_true_spectrum(task_model_dir, tiny_mock):
    """The scale token set from photometry is the one the codec gives the real spectrum (the quantizer is a fixed
    linear grid, so this holds for any codec weights). The old generator sampled it: off by up to 5 decades."""
    from engine.data import open_dataset
    from engine.model.loading import load_model
    from engine.model.modalities import load_modalities

    loaded = load_model(task_model_dir)
    ds = open_dataset(tiny_mock)
    ids = np.asarray(ds.source_ids("spectrum_desi"))
    codec = loaded.codecs[TARGET_KEY]
    true_tok = loaded.codecs.encode({TARGET_KEY: load_modalities(ds, ids, [TARGET_KEY])[TARGET_KEY]})[TARGET_KEY][:, 0]
    phot = desi_photometry()
    est = normalization_tokens(codec, phot.mean_flux(phot.observed(ds.objects(ids))))
    assert (est >= 0).all()
    assert np.median(np.abs((est - true_tok).numpy())) <= 4  # 4 bins = 0.023 dex = 5 % in flux
    n_true, n_est = normalization_flux(codec, true_tok), normalization_flux(codec, est)
    assert np.all(np.abs(np.log10(n_est / n_true)) < 0.3)
    assert normalization_tokens(codec, np.array([np.nan]))[0] == -1


def test_generated_spectra_carry_the_objects_flux_scale(task_model_dir, tiny_mock):
    """Random weights, yet the generated spectrum's median flux is the true one within a factor of 10 (the old
    sampled scale token missed by up to 1e5) and its synthetic r-band flux is the catalog's."""
    from engine.data import open_dataset
    from engine.model.loading import load_model
    from engine.tasks.arrays import spectra

    loaded = load_model(task_model_dir)
    ds = open_dataset(tiny_mock)
    ids = _spectrum_galaxies(ds, 4)
    out = super_resolve(loaded, ds, ids, GenerationConfig(n_samples=2, steps=2, seed=3))
    again = super_resolve(loaded, ds, ids, GenerationConfig(n_samples=2, steps=2, seed=3))
    np.testing.assert_array_equal(out["samples"], again["samples"])
    assert out["samples"].shape == (len(ids), 2, len(schema.desi_wavelength())) and np.isfinite(out["samples"]).all()
    assert list(out["scale_source"]) == ["photometry"] * len(ids)
    flux, ivar = spectra(ds, ids)[:2]
    true_med = np.array([np.median(f[v > 0]) for f, v in zip(flux, ivar, strict=True)])
    ratio = np.median(out["mean"], axis=1) / true_med
    assert np.all((ratio > 0.1) & (ratio < 10)), ratio
    phot = desi_photometry()
    r = phot.bands.index("flux_r")
    syn_r = phot.maggies(out["samples"])[..., r]
    obs_r = phot.observed(ds.objects(ids))[:, r]
    assert np.all(np.abs(np.log10(syn_r / obs_r[:, None])) < 0.3)


@pytest.mark.skipif(not (NANO / "codecs" / "spectrum").is_dir(), reason="shipped nano model not present")
def test_trained_codec_round_trip_has_reduced_chi2_near_one(tiny_mock):
    """Encode a true spectrum and decode it: the flux units survive. The nano codec reaches chi2_r ~ 1 on faint
    spectra and 10-40 on bright ones (its shape capacity shows at high S/N); a scale error gives ~1e7."""
    from engine.data import open_dataset
    from engine.model.codecs import CodecSet
    from engine.model.modalities import load_modalities
    from engine.tasks import metrics
    from engine.tasks.arrays import spectra

    codecs = CodecSet.load(NANO, [TARGET_KEY])
    ds = open_dataset(tiny_mock)
    ids = _spectrum_galaxies(ds, 8)
    tokens = codecs.encode({TARGET_KEY: load_modalities(ds, ids, [TARGET_KEY])[TARGET_KEY]})[TARGET_KEY]
    lam = schema.desi_wavelength()
    back = codecs.decode(TARGET_KEY, tokens, wavelength=np.tile(lam.astype(np.float32), (len(ids), 1))).flux.numpy()
    flux, ivar = spectra(ds, ids)[:2]
    chi2 = metrics.reduced_chi2(back, flux, ivar)
    assert np.median(chi2) < 50 and chi2.min() < 2, chi2
    ratio = np.median(back, 1) / np.array([np.median(f[v > 0]) for f, v in zip(flux, ivar, strict=True)])
    assert np.all(np.abs(ratio - 1) < 0.15), ratio


def test_line_redshift_recovers_mock_redshifts(tiny_mock):
    from engine.data import open_dataset
    from engine.tasks.arrays import spectra
    from engine.tasks.spectra_fit import line_redshift

    ds = open_dataset(tiny_mock)
    cat = ds.catalog.set_index("object_id")
    ids = _spectrum_galaxies(ds)
    flux, ivar, lam, _ = spectra(ds, ids)
    zt = cat.loc[ids, "truth_z"].to_numpy()
    zp = np.array([line_redshift(lam, f, v) for f, v in zip(flux, ivar, strict=True)])
    assert np.mean(np.abs(zp - zt) / (1 + zt) < 0.01) >= 0.7
