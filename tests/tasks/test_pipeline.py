"""End to end on the 64-object mock with a tiny random-weight model: probes, baselines,
segmentation, cached predictions, the Predictor and the predict/evaluate commands."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from engine.data import schema
from engine.errors import UnknownObjectError
from engine.tasks.features import FEATURE_VERSION


@pytest.fixture(scope="module")
def results_root(tmp_path_factory):
    import engine.paths

    root = tmp_path_factory.mktemp("results") / "indexes"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine.paths, "INDEX_ROOT", root)
        yield root


@pytest.fixture(scope="module")
def trained(results_root, tiny_mock, task_model_dir):
    from engine.tasks.probes import train_probes

    return train_probes(tiny_mock, task_model_dir, epochs=2, progress=False)


def test_train_probes_writes_heads_metrics_and_caches(trained, results_root, tiny_mock, task_model_dir):
    from engine.data import open_dataset
    from engine.tasks.features import open_token_cache
    from engine.tasks.probes import load_heads, probes_dir

    assert set(trained["combos"]) == {"photometry", "photometry+image", "photometry+image+spectrum"}
    for combo, res in trained["combos"].items():
        for target in ("truth_z", "truth_log_mstar", "truth_ssfr"):
            assert np.isfinite(res[target]["r2"]) and res[target]["n_test"] > 0, (combo, target)
        assert 0.0 <= res["truth_morphology"]["accuracy"] <= 1.0
        assert np.array(res["truth_morphology"]["confusion"]).shape == (10, 10)
    seg = trained["segmentation"]
    assert set(seg["iou"]) == set(schema.SEGMENTATION_CLASSES) and seg["n_test"] > 0
    assert len(seg["per_galaxy"]["object_id"]) == seg["n_test"]  # pixel counts per galaxy, for the paired bootstrap
    pdir = probes_dir(open_dataset(tiny_mock), task_model_dir)
    assert pdir.is_relative_to(results_root)
    saved = json.loads((pdir / "probes.json").read_text())
    assert saved["model_hash"] == trained["model_hash"]
    heads = load_heads(pdir, "photometry+image")
    assert {"galaxy", "morphology", "segmentation"} <= set(heads)
    galaxy, meta = heads["galaxy"]  # pools photometry and image apart, rebuilt so from its JSON
    assert galaxy.groups == tuple(map(tuple, meta["groups"])) and len(meta["groups"]) == 2
    assert meta["groups"][-1][1] - meta["groups"][-1][0] == 576
    # property probes train 3x the epochs, with the position code; rebuilt with it from the JSON
    assert trained["property_epochs"] == meta["epochs"] == 6 and meta["position_channels"] == 32
    assert galaxy.position.shape == (meta["groups"][-1][1], 32)
    # heads remember their encoder: asked for another model's heads, none are returned
    assert set(load_heads(pdir, "photometry+image", model_hash=trained["model_hash"])) == set(heads)
    assert load_heads(pdir, "photometry+image", model_hash="0123456789abcdef") == {}
    cache = open_token_cache(pdir / "tokens" / "photometry+image+spectrum")
    assert cache.embeddings.dtype == np.float16 and cache.embeddings.shape[1] == cache.layout.total
    # objects without a DESI spectrum have its tokens masked, those with one do not
    sl = cache.layout.slice_of("tok_spectrum_desi")
    cat = open_dataset(tiny_mock).catalog.set_index("object_id").loc[cache.object_ids]
    np.testing.assert_array_equal(~cache.mask[:, sl].all(1), cat["has_spectrum_desi"].to_numpy(bool))
    held = pd.read_parquet(pdir / "heldout.parquet")
    assert {"object_id", "target", "true", "pred", "combo"} <= set(held.columns)
    # the image heads trained on all eight dihedral views of their training galaxies, the turned
    # cutouts encoded once each; the photometry-only heads have no image to turn
    assert trained["augment"] and heads["morphology"][1]["views"] == 8 and heads["segmentation"][1]["views"] == 8
    assert load_heads(pdir, "photometry")["morphology"][1]["views"] == 1
    for combo in ("photometry+image", "photometry+image+spectrum"):
        turned = [open_token_cache(pdir / "tokens" / f"{combo}.views" / f"view{v}") for v in range(1, 8)]
        assert [c.meta["view"] for c in turned] == list(range(1, 8))
        base = open_token_cache(pdir / "tokens" / combo)
        rows = base.rows(turned[0].object_ids)
        image = base.layout.slice_of("tok_image")
        assert not np.array_equal(turned[0].embeddings[:, image], base.embeddings[rows][:, image])
    assert not (pdir / "tokens" / "photometry.views").exists()


def test_token_cache_resumes_after_a_crash(tmp_path, tiny_mock, task_model_dir, monkeypatch):
    from engine.data import open_dataset
    from engine.model.loading import load_model
    from engine.tasks import features

    loaded, ds = load_model(task_model_dir), open_dataset(tiny_mock)
    ids = ds.ids[:10]
    keys = features.combo_keys("photometry+image", loaded.token_keys)
    clean = features.build_token_cache(loaded, ds, ids, keys, tmp_path / "clean", batch_size=4, progress=False)
    real = features.embed_objects_canonical
    calls = {"n": 0}

    def crash_on_second_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(features, "embed_objects_canonical", crash_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        features.build_token_cache(loaded, ds, ids, keys, tmp_path / "crashed", batch_size=4, progress=False)
    assert not (tmp_path / "crashed" / "embeddings.npy").exists()  # no half cache under the final name
    assert json.loads((tmp_path / "crashed" / "progress.json").read_text())["done"] == 4
    monkeypatch.setattr(features, "embed_objects_canonical", real)
    resumed = features.build_token_cache(loaded, ds, ids, keys, tmp_path / "crashed", batch_size=4, progress=False)
    np.testing.assert_array_equal(np.asarray(resumed.embeddings), np.asarray(clean.embeddings))
    np.testing.assert_array_equal(np.asarray(resumed.mask), np.asarray(clean.mask))


def test_baselines_on_same_split(results_root, tiny_mock):
    from engine.tasks.baselines import run_baselines

    res = run_baselines(tiny_mock, epochs=1, progress=False, seg_epochs=1)
    assert {"trees (photometry)", "CNN (image)", "1-D CNN (spectrum)"} <= set(res["methods"])
    assert np.isfinite(res["methods"]["trees (photometry)"]["truth_z"]["r2"])
    assert "truth_morphology" in res["methods"]["CNN (image)"]
    unet = res["segmentation"]["U-Net (image)"]
    assert set(unet["iou"]) == set(schema.SEGMENTATION_CLASSES)
    assert set(unet["per_galaxy"]["union"]) == set(schema.SEGMENTATION_CLASSES)
    # each net's epochs run and best epoch are kept; the 1-D CNN trains as long as the property probes
    assert res["settings"]["spectrum_epochs"] == 3 and res["training"]["1-D CNN (spectrum)"]["epochs"] == 3
    assert {m: t["epochs"] for m, t in res["training"].items() if m != "1-D CNN (spectrum)"} == {
        "CNN (image)": 1, "U-Net (image)": 1}
    assert all(0 <= t["best_epoch"] < t["epochs"] for t in res["training"].values())  # 0-based, as in fit
    # the view-trained nets are also scored with the eight turned cutouts of each held-out galaxy averaged
    cnn = res["views_averaged"]["morphology"]["CNN (image)"]
    assert cnn["accuracy_observed"] == res["methods"]["CNN (image)"]["truth_morphology"]["accuracy"]
    assert 0.0 <= cnn["accuracy"] <= 1.0 and cnn["n_test"] == len(cnn["pred"]) == len(cnn["object_id"]) >= 2
    unet_avg = res["views_averaged"]["segmentation"]["U-Net (image)"]
    assert unet_avg["per_galaxy"]["object_id"] == unet["per_galaxy"]["object_id"]  # the same held-out galaxies
    assert set(unet_avg["iou"]) == set(schema.SEGMENTATION_CLASSES)
    again = run_baselines(tiny_mock, epochs=1, progress=False, seg_epochs=1)
    assert again == res  # cached per dataset and settings


def test_cached_predictions_cover_the_catalog(trained, tiny_mock, task_model_dir):
    from engine.data import open_dataset
    from engine.tasks.predictions import PREDICTION_COLUMNS, cache_predictions

    path = cache_predictions(tiny_mock, task_model_dir, progress=False)
    df = pd.read_parquet(path)
    cat = open_dataset(tiny_mock).catalog
    assert df["object_id"].tolist() == cat["object_id"].tolist()
    assert set(PREDICTION_COLUMNS) <= set(df.columns)
    gal = (cat["kind"] == "galaxy").to_numpy()
    assert np.isfinite(df.loc[gal, "pred_z"]).all() and df.loc[~gal, "pred_z"].isna().all()
    assert df["pred_morphology"].dtype == np.int64
    assert (df.loc[gal, "pred_morphology"] >= 0).all() and (df.loc[~gal, "pred_morphology"] == -1).all()
    mtime = path.stat().st_mtime_ns
    assert cache_predictions(tiny_mock, task_model_dir, progress=False) == path
    assert path.stat().st_mtime_ns == mtime  # up to date: not rewritten


def test_heldout_quality_is_that_of_the_heads_behind_the_predictions(trained, tiny_mock, task_model_dir, tmp_path):
    import shutil

    from engine.tasks.heldout import heldout_quality
    from engine.tasks.predictions import cache_predictions
    from engine.tasks.probes import BEST_COMBO

    folder = cache_predictions(tiny_mock, task_model_dir, progress=False).parent
    quality = heldout_quality(folder)
    combo = trained["combos"][BEST_COMBO]
    assert quality["pred_z"]["r2"] == pytest.approx(combo["truth_z"]["r2"]) and "nmad" in quality["pred_z"]
    for target in (t for t in combo if t.startswith("truth_") and t != "truth_morphology"):  # every head's targets
        assert quality["pred_" + target.removeprefix("truth_")]["n_test"] == combo[target]["n_test"]
    assert quality["pred_morphology"]["accuracy"] == pytest.approx(combo["truth_morphology"]["accuracy"])
    copy = tmp_path / "results"  # heads retrained after the predictions were cached: their errors are not shown
    shutil.copytree(folder / "probes" / "heads", copy / "probes" / "heads")
    shutil.copy(folder / "predictions.json", copy / "predictions.json")
    assert heldout_quality(copy)["pred_z"] == quality["pred_z"]
    galaxy = copy / "probes" / "heads" / BEST_COMBO / "galaxy.safetensors"
    galaxy.write_bytes(galaxy.read_bytes() + b" ")
    assert heldout_quality(copy) == {} and heldout_quality(tmp_path / "nowhere") == {}


def test_predictor_answers_for_one_object(trained, tiny_mock, task_model_dir):
    from engine.tasks.api import Predictor
    from engine.tasks.predictions import cache_predictions

    cache_predictions(tiny_mock, task_model_dir, progress=False)
    pred = Predictor.open(tiny_mock, task_model_dir)
    cat = pred.dataset.catalog
    gal = int(cat.loc[(cat.kind == "galaxy") & cat.has_spectrum_desi, "object_id"].iloc[0])
    props = pred.properties(gal)
    assert props["source"] == "cache" and np.isfinite(props["pred_z"]) and "truth_z" in props
    pred._cached = pd.DataFrame()  # force the live path: same heads, same tokens -> same answer
    live = pred.properties(gal)
    assert live["source"] == "live"
    assert live["pred_z"] == pytest.approx(props["pred_z"], rel=1e-3, abs=1e-3)
    masks = pred.segmentation(gal)
    assert set(masks) == set(schema.SEGMENTATION_CLASSES)
    assert all(m.shape == (96, 96) and m.dtype == bool for m in masks.values())
    sr = pred.superres(gal, n_samples=2, steps=3, seed=1)
    assert sr["samples"].shape == (2, len(schema.desi_wavelength())) and np.isfinite(sr["samples"]).all()
    assert sr["input_kind"] == "photometry" and sr["truth"] is not None
    np.testing.assert_allclose(sr["wavelength"], schema.desi_wavelength())
    star = int(cat.loc[(cat.kind == "star") & cat.has_xp_gaia, "object_id"].iloc[0])
    sr_star = pred.superres(star, n_samples=2, steps=3)
    assert sr_star["input_kind"] == "xp" and sr_star["input"]["coeff_bp"].shape == (schema.XP_N_COEFF,)
    with pytest.raises(UnknownObjectError, match="unknown object_id 424242"):
        pred.properties(424242)


def test_predict_and_evaluate_commands(trained, results_root, tiny_mock, task_model_dir, tmp_path, capsys):
    from engine.cli import main

    cat = pd.read_parquet(tiny_mock / "catalog.parquet")
    gal = int(cat.loc[cat.kind == "galaxy", "object_id"].iloc[0])
    base = ["--dataset", str(tiny_mock), "--model", str(task_model_dir)]
    assert main(["predict", *base, "--task", "z", "--object-id", str(gal), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["object_id"] == gal and "pred_z" in out
    assert main(["predict", *base, "--task", "morphology", "--object-id", str(gal)]) == 0
    assert "pred_morphology_name" in capsys.readouterr().out
    assert main(["predict", *base, "--task", "z", "--object-id", "999"]) == 2
    assert "unknown object_id 999" in capsys.readouterr().err
    assert main(["evaluate", *base, "--out", str(tmp_path / "res"), "--epochs", "2",
                 "--superres-objects", "2", "--samples", "2", "--steps", "2", "--no-progress", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert "truth_z" in res["properties"] and "probe: photometry+image+spectrum" in res["properties"]["truth_z"]
    assert "trees (photometry)" in res["properties"]["truth_z"]
    assert res["superres"]["galaxy"]["n"] >= 1 and np.isfinite(res["superres"]["galaxy"]["chi2_generated_median"])
    assert 0.0 < res["superres"]["galaxy"]["generated_better_p"] <= 1.0
    assert 0.0 <= res["superres"]["galaxy"]["z_codec_roundtrip_within_0.01"] <= 1.0  # do the tokens keep the lines?
    assert res["meta"]["seg_epochs"] == 4  # the U-Net trained as long as the segmentation head (2 x --epochs)
    assert res["meta"]["baseline_epochs"] == 2  # the CNNs trained as long as the probes (--epochs)
    assert res["meta"]["property_epochs"] == res["meta"]["spectrum_epochs"] == 6  # 1-D CNN as long as property probes
    nets = res["meta"]["convergence"]  # every net's best epoch of those it ran, also stated in the Markdown
    assert nets["galaxy (photometry)"]["of"] == nets["1-D CNN (spectrum)"]["of"] == 6
    assert {"segmentation (photometry+image)", "morphology (photometry+image)", "CNN (image)", "U-Net (image)"} <= set(nets)
    assert all(1 <= v["best"] <= v["of"] for v in nets.values())
    assert f"galaxy (photometry) {nets['galaxy (photometry)']['best']}/6" in (tmp_path / "res" / "results.md").read_text()
    md = (tmp_path / "res" / "results.md").read_text()
    assert "## Properties" in md and "## Verdicts" in md and "U-Net" in md
    paired = res["paired"]["truth_z"]  # best probe vs best baseline, from the cached held-out predictions
    assert paired["n"] >= 2 and paired["diff_ci"][0] <= paired["diff_ci"][1] and np.isfinite(paired["diff"])
    assert all("per_galaxy" not in r for r in res["segmentation"].values())  # counts stay in the caches
    assert "paired bootstrap" in md and "Produced by `aion-engine evaluate` in" in md
    assert f"probes {res['meta']['runs_seconds']['probes']:.0f} s" in md  # what the reused runs cost
    every = res["every_input"]["properties"]["truth_z"]  # the same predictions on galaxies with image + spectrum
    assert {"probe: photometry+image+spectrum", "1-D CNN (spectrum)"} <= set(every)
    assert 2 <= every["trees (photometry)"]["n_test"] < res["properties"]["truth_z"]["trees (photometry)"]["n_test"]
    assert "## Galaxies with every input" in md
    for plot in ("scatter.png", "confusion.png", "segmentation.png", "superres.png"):
        assert (tmp_path / "res" / plot).stat().st_size > 1000, plot
    # the image heads and image baselines again with the eight views of each held-out galaxy averaged
    va = res["views_averaged"]
    assert {"probe: photometry+image", "CNN (image)"} <= set(va["morphology"])
    assert {"head on frozen tokens (photometry+image)", "U-Net (image)"} == set(va["segmentation"])
    assert all("pred" not in r for r in va["morphology"].values())  # per-galaxy classes stay in the caches
    assert va["paired"]["morphology"]["baseline"] == "CNN (image)" and va["paired"]["morphology"]["n"] >= 2
    assert "## With the 8 views of each held-out galaxy averaged" in md and "views averaged" in "".join(res["verdicts"])


def test_tokenize_reuses_the_pretraining_token_table(tmp_path, tiny_mock, task_model_dir, monkeypatch):
    from engine.data import open_dataset
    from engine.model.loading import load_model
    from engine.tasks import features
    from engine.train import tokens as train_tokens

    loaded, ds = load_model(task_model_dir), open_dataset(tiny_mock)
    keys = features.combo_keys("photometry+image+spectrum", loaded.token_keys)
    ids = ds.ids[::3]
    fresh_tok, fresh_present = features.tokenize_many(loaded, ds, ids, keys, progress=False)
    train_tokens.load_or_build(ds, task_model_dir, loaded.codecs, list(loaded.token_keys), tmp_path / "runs" / "m" / "cache")
    monkeypatch.setattr(features, "RUNS_ROOT", tmp_path / "runs")
    calls = []
    monkeypatch.setattr(features, "tokenize", lambda *a, **k: calls.append(1))  # must not run the codecs
    tok, present = features.tokenize_many(loaded, ds, ids, keys, progress=False)
    assert not calls
    for k in keys:
        np.testing.assert_array_equal(present[k], fresh_present[k])
        np.testing.assert_array_equal(tok[k][present[k]], fresh_tok[k][fresh_present[k]])


def test_report_from_caches_lists_what_is_missing(trained, results_root, tiny_mock, task_model_dir, tmp_path):
    from engine.tasks.evaluate import report_from_caches

    res = report_from_caches(tiny_mock, task_model_dir, tmp_path / "partial")
    md = (tmp_path / "partial" / "results.md").read_text()
    assert "## Properties" in md and "probe: photometry+image+spectrum" in md
    assert res["meta"]["model_hash"] == trained["model_hash"]
    header = md.splitlines()[2]  # the budgets sentence comes from what the cached runs recorded
    assert "Epochs:" in header and "None" not in header and "Written from the cached runs" in header, header
    if res["meta"]["missing"]:
        assert "Not finished when this table was written" in md


def test_heads_of_another_model_are_not_applied(trained, tiny_mock, task_model_dir):
    """A retrained model must not be read by heads trained on the old encoder (seen on the default data)."""
    from engine.data import open_dataset
    from engine.errors import ModelError
    from engine.tasks.predictions import BEST_COMBO, cache_predictions
    from engine.tasks.probes import probes_dir

    folder = probes_dir(open_dataset(tiny_mock), task_model_dir) / "heads" / BEST_COMBO
    originals = {p: p.read_text() for p in folder.glob("*.json")}
    try:
        for path, text in originals.items():
            meta = json.loads(text)
            meta["model_hash"] = "0123456789abcdef"  # as if trained on an older model
            path.write_text(json.dumps(meta))
        with pytest.raises(ModelError, match="no probes trained for model .*run `aion-engine train probes`"):
            cache_predictions(tiny_mock, task_model_dir, progress=False, train_if_missing=False)
    finally:
        for path, text in originals.items():
            path.write_text(text)


def test_token_features_are_the_embedding_layer_and_the_last_layer(tiny_mock, task_model_dir):
    """Each token's feature = [input embedding of its code | last encoder layer] (features.FEATURE_VERSION)."""
    import torch

    from engine.data import open_dataset
    from engine.model.encode import encoder_outputs
    from engine.model.loading import load_model
    from engine.tasks.features import Layout, encode_canonical, tokenize

    loaded, ds = load_model(task_model_dir), open_dataset(tiny_mock)
    cat = ds.catalog
    ids = cat.loc[cat["has_image_ls"], "object_id"].to_numpy()[:3]
    layout = Layout(("tok_image",))
    tokens, present = tokenize(loaded, ds, ids, layout.keys)
    feats, mask = encode_canonical(loaded.model, tokens, present, layout)
    d = loaded.dim
    assert feats.shape == (3, 576, 2 * d) and not mask.any()
    with torch.no_grad():
        table = loaded.model.encoder_embeddings["tok_image"].token_emb(tokens["tok_image"].long().reshape(3, -1))
    torch.testing.assert_close(feats[..., :d], table.to(feats.dtype))
    last, _ = encoder_outputs(loaded.model, {"tok_image": tokens["tok_image"]})
    torch.testing.assert_close(feats[..., d:], last.to(feats.dtype), atol=1e-4, rtol=1e-4)


