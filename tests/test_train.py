import json
import shutil

import pytest
import torch

from denoise_core.tasks import run_trial
from denoise_core.trial import lr_factor

TINY = dict(model="simple_unet", model_params={"width": 16}, noise="gaussian", noise_params={"sigma": 25},
            loss="l2", lr=2e-3, batch_size=8, steps=60, eval_every=30, crop=32, val_images=8, threads=1)


@pytest.mark.parametrize("target,captures", [("clean", "fresh"), ("noisy", "fresh"), ("noisy", 2)])
def test_trial_improves_psnr_over_noisy_input(tmp_path, target, captures):
    reports = []
    out = run_trial({**TINY, "target": target, "train_captures": captures}, reports.append, workdir=tmp_path)
    assert [r["step"] for r in reports] == [30, 60]
    for key in ("train_loss", "psnr", "ssim", "input_psnr", "images_per_s"):
        assert key in reports[-1]
    final = out["metrics"]
    assert final["psnr"] > final["input_psnr"] + 2.0, final
    ckpt = torch.load(out["checkpoint"], weights_only=True)
    assert ckpt["config"]["target"] == target and "out.weight" in ckpt["state_dict"]
    assert "checkpoint" in reports[-1]
    # the report's whole held-out image: clean, noisy, denoised, with their PSNRs beside them
    shown = json.loads((tmp_path / out["checkpoint_dir"] / "images.json").read_text())
    assert shown["split"] == "val" and shown["psnr"]["image_output"] > shown["psnr"]["image_noisy"] + 1.0
    from PIL import Image

    assert Image.open(out["images"]["image_output"]).mode == "L"  # grayscale stays one channel: a third of the bytes


def _training_pairs(tmp_path, n: int, **cfg) -> tuple[object, list[tuple[torch.Tensor, torch.Tensor, object]]]:
    """A denoise trial and the (input, target, loss mask) of its first `n` training steps."""
    from denoise_core.tasks import validate_config
    from denoise_core.tasks.denoise import DenoiseTrial

    trial = DenoiseTrial(validate_config({**TINY, **cfg}), tmp_path)
    pairs, loss = [], trial.loss
    trial.loss = lambda pred, target, **kw: (pairs[-1].extend([target, kw.get("mask")]), loss(pred, target, **kw))[1]
    model = trial.compiled
    trial.compiled = lambda inp: (pairs.append([inp.detach().clone()]), model(inp))[1]
    for step in range(n):
        trial.train_step(step)
    return trial, pairs


@pytest.mark.parametrize("noise,params", [("gaussian", {"sigma": 25}), ("bernoulli", {"p": 0.3})])
def test_fixed_captures_are_all_the_noise_a_trial_ever_sees(tmp_path, noise, params):
    """train_captures: 1 draws one capture of each training image, once, the same for every trial of the study
    (another seed trains on the same data): every training input is cut from it. `fresh` draws new noise at every
    step, so its inputs are not. Noise2Noise with 2 captures trains one capture towards the other, never itself,
    and its loss counts the pixels its target observed (Bernoulli's mask)."""
    base = {"noise": noise, "noise_params": params, "steps": 4}
    one, pairs = _training_pairs(tmp_path / "one", 4, **base, train_captures=1)
    c = one.cfg.channels
    clean, capture = one.train_data[:, :c], one.train_data[:, c:2 * c]
    assert one.train_data.shape[1] == c * (3 if noise == "bernoulli" else 2)  # clean, capture (, its mask)
    assert ((capture - clean).abs() > 1e-6).float().mean() > 0.2  # the capture is noisy
    values = capture.flatten().unique()
    for inp, target, mask in pairs:
        assert torch.isin(inp, values).all()  # every input pixel is a pixel of the one capture (Gaussian: of no other)
        assert torch.isin(target, clean.flatten().unique()).all() and mask is None
    other, _ = _training_pairs(tmp_path / "seed1", 1, **base, train_captures=1, seed=1)
    assert torch.equal(other.train_data, one.train_data)  # the study's data, whatever the trial's seed
    _, fresh = _training_pairs(tmp_path / "fresh", 4, **base)
    assert noise != "gaussian" or all(torch.isin(inp, values).float().mean() < 0.9 for inp, _, _ in fresh)  # new noise every step
    two, pairs = _training_pairs(tmp_path / "two", 4, **base, train_captures=2, target="noisy")
    caps = two.train_data[:, c:3 * c]
    assert not torch.equal(caps[:, :c], caps[:, c:])  # two different captures
    for inp, target, mask in pairs:
        assert torch.isin(inp, caps.flatten().unique()).all() and torch.isin(target, caps.flatten().unique()).all()
        assert all((i != t).float().mean() > 0.2 for i, t in zip(inp, target))  # never a capture towards itself
        if noise == "bernoulli":  # the target capture's own mask: a dropped target pixel (0) never counts
            assert mask is not None and (target[mask == 0] == 0).all() and 0.6 < mask.mean() < 0.8
        else:
            assert mask is None


