"""`denoise-study trial CONFIG.json`: one trial of either task, without Ray."""
import json
from pathlib import Path

import pytest

from tests.conftest import cli

CONFIGS = {
    "denoise": {"model": "simple_unet", "model_params": {"width": 8}, "dataset": "faces", "steps": 4, "eval_every": 2,
                "crop": 16, "batch_size": 4, "val_images": 4, "threads": 1},
    "ddpm": {"task": "ddpm", "timesteps": 50, "steps": 4, "eval_every": 2, "crop": 16, "batch_size": 4, "val_images": 4,
             "n_samples": 4, "vlb_timesteps": 5, "sampler": "ddim", "sample_steps": 5, "threads": 1},
}


@pytest.mark.parametrize("task,images", [("denoise", ["image_clean", "image_noisy", "image_output"]),
                                         ("ddpm", ["samples", "progress"])])
def test_trial_command_prints_each_evaluation_and_its_files(tmp_path, task, images):
    (tmp_path / "cfg.json").write_text(json.dumps(CONFIGS[task]))
    code, out, err = cli("trial", str(tmp_path / "cfg.json"), "--workdir", str(tmp_path / "w"))
    assert code == 0, out + err
    lines = out.strip().splitlines()
    reports = [json.loads(ln) for ln in lines if ln.startswith("{")]
    assert [r["step"] for r in reports] == [2, 4]
    assert ("bits_per_dim" in reports[-1]) == (task == "ddpm")
    files = dict(ln.split(": ", 1) for ln in lines if not ln.startswith("{"))
    assert set(files) == {"checkpoint", *images}
    assert all(Path(p).is_file() for p in files.values())
