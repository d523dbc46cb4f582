"""Does torch.compile pay off for a short trial? Compile time vs the steady-state speed-up.

    python benchmarks/compile_benefit.py [--device cpu|cuda] [--model simple_unet] [--crop 32] [--steps 40]

Times the first step (which compiles) and the steady-state images/s of the same trial with
and without `compile: true`, then the number of steps after which compiling has paid for itself.
"""
import argparse
import math
import tempfile
import time
from pathlib import Path

import torch

from _timing import rate
from denoise_core.tasks import build_trial


def measure(cfg: dict, steps: int) -> tuple[float, float]:
    trial = build_trial(cfg, Path(tempfile.mkdtemp(prefix="bench-compile-")))
    sync = torch.cuda.synchronize if trial.device.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    trial.train_step(0)
    sync()
    first = time.perf_counter() - t0
    step = iter(range(1, 10**9))
    return first, rate(lambda: trial.train_step(next(step)), steps, cfg["batch_size"], trial.device, warmup=2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default="simple_unet")
    ap.add_argument("--crop", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=40)
    a = ap.parse_args()
    cfg = {"model": a.model, "crop": a.crop, "batch_size": a.batch, "steps": 10**6, "device": a.device,
           "val_images": 4, "checkpoint_every": 0}
    eager_first, eager = measure(cfg, a.steps)
    try:
        comp_first, comp = measure({**cfg, "compile": True}, a.steps)
    except Exception as e:  # noqa: BLE001 - no compiler toolchain here: say so
        print(f"torch.compile failed on {a.device}: {str(e).splitlines()[0][:200]}")
        return
    per_step_saving = a.batch / eager - a.batch / comp
    extra = comp_first - eager_first
    print(f"device {a.device}, {a.model}, crop {a.crop}, batch {a.batch}")
    print(f"eager      first step {eager_first:7.2f} s   steady {eager:9.1f} images/s")
    print(f"compiled   first step {comp_first:7.2f} s   steady {comp:9.1f} images/s   ratio {comp / eager:.2f}x")
    if per_step_saving > 0:
        print(f"compiling pays off after {math.ceil(extra / per_step_saving)} steps")
    else:
        print("compiling never pays off here: compiled steps are not faster")


if __name__ == "__main__":
    main()