def test_confirm_run_scores_each_test_image_with_its_best_validation_weights(tmp_path):
    from denoise_core.results import PER_IMAGE, SOURCES, Score

    out = run_trial({**TINY, "test": True, "select": "psnr", "test_images": 24}, lambda m: None, workdir=tmp_path)
    final, per_image = out["metrics"], out[PER_IMAGE]
    best, inp = Score("psnr", "test"), Score("psnr", "test", input=True)
    assert len(per_image[best.key]) == len(per_image[inp.key]) == 24  # one value per held-out image
    assert final[best.key] == pytest.approx(sum(per_image[best.key]) / 24, abs=1e-4)
    assert Score("psnr", "test", weights="final").key in final and PER_IMAGE not in final
    # the test images are crops of the held-out photographs, each named: the statistics pair photographs
    assert len(per_image[SOURCES]) == 24 and len(set(per_image[SOURCES])) == 8
    # the input's score is of the same images, noisy: after 60 steps most test images improve
    assert sum(m > i for m, i in zip(per_image[best.key], per_image[inp.key])) >= 20


def test_trial_is_deterministic_on_cpu(tmp_path):
    a = run_trial({**TINY, "steps": 20, "eval_every": 20}, lambda m: None, workdir=tmp_path / "a")
    b = run_trial({**TINY, "steps": 20, "eval_every": 20}, lambda m: None, workdir=tmp_path / "b")
    assert a["metrics"]["psnr"] == b["metrics"]["psnr"] and a["metrics"]["train_loss"] == b["metrics"]["train_loss"]


def test_resume_from_checkpoint_matches_uninterrupted(tmp_path):
    cfg = {**TINY, "steps": 40, "eval_every": 10, "checkpoint_every": 2}
    full = run_trial(cfg, lambda m: None, workdir=tmp_path / "full")
    ckpts = []

    def keep(m):  # a checkpoint directory lives only during the report call: persist it, as Tune does
        if m.get("checkpoint"):
            ckpts.append(shutil.copytree(m["checkpoint"], tmp_path / "kept" / str(m["step"])))

    run_trial({**cfg}, keep, workdir=tmp_path / "part")
    assert [p.name for p in ckpts] == ["20", "40"]
    assert sorted(p.name for p in (tmp_path / "part").iterdir()) == ["state-0000040"]  # superseded ones are removed
    reports = []
    resumed = run_trial(cfg, reports.append, workdir=tmp_path / "resumed", resume_from=ckpts[0])  # from step 20
    assert len(resumed["history"]) == 4
    # the first report after a resume carries the evaluations before it (a killed driver's record may lack them)
    assert [h["step"] for h in reports[0]["restored_history"]] == [10, 20] and reports[0]["step"] == 30
    assert all("restored_history" not in r for r in reports[1:])
    assert resumed["metrics"]["psnr"] == pytest.approx(full["metrics"]["psnr"], abs=1e-4)


