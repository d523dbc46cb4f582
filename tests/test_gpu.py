"""On CUDA: every catalog study's first cell at every budget trains a few steps and evaluates once, a
T=1000 DDPM cell evaluates its bound, runs are deterministic, and a short study packs trials at a
quarter GPU through Ray. Skipped without CUDA (CI has none); `make gpu-check` runs them on a GPU."""
from __future__ import annotations

import pytest
import torch

from tests.conftest import DATA, cli

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")]


def first_cells():
    from studies.spec import BUDGETS, catalog_names, load_spec

    for name in catalog_names():
        spec = load_spec(name, check=False)
        for budget in BUDGETS:
            yield pytest.param(spec, budget, id=f"{name}-{budget}")


def _short(cfg: dict, spec, budget: str) -> dict:
    from studies.spec import set_path

    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    for key, p in spec.tune_for(budget).items():
        set_path(cfg, key, p.middle())
    return {**cfg, "device": "cuda", "steps": 3, "eval_every": 3, "checkpoint_every": 0}


@pytest.mark.parametrize("spec,budget", list(first_cells()))
def test_first_cell_of_every_study_runs_on_cuda(spec, budget, tmp_path):
    from denoise_core.tasks import run_trial

    cfg = _short(spec.cell_config(spec.cells()[0], budget), spec, budget)
    out = run_trial(cfg, lambda m: None, workdir=tmp_path)
    assert out["metrics"]["step"] == 3 and spec.metric in out["metrics"], out["metrics"]


def test_ddpm_with_1000_timesteps_evaluates_its_bound_on_cuda(tmp_path):
    """The crash seen on an H100: a CUDA generator used to draw the bound's timesteps on the CPU."""
    from denoise_core.tasks import run_trial

    cfg = {"task": "ddpm", "timesteps": 1000, "schedule": "cosine", "device": "cuda", "steps": 3, "eval_every": 3,
           "vlb_timesteps": 20, "val_images": 8, "crop": 16, "batch_size": 8, "n_samples": 4, "sampler": "ddim",
           "sample_steps": 5, "checkpoint_every": 0}
    out = run_trial(cfg, lambda m: None, workdir=tmp_path)
    assert out["metrics"]["bits_per_dim"] > 0


def test_same_seed_same_numbers_on_cuda(tmp_path):
    from denoise_core.tasks import run_trial

    cfg = {"model": "simple_unet", "model_params": {"width": 16}, "device": "cuda", "steps": 20, "eval_every": 20,
           "crop": 32, "batch_size": 8, "val_images": 8, "checkpoint_every": 0}
    a = run_trial(cfg, lambda m: None, workdir=tmp_path / "a")["metrics"]
    b = run_trial(cfg, lambda m: None, workdir=tmp_path / "b")["metrics"]
    assert (a["psnr"], a["train_loss"]) == (b["psnr"], b["train_loss"])


@pytest.mark.parametrize("target", ["zs_n2n", "noise2fast"])
def test_a_zero_shot_cell_fits_each_image_on_cuda_with_the_same_numbers_twice(target, tmp_path):
    from denoise_core.tasks import run_trial

    cfg = {"target": target, "fit_steps": 50, "device": "cuda", "crop": 32, "val_images": 4, "test_images": 2,
           "test": True, "select": "psnr", "checkpoint_every": 0}
    a = run_trial(cfg, lambda m: None, workdir=tmp_path / "a")["metrics"]
    b = run_trial(cfg, lambda m: None, workdir=tmp_path / "b")["metrics"]
    assert a["psnr"] > a["input_psnr"] and (a["psnr"], a["test_psnr"]) == (b["psnr"], b["test_psnr"])


def test_text_noise_on_cuda_keeps_its_coverage():
    from denoise_core.noise import TEXT_TOLERANCE, build_noise

    x = torch.zeros(64, 1, 64, 64, device="cuda")
    noisy = build_noise("text", coverage=0.3)(x, generator=torch.Generator("cuda").manual_seed(0)).noisy
    covered = (noisy != 0).float().flatten(1).mean(1)
    # a glyph pixel painted in a colour that rounds to 0 is rare but possible: allow a little below
    assert (covered > 0.3 - 0.01).all() and (covered < 0.3 + TEXT_TOLERANCE).all(), covered


@pytest.mark.ray
def test_short_study_packs_quarter_gpus_through_ray(tmp_path):
    import ray

    ray.shutdown()
    code, out, err = cli("run", str(DATA / "tiny.yaml"), "--budget", "smoke", "--storage", str(tmp_path),
                         "--gpus-per-trial", "0.25", "--quiet")
    ray.shutdown()
    assert code == 0, out + err
    import pandas as pd

    df = pd.read_parquet(tmp_path / "tiny" / "trials.parquet")
    assert len(df) == 8 and set(df.status) <= {"completed", "stopped"} and (df.gpus == 0.25).all()