def test_heads_of_older_features_are_not_applied(trained, tiny_mock, task_model_dir):
    """Heads trained on the single-layer features (version 1, half the width) count as missing."""
    from engine.data import open_dataset
    from engine.tasks.probes import load_heads, probes_dir

    pdir = probes_dir(open_dataset(tiny_mock), task_model_dir)
    path = pdir / "heads" / "photometry+image" / "morphology.json"
    text = path.read_text()
    try:
        meta = json.loads(text)
        meta["features"] = 1
        path.write_text(json.dumps(meta))
        assert "morphology" not in load_heads(pdir, "photometry+image")
        meta["features"], meta["heads"] = FEATURE_VERSION, 1  # the mean-pooling morphology head of before
        path.write_text(json.dumps(meta))
        assert "morphology" not in load_heads(pdir, "photometry+image")
    finally:
        path.write_text(text)
    morph = load_heads(pdir, "photometry+image")["morphology"][1]
    # trained on the eight views: the conv stack over the token grid (one view: the radial head, checked in
    # test_train_probes_resumes_from_the_heads_a_killed_run_finished)
    assert morph["pooling"] == "spatial" and morph["image_slice"][1] - morph["image_slice"][0] == 576
    assert load_heads(pdir, "photometry")["morphology"][1]["pooling"] == "mean"  # no image tokens


