"""The paired bootstrap behind the results table's "does the foundation model lose?" verdicts."""

import numpy as np
import pytest

from engine.tasks import evaluate, metrics


def test_a_clearly_better_predictor_has_an_interval_above_zero():
    rng = np.random.default_rng(1)
    true = rng.normal(size=400)
    good, bad = true + rng.normal(0, 0.3, 400), true + rng.normal(0, 1.0, 400)
    r = metrics.paired_bootstrap(metrics.r2_score, true, good, bad, n_boot=300)
    assert r["diff"] == pytest.approx(metrics.r2_score(true, good) - metrics.r2_score(true, bad))
    assert 0 < r["diff_ci"][0] < r["diff"] < r["diff_ci"][1]
    assert r["a_ci"][0] < metrics.r2_score(true, good) < r["a_ci"][1] and r["n"] == 400
    swapped = metrics.paired_bootstrap(metrics.r2_score, true, bad, good, n_boot=300)
    assert swapped["diff_ci"] == pytest.approx([-r["diff_ci"][1], -r["diff_ci"][0]])


def test_the_same_resample_is_used_for_both_methods():
    """Identical predictions differ by exactly 0 on every resample, however noisy each score is."""
    true = np.array([0, 1, 2, 1, 0, 2, 2, 1])
    pred = np.array([0, 2, 2, 1, 1, 2, 0, 1])
    r = metrics.paired_bootstrap(metrics.accuracy, true, pred, pred.copy(), n_boot=200)
    assert r["diff"] == 0 and r["diff_ci"] == [0.0, 0.0] and r["a_ci"][0] < r["a_ci"][1]


def test_two_near_equal_classifiers_are_within_the_noise():
    rng = np.random.default_rng(2)
    true = rng.integers(0, 10, 300)
    a = np.where(rng.random(300) < 0.85, true, (true + 1) % 10)
    b = np.where(rng.random(300) < 0.86, true, (true + 1) % 10)
    lo, hi = metrics.paired_bootstrap(metrics.accuracy, true, a, b, n_boot=500)["diff_ci"]
    assert lo < 0 < hi


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="lengths 3, 2, 3"):
        metrics.paired_bootstrap(metrics.r2_score, np.zeros(3), np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="level must be in"):
        metrics.paired_bootstrap(metrics.r2_score, np.zeros(3), np.zeros(3), np.zeros(3), level=95)


def _table(probe: float, base: float) -> dict:
    return {"properties": {"truth_z": {"probe: photometry": {"r2": probe}, "trees (photometry)": {"r2": base}}},
            "segmentation": {}, "superres": {}}


def test_verdict_says_no_winner_when_the_interval_holds_zero():
    table = _table(0.80, 0.82)
    table["paired"] = {"truth_z": {"probe": "probe: photometry", "baseline": "trees (photometry)", "diff": -0.02,
                                   "diff_ci": [-0.05, 0.01], "n": 300, "level": 0.95}}
    (line,) = evaluate.verdicts(table)
    assert "no winner beyond the noise of 300 held-out objects" in line and "-0.050 to +0.010" in line
    table["paired"]["truth_z"]["diff_ci"] = [-0.04, -0.005]
    (line,) = evaluate.verdicts(table)
    assert "the foundation model loses" in line and "-0.040 to -0.005" in line
    del table["paired"]
    (line,) = evaluate.verdicts(table)  # no cached predictions: the plain comparison
    assert "the foundation model loses" in line and "interval" not in line


def test_paired_differences_pair_the_best_methods_on_common_objects():
    rng = np.random.default_rng(3)
    ids = np.arange(200)
    true = rng.normal(size=200)
    frame = [dict(object_id=i, target="truth_z", true=t, pred=t + rng.normal(0, s), method=m)
             for m, s in (("probe: photometry", 0.2), ("probe: photometry+image", 0.9), ("trees (photometry)", 0.6))
             for i, t in zip(ids, true, strict=True)]
    import pandas as pd

    heldout = pd.DataFrame(frame)
    heldout = heldout[~((heldout.method == "trees (photometry)") & (heldout.object_id < 20))]  # trees missed 20 objects
    table = {"properties": {"truth_z": {"probe: photometry": {"r2": 0.9}, "probe: photometry+image": {"r2": 0.2},
                                        "trees (photometry)": {"r2": 0.6}}}}
    r = evaluate.paired_differences(table, heldout)["truth_z"]
    assert (r["probe"], r["baseline"], r["n"]) == ("probe: photometry", "trees (photometry)", 180)
    assert r["diff_ci"][0] > 0


