"""Real noise, no noise model: `dataset: pairs:PATH` (scenes of noisy captures, clean if known) with `noise: real`.
Noise2Noise trains capture -> capture, Noise2Clean capture -> clean, and the test scores a capture against the clean
image. Every test runs on generated Poisson-Gaussian captures (tests.fixtures.pair_scenes)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import cli
from tests.fixtures import noisy_folder, pair_scenes


def _png(path) -> torch.Tensor:
    a = np.asarray(Image.open(path), dtype=np.float32) / 255
    return torch.from_numpy(a)[None] if a.ndim == 2 else torch.from_numpy(a).permute(2, 0, 1)


def test_a_scene_is_its_clean_image_and_its_captures_split_by_scene(tmp_path):
    from denoise_core.data import load_split, load_whole, views

    root = pair_scenes(tmp_path / "p", scenes=6, captures=3)
    images, names = load_whole(f"pairs:{root}", None, "all", 1)
    assert names == [f"scene{i:02d}" for i in range(6)] and all(im.shape == (4, 40, 48) for im in images)
    clean, caps = views(images[2], 1)  # view 0 the clean file, then the captures by name: exactly the files' pixels
    assert torch.equal(clean, _png(root / "scene02" / "clean.png"))
    assert all(torch.equal(caps[k], _png(root / "scene02" / f"capture{k}.png")) for k in range(3))
    parts = {p: load_whole(f"pairs:{root}", None, p, 1)[1] for p in ("train", "val", "test")}
    assert parts == {"train": ["scene00", "scene01", "scene02", "scene05"], "val": ["scene04"], "test": ["scene03"]}
    tiles, sources = load_split(f"pairs:{root}", None, "train", 1, tile=32)
    assert tiles.shape == (4, 4, 32, 32) and sources == parts["train"]  # every view cut at one place
    # a split of scenes with 3 and 2 captures is one stack: each scene gives as many as the one with fewest
    (root / "scene01" / "capture2.png").unlink()
    assert {im.shape[0] for im in load_whole(f"pairs:{root}", None, "train", 1)[0]} == {3}


def test_the_noisy_input_is_exactly_the_first_capture_and_scored_against_the_clean_image(tmp_path):
    """`evaluate` on real noise: the noisy row is each scene's first capture against its clean image, per scene."""
    from denoise_core.metrics import psnr

    root = pair_scenes(tmp_path / "p", scenes=3, captures=2, colour=True)
    code, out, err = cli("evaluate", "--test", f"pairs:{root}", "--noise", "real", "--channels", "3")
    assert code == 0, err
    row = [ln for ln in out.splitlines() if ln.startswith("noisy input")][0].split()
    per_scene = [psnr(_png(root / f"scene{i:02d}" / "capture0.png")[None], _png(root / f"scene{i:02d}" / "clean.png")[None])
                 for i in range(3)]
    at = row.index("colour")  # ... images, channels, psnr, ssim, seconds_per_image (no published row, no note)
    score = float(row[at + 1])
    assert row[at - 1] == "3" and len(row) == at + 4 and score == pytest.approx(float(torch.cat(per_scene).mean()), abs=0.006)
    # Poisson-Gaussian at 60 photons: far noisier than 8-bit rounding, far cleaner than nothing
    assert 15 < score < 30


@pytest.mark.parametrize("config,needle", [
    ({"noise": "real", "dataset": "natural"}, "every split's dataset must be pairs:PATH"),
    ({"noise": "gaussian", "noise_params": {"sigma": 25}}, "use noise: real"),
    ({"noise": "real", "eval_levels": [10]}, "noise 'real' has no level to vary"),
])
def test_real_noise_and_pairs_go_together(tmp_path, config, needle):
    from denoise_core.tasks import validate_config

    root = pair_scenes(tmp_path / "p", scenes=3)
    with pytest.raises(ValueError, match=needle):
        validate_config({"dataset": f"pairs:{root}", **config})