def test_train_probes_resumes_from_the_heads_a_killed_run_finished(results_root, tiny_mock, task_model_dir, tmp_path,
                                                                     monkeypatch):
    """A run killed at the segmentation head keeps the heads it finished; the rerun trains only the rest
    and reports every combination. Changed settings (or ``reuse=False``) train every head again."""
    from engine.tasks import probes

    out = tmp_path / "probes"
    real = {name: getattr(probes, name) for name in ("_fit_property_group", "_fit_morphology", "_fit_segmentation")}
    calls: list[str] = []

    def counting(name):  # heads actually trained (a group with nothing to train on returns None)
        def wrapped(*args, **kwargs):
            fitted = real[name](*args, **kwargs)
            if fitted is not None:
                calls.append(name)
            return fitted
        return wrapped

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(probes, "_fit_segmentation", killed)
    with pytest.raises(KeyboardInterrupt):
        probes.train_probes(tiny_mock, task_model_dir, out, epochs=2, progress=False, augment=False)
    finished = {p.relative_to(out): p.read_bytes() for p in (out / "heads").rglob("*.json")}
    assert any(p.name == "galaxy.json" for p in finished) and not (out / "probes.json").exists()
    assert all(json.loads(b)["fingerprint"] for b in finished.values())
    for name in real:
        monkeypatch.setattr(probes, name, counting(name))
    res = probes.train_probes(tiny_mock, task_model_dir, out, epochs=2, progress=False, augment=False)
    assert calls.count("_fit_segmentation") == 1
    trained_per_combo = {c: len(list((out / "heads" / c).glob("*.safetensors"))) for c in probes.INPUT_COMBOS}
    last = list(probes.INPUT_COMBOS)[-1]
    assert len(calls) == 1 + trained_per_combo[last]  # the segmentation head and the combination never reached
    for rel, content in finished.items():  # finished before the kill: reused as they were
        assert (out / rel).read_bytes() == content, rel
    assert set(pd.read_parquet(out / "heldout.parquet")["combo"]) == set(res["combos"]) == set(probes.INPUT_COMBOS)
    assert "segmentation" in res and (out / "segmentation_examples.npz").is_file()
    calls.clear()
    probes.train_probes(tiny_mock, task_model_dir, out, epochs=2, progress=False, augment=False)
    assert calls == []  # everything current
    assert json.loads((out / "heads" / "photometry+image" / "morphology.json").read_text())["pooling"] == "radial"
    monkeypatch.setattr(probes, "IMAGE_MORPHOLOGY_HEAD", probes.IMAGE_MORPHOLOGY_HEAD + 1)
    probes.train_probes(tiny_mock, task_model_dir, out, epochs=2, progress=False, augment=False)
    assert calls and set(calls) == {"_fit_morphology"}  # another morphology head: only those heads
    calls.clear()
    seg = json.loads((out / "heads" / probes.SEGMENTATION_COMBO / "segmentation.json").read_text())
    assert seg["standardize"] is True
    monkeypatch.setattr(probes, "SEGMENTATION_HEAD", probes.SEGMENTATION_HEAD + 1)
    probes.train_probes(tiny_mock, task_model_dir, out, epochs=2, progress=False, augment=False)
    assert calls == ["_fit_segmentation"]  # another segmentation head: that head alone
    calls.clear()
    probes.train_probes(tiny_mock, task_model_dir, out, epochs=2, property_epochs=3, progress=False, augment=False)
    assert calls and set(calls) == {"_fit_property_group"}  # other property epochs: only the property heads
    calls.clear()
    every_head = sum(trained_per_combo.values())
    probes.train_probes(tiny_mock, task_model_dir, out, epochs=3, progress=False, augment=False)
    assert len(calls) == every_head  # other epochs: every head trained again
    calls.clear()
    probes.train_probes(tiny_mock, task_model_dir, out, epochs=3, progress=False, augment=False, reuse=False)
    assert len(calls) == every_head
    monkeypatch.setattr(probes, "save_head", killed)  # killed while the first retrained head is written
    with pytest.raises(KeyboardInterrupt):
        probes.train_probes(tiny_mock, task_model_dir, out, epochs=4, progress=False, augment=False)
    first = out / "heads" / list(probes.INPUT_COMBOS)[0] / "galaxy.json"
    assert not first.exists()  # no JSON left that would vouch for the half-written head


