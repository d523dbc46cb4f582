"""Trials per device-hour of a study's budget, estimated from a few timed steps of one trial.

    python benchmarks/trial_cost.py [--study n2n_loss] [--budgets quick full] [--device cpu|cuda] [--steps 10]

For each budget: builds the first cell's trial at that budget's size (tuned values at their
middle), times `--steps` training steps and one evaluation on this device, and extrapolates to
the budget's steps and evaluations. Trials per device-hour = 3600 / trial seconds x trials per
device (1 / --gpus-per-trial on a GPU; one trial per `cpus_per_trial` cores on a CPU, shown per
core-hour). An estimate: it leaves out start-up, checkpoints and contention between packed
trials; `study_efficiency.py` measures a finished study's real number.
"""
import argparse
import math
import tempfile
from pathlib import Path

import torch

from _timing import rate
from denoise_core.tasks import build_trial
from studies.packing import DEFAULT_GPU_SHARE
from studies.spec import load_spec, set_path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--study", default="n2n_loss")
    ap.add_argument("--budgets", nargs="+", default=["quick", "full"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=10)
    a = ap.parse_args()
    spec = load_spec(a.study)
    for budget in a.budgets:
        b = spec.budgets[budget]
        cfg = spec.cell_config(spec.cells()[0], budget)
        for name, p in spec.tune.items():
            set_path(cfg, name, p.middle())
        cfg.update(device=a.device, checkpoint_every=0)
        trial = build_trial(cfg, Path(tempfile.mkdtemp(prefix="bench-cost-")))
        step = iter(range(10**9))
        step_s = 1 / rate(lambda: trial.train_step(next(step)), a.steps, 1, trial.device)
        eval_s = 1 / rate(trial.evaluate, 1, 1, trial.device, warmup=0)
        steps = trial.cfg.steps
        trial_s = steps * step_s + math.ceil(steps / trial.cfg.eval_every) * eval_s
        if trial.device.type == "cuda":
            share = b.gpus_per_trial or DEFAULT_GPU_SHARE
            per_hour, unit = 3600 / trial_s / share, f"GPU-hour at --gpus-per-trial {share:g}"
        else:
            per_hour, unit = 3600 / trial_s / b.cpus_per_trial, "CPU-core-hour"
        print(f"{a.study} {budget} on {trial.device}: {cfg['model']}, crop {trial.cfg.crop}, batch {trial.cfg.batch_size}, "
              f"{steps} steps: {step_s * 1000:.1f} ms/step, {eval_s:.2f} s/eval -> {trial_s / 60:.1f} min per trial, "
              f"about {per_hour:.3g} trials per {unit}", flush=True)


if __name__ == "__main__":
    main()