def test_bad_scenes_are_named_in_one_line(tmp_path):
    from denoise_core.data import check_source

    root = pair_scenes(tmp_path / "p", scenes=5)
    (root / "scene01" / "capture1.png").unlink()
    with pytest.raises(ValueError, match=r"scene '.*scene01' has 1 noisy capture\(s\); expected two or more"):
        check_source(f"pairs:{root}", parts=("train",))
    pair_scenes(tmp_path / "p", scenes=5)  # restored
    (root / "scene04" / "clean.png").unlink()  # the validation scene: it has nothing to be scored against
    with pytest.raises(ValueError, match=r"split val: scene '.*scene04' has no clean image"):
        check_source(f"pairs:{root}", parts=("val",))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "scene02" / "capture1.png")
    with pytest.raises(ValueError, match=r"scene02': capture1.png is \(1, 8, 8\)"):
        check_source(f"pairs:{root}", parts=("train",))


def test_evaluate_refuses_scenes_without_a_clean_image_as_run_does(tmp_path):
    """Scored against nothing, a scene would give a row of nan and exit 0: refused in one line, exit 2."""
    root = pair_scenes(tmp_path / "p", scenes=4, captures=2)
    for i in (1, 3):
        (root / f"scene{i:02d}" / "clean.png").unlink()
    code, out, err = cli("evaluate", "--test", f"pairs:{root}", "--noise", "real")
    assert code == 2 and err.count("\n") == 1 and out == "", err
    assert "2 scene(s) have no clean image (clean.png) to score against (scene01, scene03)" in err


def test_noise2clean_without_clean_training_scenes_is_refused_before_ray(tmp_path):
    import yaml

    root = pair_scenes(tmp_path / "p", scenes=6)
    for i in (0, 1):
        (root / f"scene{i:02d}" / "clean.png").unlink()  # training scenes with captures only
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "realn", "description": "d", "fixed": {"dataset": f"pairs:{root}", "noise": "real"},
        "compare": {"target": ["clean", "noisy"]}, "tune": {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
        "budgets": {b: {"trials_per_cell": 1, "seeds": 1, "steps": 10, "eval_every": 10, "crop": 32, "val_images": 2,
                        "test_images": 2} for b in ("smoke", "quick", "full")}}))
    code, out, err = cli("run", str(spec), "--budget", "smoke", "--storage", str(tmp_path / "store"))
    assert code == 2 and err.count("\n") == 1, err
    assert "cell target=clean" in err and "2 have none (scene00, scene01)" in err and "target: noisy" in err
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("target", ["noisy", "clean"])
def test_a_trial_learns_from_real_captures(tmp_path, target):
    """Noise2Noise (capture -> another capture) and Noise2Clean (capture -> clean) both beat the noisy input on
    held-out scenes; the test input is the first capture, scored whole against the clean image."""
    from denoise_core.tasks import run_trial

    root = pair_scenes(tmp_path / "p", scenes=10, captures=3, size=(64, 64))
    out = run_trial({"dataset": f"pairs:{root}", "noise": "real", "target": target, "model": "simple_unet",
                     "model_params": {"width": 16}, "lr": 2e-3, "batch_size": 8, "steps": 120, "eval_every": 60,
                     "crop": 32, "val_images": 8, "test_images": 8, "threads": 1, "test": True, "select": "psnr",
                     "test_protocol": "whole"}, lambda m: None, workdir=tmp_path / "w")
    m = out["metrics"]
    assert m["test_psnr"] > m["test_input_psnr"] + 3.0 and m["psnr"] > m["input_psnr"] + 3.0, m  # measured: +4.8 dB
    # the test input is exactly the test scenes' first captures (scene03, scene08), whole, against their clean images
    from denoise_core.metrics import psnr

    expect = torch.cat([psnr(_png(root / s / "capture0.png")[None], _png(root / s / "clean.png")[None])
                        for s in ("scene03", "scene08")]).mean()
    assert m["test_input_psnr"] == pytest.approx(float(expect), abs=1e-3)