def test_train_probes_command_reuses_finished_heads_unless_restarted(tiny_mock, task_model_dir, monkeypatch, capsys):
    from engine.cli import main
    from engine.tasks import probes

    seen = []
    monkeypatch.setattr(probes, "train_probes", lambda *a, **k: seen.append(k["reuse"]) or {})
    base = ["train", "probes", "--dataset", str(tiny_mock), "--out", str(task_model_dir)]
    assert main(base) == 0 and main([*base, "--restart"]) == 0
    assert seen == [True, False]


def test_morphology_averaged_over_the_dihedral_views(trained, tiny_mock, task_model_dir, capsys):
    """``views=8``: the morphology probabilities are the mean over the eight turned cutouts, each encoded;
    the other properties stay those of the cutout as observed."""
    import torch

    from engine.cli import main
    from engine.errors import ValidationError
    from engine.tasks.api import Predictor
    from engine.tasks.augment import N_VIEWS
    from engine.tasks.features import Layout, combo_keys, embed_objects_canonical
    from engine.tasks.probes import BEST_COMBO

    pred = Predictor.open(tiny_mock, task_model_dir)
    cat = pred.dataset.catalog
    gal = int(cat.loc[(cat.kind == "galaxy") & cat.has_image_ls, "object_id"].iloc[0])
    pred._cached = pd.DataFrame()  # the live path for both
    one, eight = pred.properties(gal), pred.properties(gal, views=N_VIEWS)
    assert (one["views"], eight["views"], eight["source"]) == (1, N_VIEWS, "live")
    assert eight["pred_z"] == pytest.approx(one["pred_z"], rel=1e-5, abs=1e-6)
    module = pred._heads_of(BEST_COMBO)["morphology"][0]
    layout = Layout(combo_keys(BEST_COMBO, pred.loaded.token_keys))
    with torch.inference_mode():
        probs = []
        for view in range(N_VIEWS):
            tok, msk = embed_objects_canonical(pred.loaded, pred.dataset, np.array([gal]), layout, view)
            probs.append(module(tok.float(), msk).softmax(-1)[0])
        mean = torch.stack(probs).mean(0)
    assert eight["pred_morphology"] == int(mean.argmax())
    assert eight["pred_morphology_prob"] == pytest.approx(float(mean.max()), rel=1e-5)
    assert eight["pred_morphology_prob"] != pytest.approx(float(probs[0].max()), rel=1e-6)  # not view 0 alone
    with pytest.raises(ValidationError, match="views=9"):
        pred.properties(gal, views=9)
    assert main(["predict", "--dataset", str(tiny_mock), "--model", str(task_model_dir), "--task", "morphology",
                 "--object-id", str(gal), "--views", "8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["views"] == 8 and out["pred_morphology"] == eight["pred_morphology"]


def test_heldout_scores_with_the_views_averaged(trained, tiny_mock, task_model_dir, monkeypatch):
    """The saved image heads scored on their held-out galaxies with the eight views averaged: one view
    gives back the scores the heads were saved with; eight views differ from it and are cached."""
    from engine.data import open_dataset
    from engine.model.loading import load_model
    from engine.tasks import view_average
    from engine.tasks.probes import probes_dir

    dataset, loaded = open_dataset(tiny_mock), load_model(task_model_dir)
    pdir = probes_dir(dataset, task_model_dir)
    one = view_average.heldout_view_scores(loaded, dataset, pdir, trained, progress=False, n_views=1)
    assert set(one["morphology"]) == {"probe: photometry+image", "probe: photometry+image+spectrum"}
    for combo in ("photometry+image", "photometry+image+spectrum"):
        r = one["morphology"][f"probe: {combo}"]
        assert r["accuracy"] == r["accuracy_observed"] == trained["combos"][combo]["truth_morphology"]["accuracy"]
    (head_name, head), = one["segmentation"].items()
    assert head_name == "head on frozen tokens (photometry+image)"
    assert head["per_galaxy"]["object_id"] == trained["segmentation"]["per_galaxy"]["object_id"]
    for cls, iou in trained["segmentation"]["iou"].items():
        assert head["iou"][cls] == pytest.approx(iou, abs=1e-6, nan_ok=True), cls

    eight = view_average.heldout_view_scores(loaded, dataset, pdir, trained, progress=False)
    folders = sorted(p.name for p in (pdir / "tokens").iterdir() if "heldout-views" in p.name)
    assert folders == ["photometry+image+spectrum.heldout-views", "photometry+image.heldout-views"]
    seg8 = eight["segmentation"][head_name]
    assert seg8["per_galaxy"]["object_id"] == head["per_galaxy"]["object_id"]
    # the averaged maps are not the observed view's (the tiny random model is far from turn-invariant)
    assert seg8["per_galaxy"]["union"] != head["per_galaxy"]["union"] or \
        seg8["per_galaxy"]["intersection"] != head["per_galaxy"]["intersection"]
    # cached: a second call encodes nothing; a table written from the caches reads them while the heads
    # they scored are the saved ones, and not after a head was trained again
    monkeypatch.setattr(view_average, "build_token_cache", lambda *a, **k: pytest.fail("encoded again"))
    assert view_average.heldout_view_scores(loaded, dataset, pdir, trained, progress=False) == eight
    assert view_average.cached_view_scores(loaded, pdir) == eight
    heads = view_average._heads_to_score(loaded, pdir)
    module, meta = heads["photometry+image"]["segmentation"]
    heads["photometry+image"]["segmentation"] = (module, {**meta, "fingerprint": "retrained"})
    monkeypatch.setattr(view_average, "_heads_to_score", lambda *a: heads)
    assert view_average.cached_view_scores(loaded, pdir) == {}


def test_segmentation_averaged_over_the_dihedral_views(trained, tiny_mock, task_model_dir, capsys):
    """``views=8``: each turned cutout encoded, its probability map turned back, the eight averaged, then
    thresholded; ``views=1`` is the head on the cutout as observed."""
    import torch

    from engine.cli import main
    from engine.errors import ValidationError
    from engine.tasks.api import Predictor
    from engine.tasks.augment import N_VIEWS, undo_dihedral
    from engine.tasks.features import Layout, combo_keys, embed_objects_canonical
    from engine.tasks.probes import SEGMENTATION_COMBO

    pred = Predictor.open(tiny_mock, task_model_dir)
    cat = pred.dataset.catalog
    gal = int(cat.loc[(cat.kind == "galaxy") & cat.has_image_ls, "object_id"].iloc[0])
    module, meta = pred._heads_of(SEGMENTATION_COMBO)["segmentation"]
    layout = Layout(combo_keys(SEGMENTATION_COMBO, pred.loaded.token_keys))
    image = layout.slice_of("tok_image")
    with torch.inference_mode():
        maps = []
        for view in range(N_VIEWS):
            tok, _ = embed_objects_canonical(pred.loaded, pred.dataset, np.array([gal]), layout, view)
            maps.append(undo_dihedral(module(tok[:, image].float()).sigmoid(), view)[0])
    one, eight = pred.segmentation(gal), pred.segmentation(gal, views=N_VIEWS)
    for j, name in enumerate(meta["classes"]):
        np.testing.assert_array_equal(one[name], (maps[0][j] > 0.5).numpy())
        np.testing.assert_array_equal(eight[name], (torch.stack(maps).mean(0)[j] > 0.5).numpy())
    assert any((one[n] != eight[n]).any() for n in one)  # not view 0 alone
    with pytest.raises(ValidationError, match="views=0"):
        pred.segmentation(gal, views=0)
    assert main(["predict", "--dataset", str(tiny_mock), "--model", str(task_model_dir), "--task", "segmentation",
                 "--object-id", str(gal), "--views", "8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["views"] == 8 and {n: c["pixels"] for n, c in out["classes"].items()} == {
        n: int(m.sum()) for n, m in eight.items()}


def test_evaluate_gives_the_segmentation_head_and_the_unet_one_budget(isolated_results, tiny_mock, task_model_dir,
                                                                      tmp_path, capsys):
    from engine.cli import main

    base = ["evaluate", "--dataset", str(tiny_mock), "--model", str(task_model_dir), "--out", str(tmp_path / "res"),
            "--epochs", "2", "--superres-objects", "1", "--samples", "1", "--steps", "1", "--no-progress"]
    assert main([*base, "--seg-epochs", "0"]) == 2
    assert "--seg-epochs must be >= 1, got 0" in capsys.readouterr().err
    assert main([*base, "--seg-epochs", "8", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    nets = res["meta"]["convergence"]
    assert res["meta"]["seg_epochs"] == 8  # not the default 2 x --epochs
    # 8 epochs over every one of the 8 views = a quarter of them, for the head and the U-Net alike
    assert nets["segmentation (photometry+image)"]["of"] == nets["U-Net (image)"]["of"] == 2