class _Payload:
    """What a tampered state.pt would carry: unpickling it calls a function of the attacker's choice."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.mkdir, (str(self.marker),)


def test_a_tampered_state_is_refused_and_a_clean_one_resumes(tmp_path):
    """A resumed trial loads its state with weights_only=True: a state.pt that holds a pickled callable (anyone who
    can write a study's folder on shared storage could plant one) is refused before the callable runs."""
    import pickle

    import torch

    cfg = {**TINY, "steps": 20, "eval_every": 10, "checkpoint_every": 1}
    ckpts = []
    run_trial(cfg, lambda m: m.get("checkpoint") and ckpts.append(
        shutil.copytree(m["checkpoint"], tmp_path / "kept" / str(m["step"]))), workdir=tmp_path / "run")
    clean = ckpts[0]
    resumed = run_trial(cfg, lambda m: None, workdir=tmp_path / "resumed", resume_from=clean)
    assert [h["step"] for h in resumed["history"]] == [10, 20]

    tampered = tmp_path / "tampered"
    shutil.copytree(clean, tampered)
    state = torch.load(tampered / "state.pt", weights_only=True)
    state["history"] = [_Payload(tmp_path / "pwned")]
    torch.save(state, tampered / "state.pt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        run_trial(cfg, lambda m: None, workdir=tmp_path / "attacked", resume_from=tampered)
    assert not (tmp_path / "pwned").exists()  # the callable never ran


@pytest.mark.parametrize("bad,needle", [({"optimizer": "sgd"}, "optimizer: unknown key"),
                                        ({"loss": "huber"}, "unknown loss 'huber'"),
                                        ({"lr": -1}, "lr: "),
                                        ({"noise_params": {"sigma": -5}}, "sigma=-5"),
                                        ({"dataset": "imagenet"}, "unknown dataset 'imagenet'"),
                                        ({"target": "noisy", "train_captures": 1}, "leaves target 'noisy' short"),
                                        ({"train_captures": 17}, "from 1 to 16, got 17")])
def test_bad_config_names_the_key(bad, needle):
    with pytest.raises(ValueError, match=needle):
        run_trial({**TINY, **bad}, lambda m: None)


def test_non_finite_loss_is_recorded_as_diverged(tmp_path):
    reports = []
    # sigma near float32's limit: the squared residual overflows to inf
    out = run_trial({**TINY, "noise_params": {"sigma": 1e38}}, reports.append, workdir=tmp_path)
    assert out["diverged"] and len(reports) == 1  # stopped at the first evaluation, not trained to the end
    last = reports[-1]
    assert last["diverged"] == 1.0 and last["diverged_step"] == 30 and "monitored loss is" in last["diverged_reason"]
    assert "checkpoint" in last  # its final state is kept, for the record


def test_learning_rate_that_surely_diverges_is_caught(tmp_path):
    """lr 0.9 with Adam on a U-Net: the loss blows up by orders of magnitude while staying finite (4e18 in
    the first window here); the same config at a sane lr trains to the end without diverging."""
    cfg = {**TINY, "steps": 120, "eval_every": 20, "rampdown": 0.0}
    bad = run_trial({**cfg, "lr": 0.9}, lambda m: None, workdir=tmp_path / "bad")
    assert bad["diverged"] and len(bad["history"]) == 1, bad["history"]
    assert bad["metrics"]["monitor_loss"] > 1e3 and bad["metrics"]["diverged_step"] == 20
    ok = run_trial(cfg, lambda m: None, workdir=tmp_path / "ok")
    assert not ok["diverged"] and len(ok["history"]) == 6


def test_lr_rampdown():
    assert lr_factor(0, 100, 0.3) == 1.0 and lr_factor(69, 100, 0.3) == 1.0
    assert lr_factor(85, 100, 0.3) == pytest.approx(0.5)
    assert lr_factor(100, 100, 0.3) == pytest.approx(0.0)