def test_segmentation_counts_give_the_table_iou_and_pair_by_galaxy():
    from engine.tasks import segmentation

    rng = np.random.default_rng(4)
    true = rng.random((30, len(segmentation.CLASSES), 8, 8)) < 0.3
    good = true ^ (rng.random(true.shape) < 0.05)
    bad = true ^ (rng.random(true.shape) < 0.4)
    ids = np.arange(100, 130)
    head, unet = segmentation.scores(ids, true, good), segmentation.scores(ids, true, bad)
    arms = segmentation.CLASSES.index("arms")
    counts = lambda s: np.stack([s["per_galaxy"]["intersection"]["arms"], s["per_galaxy"]["union"]["arms"]], 1)  # noqa: E731
    assert segmentation.pixel_iou(None, counts(head)) == pytest.approx(metrics.iou(true[:, arms], good[:, arms]))
    assert head["iou"]["arms"] == pytest.approx(metrics.iou(true[:, arms], good[:, arms])) and head["n_test"] == 30
    table = {"segmentation": {"head on frozen tokens (photometry+image)": head, "U-Net (image)": unet}}
    paired = evaluate.paired_segmentation(table)
    assert set(paired) == set(evaluate.VERDICT_CLASSES) and paired["arms"]["diff_ci"][0] > 0
    table["paired_segmentation"] = paired
    lines = evaluate.verdicts({"properties": {}, "superres": {}, **table})
    assert any(line.startswith("segmentation arms: the frozen-token head wins") and "interval" in line for line in lines)
    table["paired_segmentation"] = {"arms": {**paired["arms"], "diff_ci": [-0.01, 0.02]}}
    lines = evaluate.verdicts({"properties": {}, "superres": {}, **table})
    assert any(line.startswith("segmentation arms: **no winner beyond the noise of 30 held-out galaxies**") for line in lines)
    unet["per_galaxy"]["object_id"] = unet["per_galaxy"]["object_id"][::-1]  # other galaxies: no pairing
    assert evaluate.paired_segmentation(table) == {}


def test_every_input_scores_use_only_galaxies_with_image_and_spectrum():
    """The 'every input' section scores each method on the held-out galaxies with an image and a spectrum:
    a method good only there scores well, one that missed some of them is left out, stars never count."""
    import pandas as pd

    rng = np.random.default_rng(5)
    n = 300
    catalog = pd.DataFrame({"object_id": np.arange(n), "kind": np.where(np.arange(n) < 280, "galaxy", "star"),
                            "has_image_ls": True, "has_spectrum_desi": np.arange(n) % 2 == 0})
    true = rng.normal(size=n)
    good_on_spectra = np.where(catalog.has_spectrum_desi, true + rng.normal(0, 0.1, n), rng.normal(size=n))
    rows = [dict(object_id=i, target="truth_z", true=true[i], pred=p, method=m)
            for m, preds in (("probe: photometry+image+spectrum", good_on_spectra), ("trees (photometry)", true + rng.normal(0, 0.7, n)))
            for i, p in enumerate(preds)]
    rows += [dict(object_id=i, target="truth_z", true=true[i], pred=true[i], method="1-D CNN (spectrum)")
             for i in range(0, 100, 2)]  # predicted only some of the spectrum galaxies
    every = evaluate.every_input_scores(pd.DataFrame(rows), catalog)
    scores = every["properties"]["truth_z"]
    assert set(scores) == {"probe: photometry+image+spectrum", "trees (photometry)"}
    assert scores["probe: photometry+image+spectrum"]["n_test"] == 140  # even ids below 280
    assert scores["probe: photometry+image+spectrum"]["r2"] > 0.95
    paired = every["paired"]["truth_z"]
    assert paired["probe"] == "probe: photometry+image+spectrum" and paired["diff_ci"][0] > 0
    md = "\n".join(evaluate._every_input_markdown(every, ["probe: photometry+image+spectrum", "trees (photometry)"]))
    assert "n=140" in md and "| redshift z |" in md
    assert evaluate.every_input_scores(pd.DataFrame(rows), catalog.drop(columns="has_spectrum_desi")) == {}
