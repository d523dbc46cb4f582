"""No NaN ever reaches a score, a choice or the page.

A real-noise scene without clean.png holds its clean view as NaN: scored against, it makes every score NaN. Such
scenes are refused before Ray for validation and test (one source split three ways, or a source per split), the
evaluation sets refuse a clean image that is not finite wherever they are built (trials, baselines, evaluate), and
a study stored with NaN scores (by an older version) is read without them: the page never prints nan.
"""
from __future__ import annotations

import json
import math
import re
import shutil

import pytest
import yaml

from tests.conftest import cli
from tests.fixtures import noisy_folder, pair_scenes


def _spec(tmp_path, dataset) -> str:
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "mine", "description": "d", "fixed": {"dataset": dataset, "noise": "real", "target": "blindspot",
                                                     "model": "simple_unet", "model_params": {"width": 8}},
        "compare": {"loss": ["l1", "l2"]}, "tune": {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
        "budgets": {b: {"trials_per_cell": 1, "seeds": 1, "steps": 10, "eval_every": 10, "crop": 16, "val_images": 2,
                        "test_images": 2} for b in ("smoke", "quick", "full")}}))
    return str(spec)


@pytest.mark.parametrize("split", ["val", "test"])
def test_per_split_scenes_without_a_clean_image_are_refused_before_ray(tmp_path, split):
    """`dataset: {train: noisy:..., val: pairs:A, test: pairs:B}` with B's (or A's) scenes lacking clean.png used to
    run, tune on "val psnr nan" and print "nan dB": exit 2, one line naming the split and the scenes, nothing written."""
    shots = noisy_folder(tmp_path / "shots", 6)
    good = pair_scenes(tmp_path / "good", 3)
    bad = pair_scenes(tmp_path / "bad", 3, clean=False)
    dataset = {"train": f"noisy:{shots}", "val": f"pairs:{good}", "test": f"pairs:{good}"} | {split: f"pairs:{bad}"}
    storage = tmp_path / "store"
    code, out, err = cli("run", _spec(tmp_path, dataset), "--budget", "smoke", "--storage", str(storage))
    assert code == 2 and err.count("\n") == 1 and out == "", err
    assert f"({split}): 3 scene(s) have no clean image (clean.png) to score against (scene00, scene01, scene02)" in err
    assert not storage.exists()


def test_a_clean_image_that_is_not_a_number_is_never_scored(tmp_path):
    """Past the run's checks (a trial run by hand, the baselines' own task) the evaluation sets refuse it, never
    score it: a real-noise scene without clean.png, and a float TIFF with NaN pixels (microscopy data has them)."""
    import numpy as np
    from PIL import Image

    from denoise_core.baselines import score_baselines
    from denoise_core.tasks import run_trial

    shots = noisy_folder(tmp_path / "shots", 6)
    good, bad = pair_scenes(tmp_path / "good", 3), pair_scenes(tmp_path / "bad", 3, clean=False)
    small = {"model": "simple_unet", "model_params": {"width": 8}, "steps": 2, "eval_every": 2, "crop": 16,
             "batch_size": 2, "val_images": 2, "test_images": 2, "test": True}
    cfg = {"dataset": {"train": f"noisy:{shots}", "val": f"pairs:{good}", "test": f"pairs:{bad}"}, "noise": "real",
           "target": "blindspot", **small}
    with pytest.raises(ValueError, match="no clean image"):
        run_trial(cfg, lambda m: None, workdir=str(tmp_path / "w"))
    with pytest.raises(ValueError, match="clean image 1 of 2 holds NaN or infinite values"):
        score_baselines(cfg, showcase=False)

    tiffs = tmp_path / "tiffs"
    tiffs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        a = rng.uniform(0.2, 0.8, (48, 48)).astype(np.float32)
        a[:, i % 2::2] = np.nan  # every other column: whatever crop an evaluation set cuts holds some
        Image.fromarray(a, mode="F").save(tiffs / f"im{i}.tif")
    cfg = {"dataset": f"folder:{tiffs}", "noise": "gaussian", "noise_params": {"sigma": 25}, **small}
    with pytest.raises(ValueError, match="holds NaN or infinite values"):
        run_trial(cfg, lambda m: None, workdir=str(tmp_path / "w2"))


