"""Codec training: the losses go down on tiny data, scalar tables round-trip within a bin width,
and ``train_codecs`` writes an official codec folder plus the report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from aion.codecs import LogScalarCodec, MultiScalarCodec, ScalarCodec

from engine.data.store import open_dataset
from engine.errors import DatasetError
from engine.model.codecs import CodecSet, build_codecs
from engine.train import image_codec, scalar_codecs, spectrum_codec
from engine.train.codec_training import CodecTrainConfig, fit, ids_with, train_codecs


def _eval_loss(fn, batch) -> float:
    with torch.no_grad():
        return float(fn(batch)[0])


def test_image_codec_training_reduces_loss(train_data, tiny_preset):
    torch.manual_seed(0)
    ds = open_dataset(train_data)
    codec = build_codecs(tiny_preset, ["tok_image"])["tok_image"]
    ids = ids_with(ds, "tok_image", heldout=False)[:4]
    batch = image_codec.read_images(ds, "image_ls", ids)
    before = _eval_loss(lambda b: image_codec.loss(codec.eval(), b), batch)
    stream = iter(lambda: batch, None)  # overfit one batch: a loss that cannot drop means a broken graph
    fit(codec, lambda b: image_codec.loss(codec, b), stream, steps=15, config=CodecTrainConfig(lr=5e-3, warmup=2),
        desc="test", device=torch.device("cpu"), to_device=lambda b, d: b)
    after = _eval_loss(lambda b: image_codec.loss(codec.eval(), b), batch)
    assert after < 0.5 * before, (before, after)


def test_spectrum_codec_training_reduces_loss(train_data, tiny_preset):
    torch.manual_seed(0)
    ds = open_dataset(train_data)
    codec = build_codecs(tiny_preset, ["tok_spectrum_desi"])["tok_spectrum_desi"]
    ids = ids_with(ds, "tok_spectrum_desi", heldout=False)[:4]
    s = spectrum_codec.read_spectra(ds, "tok_spectrum_desi", ids)
    nll = lambda: float(spectrum_codec.loss(codec, s)[1]["nll"])  # noqa: E731
    codec.train()
    before = nll()
    fit(codec, lambda b: spectrum_codec.loss(codec, b), iter(lambda: s, None), steps=15,
        config=CodecTrainConfig(lr=5e-3, warmup=2), desc="test", device=torch.device("cpu"), to_device=lambda b, d: b)
    codec.train()
    after = nll()
    assert after < 0.5 * before, (before, after)


@pytest.mark.parametrize("cls", [ScalarCodec, LogScalarCodec])
def test_scalar_quantile_codec_round_trips_within_bin_width(cls):
    rng = np.random.default_rng(0)
    values = rng.lognormal(1.0, 1.0, 5000)
    codec = cls(modality="FLUX_G", codebook_size=1024, reservoir_size=2048)
    scalar_codecs.fill_scalar_codec(codec, values, "tok_flux_g")
    test = rng.lognormal(1.0, 1.0, 2000)
    table = codec.quantizer._index_to_val.numpy().astype(np.float64)
    if cls is LogScalarCodec:
        table = np.exp(table)
    inside = (test > table[0]) & (test <= table[-1])
    rec = scalar_codecs.roundtrip(codec, test)
    codes = codec.quantizer.encode(torch.as_tensor(test, dtype=torch.float32)).numpy()
    width = table[codes] - table[np.maximum(codes - 1, 0)]
    err = np.abs(rec - test)
    assert inside.mean() > 0.99
    assert np.all(err[inside] <= width[inside] * (1 + 1e-4) + 1e-6)
    # the table is an empirical CDF: bins hold equal mass, so the median relative error is tiny
    assert np.median(err / test) < 0.01


def test_scalar_table_not_polluted_by_unfilled_reservoir():
    """Fewer values than the reservoir: the package's streaming fill would leave zeros in the table."""
    codec = ScalarCodec(modality="g_cmodel_mag", codebook_size=64, reservoir_size=4096)
    values = np.random.default_rng(1).normal(22.0, 1.0, 300)
    scalar_codecs.fill_scalar_codec(codec, values, "tok_mag_g")
    table = codec.quantizer._index_to_val.numpy()
    assert table.min() >= values.min() - 1e-4 and table.max() <= values.max() + 1e-4


def test_xp_multiscalar_codec_fills_each_coefficient():
    rng = np.random.default_rng(2)
    values = rng.normal(0, 1, (500, 55)) * np.logspace(2, -2, 55)
    codec = MultiScalarCodec(modality="bp_coefficients", compression_fns=["arcsinh"], decompression_fns=["sinh"],
                             codebook_size=256, reservoir_size=512, num_quantizers=55)
    scalar_codecs.fill_scalar_codec(codec, values, "tok_xp_bp")
    err = scalar_codecs.heldout_errors(codec, rng.normal(0, 1, (200, 55)) * np.logspace(2, -2, 55))
    assert err["median_abs_error_over_spread"] < 0.05


def test_scalar_codec_rejects_empty_values():
    codec = ScalarCodec(modality="EBV", codebook_size=16, reservoir_size=32)
    with pytest.raises(DatasetError, match="tok_ebv"):
        scalar_codecs.fill_scalar_codec(codec, np.array([np.nan]), "tok_ebv")


def test_train_codecs_writes_official_folder_and_report(train_data, tiny_preset, tmp_path):
    out = tmp_path / "model"
    report = train_codecs(train_data, out, tiny_preset, run_dir=tmp_path / "run",
                          config=CodecTrainConfig(image_steps=4, spectrum_steps=4, batch_size=4, eval_objects=4))
    assert (out / "codecs" / "image" / "config.json").is_file()
    assert (out / "codecs" / "spectrum" / "model.safetensors").is_file()
    saved = json.loads((out / "report" / "codecs.json").read_text())
    assert saved["codecs"]["tok_image"]["chi2_per_pixel_median"] == report["codecs"]["tok_image"]["chi2_per_pixel_median"]
    assert "r2_median" in saved["codecs"]["tok_spectrum_desi"]
    assert "median_relative_error" in saved["codecs"]["tok_flux_g"]
    assert (out / "report" / "codec_image_examples.png").is_file()
    codecs = CodecSet.load(out)  # strict load of every folder written
    assert "tok_image" in codecs and "tok_z" in codecs
    # resume: finished stages are loaded, not retrained, and give the same codec
    again = train_codecs(train_data, out, tiny_preset, run_dir=tmp_path / "run", resume=True,
                         config=CodecTrainConfig(image_steps=4, spectrum_steps=4, batch_size=4, eval_objects=4))
    assert again["codecs"]["tok_image"]["chi2_per_pixel_median"] == report["codecs"]["tok_image"]["chi2_per_pixel_median"]