def test_a_real_noise_study_runs_through_ray_into_its_report(ray_cluster, tmp_path):
    """Noise2Noise against Noise2Clean on real captures, as a study: tuned and confirmed through Ray, the classical
    baselines scored on the same first captures, and a report whose protocol line says what the test scored."""
    import pandas as pd
    import yaml

    from tests import browser

    root = pair_scenes(tmp_path / "p", scenes=10, captures=3, size=(64, 64))
    spec = {"name": "realn", "description": "N2N against N2C on real captures", "question": "target",
            "fixed": {"dataset": f"pairs:{root}", "noise": "real", "model": "simple_unet", "model_params": {"width": 16},
                      "test_protocol": "whole"},
            "compare": {"target": ["clean", "noisy"]}, "tune": {"lr": {"type": "loguniform", "low": 1e-3, "high": 5e-3}},
            "budgets": {b: {"trials_per_cell": 1, "seeds": 2, "steps": 60, "eval_every": 30, "crop": 32, "val_images": 4,
                            "test_images": 4, "batch_size": 8} for b in ("smoke", "quick", "full")}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    code, out, err = cli("run", str(tmp_path / "s.yaml"), "--budget", "smoke", "--storage", str(tmp_path / "store"),
                         "--address", ray_cluster.address, "--quiet")
    assert code == 0, out + err
    sdir = tmp_path / "store" / "realn"
    df = pd.read_parquet(sdir / "trials.parquet")
    confirm = df[df.phase == "confirm"]
    assert len(confirm) == 4 and set(confirm.status) == {"completed"}
    # every confirm run scored the two test scenes whole, their first captures as input (20.1 dB, as generated)
    assert confirm["final.test_input_psnr"].round(3).nunique() == 1
    assert confirm["final.test_input_psnr"].iloc[0] == pytest.approx(20.1, abs=0.3)
    from studies.documents import BaselineScores

    (entry,) = BaselineScores.read(sdir / "baselines" / "scores.json").entries.values()
    assert set(entry.metrics) == {"noisy", "tv", "nlm"}  # no model, so neither BM3D's sigma nor a median's impulses
    assert entry.metrics["noisy"].test["psnr"] == pytest.approx(confirm["final.test_input_psnr"].iloc[0], abs=1e-3)
    dom, errors = browser.load(sdir / "report.html") if browser.chromium() else ((sdir / "report.html").read_text(), [])
    assert not errors
    assert "every scene of pairs:" in dom and "its first noisy capture denoised" in dom


@pytest.mark.parametrize("config,needle", [
    ({"target": "noisy"}, "target 'noisy' trains on 2 captures of each image; noisy:"),
    ({"target": "clean"}, "target 'clean' trains on clean images; noisy:"),
    ({"target": "r2r"}, "target 'r2r' needs one known Gaussian sigma"),
    ({"dataset": "NOISY"}, "so it can only train; val images are scored against clean ones"),
    ({"dataset": {"train": "PAIRS", "val": "PAIRS", "test": "NOISY"}}, "test images are scored against clean ones"),
])
def test_a_folder_of_single_noisy_captures_trains_only_what_one_capture_can_train(tmp_path, config, needle):
    from denoise_core.tasks import validate_config

    noisy, pairs = f"noisy:{noisy_folder(tmp_path / 'n', 4)}", f"pairs:{pair_scenes(tmp_path / 'p', scenes=3)}"
    cfg = {"dataset": {"train": noisy, "val": pairs, "test": pairs}, "noise": "real", "target": "blindspot", **config}
    if isinstance(cfg["dataset"], dict):
        cfg["dataset"] = {k: {"NOISY": noisy, "PAIRS": pairs}.get(v, v) for k, v in cfg["dataset"].items()}
    else:
        cfg["dataset"] = noisy
    with pytest.raises(ValueError, match=needle):
        validate_config(cfg)


@pytest.mark.parametrize("target", ["blindspot", "neighbor"])
def test_a_single_capture_scheme_learns_from_a_folder_of_noisy_images_alone(tmp_path, target):
    """Trained on one noisy capture of each image (noisy:PATH, no clean image anywhere in training), Noise2Void and
    Neighbor2Neighbor beat the noisy input on held-out scenes scored against their clean images."""
    from denoise_core.data import load_whole, views
    from denoise_core.tasks import run_trial

    root = noisy_folder(tmp_path / "n", 12)
    images, names = load_whole(f"noisy:{root}", None, "all", 1)
    clean, caps = views(images[0].reshape(-1, 64, 64), 1)  # [NaN view, the file's own pixels]
    assert names[0] == "shot00.png" and clean.isnan().all() and torch.equal(caps[0], _png(root / "shot00.png"))
    pairs = f"pairs:{pair_scenes(tmp_path / 'p', scenes=4, size=(64, 64))}"
    out = run_trial({"dataset": {"train": f"noisy:{root}", "val": pairs, "test": pairs}, "noise": "real",
                     "target": target, "model": "simple_unet", "model_params": {"width": 16}, "lr": 2e-3,
                     "batch_size": 8, "steps": 150, "eval_every": 75, "crop": 32, "val_images": 4, "test_images": 4,
                     "threads": 1, "test": True, "select": "psnr", "test_protocol": "whole"}, lambda m: None,
                    workdir=tmp_path / "w")
    m = out["metrics"]
    assert m["test_psnr"] > m["test_input_psnr"] + 1.0, m  # measured: +3.5 dB (blindspot), +2.4 dB (neighbor)


def test_a_study_on_a_folder_of_noisy_images_runs_through_ray_into_its_report(ray_cluster, tmp_path):
    """The user's own single captures as a study: Noise2Void against Neighbor2Neighbor trained on noisy:PATH, tuned and
    confirmed through Ray, scored on held-out scenes with clean images, and a report whose best table says each
    scheme trained on one capture per image file and needed nothing more."""
    import pandas as pd
    import yaml

    from tests import browser

    noisy = f"noisy:{noisy_folder(tmp_path / 'n', 8)}"
    pairs = f"pairs:{pair_scenes(tmp_path / 'p', scenes=4, size=(64, 64))}"
    spec = {"name": "single", "description": "N2V against Ne2Ne on single noisy captures", "question": "target",
            "fixed": {"dataset": {"train": noisy, "val": pairs, "test": pairs}, "noise": "real",
                      "model": "simple_unet", "model_params": {"width": 8}, "test_protocol": "whole"},
            "compare": {"target": ["blindspot", "neighbor"]},
            "tune": {"lr": {"type": "loguniform", "low": 1e-3, "high": 5e-3}},
            "budgets": {b: {"trials_per_cell": 1, "seeds": 2, "steps": 30, "eval_every": 15, "crop": 16,
                            "val_images": 2, "test_images": 2, "batch_size": 4} for b in ("smoke", "quick", "full")}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    code, out, err = cli("run", str(tmp_path / "s.yaml"), "--budget", "smoke", "--storage", str(tmp_path / "store"),
                         "--address", ray_cluster.address, "--quiet")
    assert code == 0, out + err
    assert "validation and test are the same images" in err  # val and test name one source: said, not hidden
    sdir = tmp_path / "store" / "single"
    df = pd.read_parquet(sdir / "trials.parquet")
    confirm = df[df.phase == "confirm"]
    assert len(confirm) == 4 and set(confirm.status) == {"completed"} and set(confirm.cell) == {
        "target=blindspot", "target=neighbor"}
    dom, errors = browser.load(sdir / "report.html") if browser.chromium() else ((sdir / "report.html").read_text(), [])
    assert not errors
    best = browser.table_rows(dom, "best-table")
    assert [(r["training scheme"], r["training captures"], r["it needs"]) for r in best] == [
        ("blindspot", "one per image file", "one capture of each image"),
        ("neighbor", "one per image file", "one capture of each image")], best


def test_the_protocol_line_of_real_noise_names_the_captures_not_a_seed(tmp_path):
    """Real noise is the scenes' own captures: no seed draws it, and the page's test-protocol line says so."""
    from denoise_core.tasks import validate_config
    from denoise_core.tasks.denoise import denoise_test_note

    root = pair_scenes(tmp_path / "p", scenes=4)
    for protocol in ("crops", "whole"):
        note = denoise_test_note(validate_config({"dataset": f"pairs:{root}", "noise": "real", "target": "noisy",
                                                  "test_protocol": protocol}))
        assert "seed" not in note and "capture" in note, note
    synthetic = denoise_test_note(validate_config({"dataset": "natural", "noise": "gaussian",
                                                   "noise_params": {"sigma": 25}}))
    assert "noise from a fixed seed" in synthetic