def _visible(html: str) -> str:
    """The page's text as a reader sees it: no scripts (the figures' data, the compressed plotly)."""
    return re.sub(r"<script.*?</script>", "", html, flags=re.S)


def test_nan_scores_stored_by_an_older_version_never_reach_the_page(n2n_smoke, tmp_path):
    """A stored study whose confirm run and baseline hold NaN scores (a test image, a run's mean, a baseline's
    validation score) is reported without them: the baseline is not chosen on NaN, no sentence or table says nan."""
    from tests import browser

    src, _ = n2n_smoke
    sdir = tmp_path / "store" / "n2n_loss"
    shutil.copytree(src, sdir)
    records = sorted(sdir.glob("records/*.json"))
    poisoned = 0
    for path in records:
        rec = json.loads(path.read_text())
        if rec["phase"] != "confirm" or not rec.get("per_image"):
            continue
        key = next(k for k in rec["per_image"] if k.startswith("test") or "psnr" in k)
        rec["per_image"][key][0] = math.nan  # every confirm run: its first test image
        if not poisoned:  # one run: its final scores too
            rec["history"][-1] = {**rec["history"][-1], **{k: math.nan for k in rec["history"][-1] if "psnr" in k}}
        path.write_text(json.dumps(rec))
        poisoned += 1
    assert poisoned >= 2
    scores = json.loads((sdir / "baselines" / "scores.json").read_text())
    for entry in scores["entries"].values():
        real = [n for n in entry["metrics"] if n != "noisy"]
        entry["metrics"][real[0]]["val"]["psnr"] = math.nan  # never chosen on a NaN
        entry["metrics"][real[0]]["test_per_image"]["psnr"][0] = math.nan
    (sdir / "baselines" / "scores.json").write_text(json.dumps(scores))

    code, out, err = cli("report", "n2n_loss", "--storage", str(tmp_path / "store"))
    assert code == 0, err
    html = (sdir / "report.html").read_text()
    dom = browser.load(sdir / "report.html")[0] if browser.chromium() else html
    text = _visible(dom)
    assert not re.search(r"\bnan\b", text, re.IGNORECASE), re.findall(r".{60}\bnan\b.{20}", text, re.IGNORECASE)[:5]
    for row in browser.table_rows(dom, "comparison-table"):
        assert row["difference (dB, in the first's favour)"] not in ("", "nan"), row


def test_evaluate_study_shows_the_studys_network_rows_and_says_what_a_model_was_not_trained_on(n2n_smoke, tmp_path):
    """`evaluate --study`: beside a model's row, the study's own published network rows of the same set, noise and
    level (N2C and N2N on Kodak24 at sigma 25), and a note when it was trained on another noise (Poisson here)."""
    import csv

    from tests.fixtures import standard_set

    sdir, _ = n2n_smoke
    standard_set(tmp_path / "data", "Kodak24")
    out_csv = tmp_path / "rows.csv"
    code, out, err = cli("evaluate", "--test", "Kodak24", "--data-root", str(tmp_path / "data"), "--noise",
                         "gaussian:sigma=25", "--study", "n2n_loss", "--storage", str(sdir.parent), "--cell",
                         "noise=poisson,loss=l2", "--csv", str(out_csv))
    assert code == 0, err
    rows = {r["method"]: r for r in csv.DictReader(out_csv.open())}
    model = rows["n2n_loss (noise=poisson, loss=l2)"]
    assert model["published"] == "32.38 (N2C, Noise2Noise README); 32.39 (N2N, Noise2Noise README)", model
    assert model["note"].startswith("trained on Poisson(lam=") and model["note"].endswith("not on gaussian"), model
    assert rows["noisy input"]["note"] == ""
