"""`make gpu-check`: what a session lent a GPU measures first, in order of value, in under 8 minutes on one H100.

    python benchmarks/gpu_check.py [--out DIR] [--data-root DIR] [--dry-run]

A session gets about 15 minutes of device time in all, start-up included, so every stage has a time limit
and every result is appended to DIR/results.md (and printed) the moment it is measured: a run cut off
keeps what it finished. The stages:

1. the device (name and memory);
2. the `gpu` tests (`pytest -m gpu`), their counts;
3. each catalog study's `full` (paper) budget: training steps per second of its first cell's trial (tuned
   values at their middle) over a few seconds each, about a minute in all, and the sizing that implies:
   minutes per trial, GPU-hours for the study at its GPU share, and the steps that would fit the study
   into one hour on one GPU (training steps only; evaluations come on top);
4. one quick study's wall time (`denoise-study run n2n_loss --budget quick --fresh`).

Without --data-root, a budget's data is replaced by the bundled `natural` images: steps per second depend on
the model, crop and batch, not on which images. `--dry-run` runs the same stages on a CPU at tiny sizes
(crop 32, batch 2, one second per budget, the smoke budget): the test suite runs it, so the script cannot rot
between the sessions that have a GPU.
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LIMITS_S = {"tests": 170, "steps": 90, "study": 170}  # with start-up, under 8 minutes on one H100


class Results:
    """DIR/results.md, one line at a time, flushed as it is written."""

    def __init__(self, out: Path):
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "results.md"
        self.path.write_text(f"# gpu-check {time.strftime('%Y-%m-%d %H:%M:%S')}\n")

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        with self.path.open("a") as f:
            f.write(line + "\n")


def device(say: Results, dry: bool) -> str:
    import torch

    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        say(f"device: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}")
        return "cuda"
    if not dry:
        raise SystemExit("gpu-check: no CUDA device here (--dry-run runs the stages on a CPU at tiny sizes)")
    say(f"device: cpu (dry run), torch {torch.__version__}")
    return "cpu"


def gpu_tests(say: Results, out: Path, limit: float) -> None:
    """The `gpu` tests, their one summary line (they skip without CUDA)."""
    log = out / "gpu-tests.log"
    started = time.time()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                               "tests/test_gpu.py"], cwd=ROOT, capture_output=True, text=True, timeout=limit)
        log.write_text(proc.stdout + proc.stderr)
        summary = next((ln for ln in reversed(proc.stdout.splitlines()) if " in " in ln and ("passed" in ln or
                        "skipped" in ln or "failed" in ln)), "no summary line")
        say(f"gpu tests: {summary.strip('= ')} (exit {proc.returncode}, {time.time() - started:.0f} s; {log.name})")
    except subprocess.TimeoutExpired as e:
        log.write_text((e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""))
        say(f"gpu tests: cut off after {limit:.0f} s ({log.name} has what ran)")


def paper_steps(say: Results, dev: str, data_root: str | None, total_s: float, dry: bool) -> None:
    """Steps per second of each catalog study's `full` budget (`total_s` shared among them), and the sizing."""
    import torch

    from denoise_core.tasks import build_trial
    from studies.packing import DEFAULT_GPU_SHARE
    from studies.spec import catalog_names, load_spec, set_path

    names = catalog_names()
    seconds = total_s / len(names)
    for name in names:
        spec = load_spec(name, check=False)
        b = spec.budgets["full"]
        cfg = spec.cell_config(spec.cells()[0], "full", {"data_root": data_root} if data_root else None)
        for key, p in spec.tune_for("full").items():
            set_path(cfg, key, p.middle())
        if not data_root:
            cfg["dataset"] = "natural"  # bundled: the step's cost is the model, crop and batch, not the images
        cfg.update(device=dev, checkpoint_every=0, val_images=2, test_images=2)
        if dry:
            cfg.update(crop=32, eval_crop=32, batch_size=2)
        try:
            trial = build_trial(cfg, Path(tempfile.mkdtemp(prefix="gpu-check-")))
            sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
            for step in range(3):  # warm-up: kernels chosen, memory allocated
                trial.train_step(step)
            sync()
            n, started = 0, time.perf_counter()
            while n < 2 or time.perf_counter() - started < seconds:
                for _ in range(5 if dev == "cuda" else 1):
                    trial.train_step(3 + n)
                    n += 1
                sync()
            rate = n / (time.perf_counter() - started)
        except Exception as e:  # noqa: BLE001 - one budget that cannot be built must not lose the others
            say(f"{name} full: not measured: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
            continue
        steps, share = trial.cfg.steps, b.gpus_per_trial or DEFAULT_GPU_SHARE
        trials = len(spec.cells()) * (b.trials_per_cell + spec.seeds_for("full"))
        trial_min = steps / rate / 60
        gpu_h = trials * trial_min / 60 * share
        fit = steps / max(gpu_h, 1e-9)  # steps per trial that make the study one GPU-hour
        say(f"{name} full: {cfg['model']}, crop {trial.cfg.crop}, batch {trial.cfg.batch_size}: **{_sig3(rate)} steps/s** "
            f"-> {steps:,} steps = {trial_min:.1f} min a trial; {trials} trials at {share:g} GPU = {gpu_h:.2f} "
            f"GPU-hours; one hour on one GPU fits {math.floor(fit):,} steps a trial")


def _sig3(x: float) -> str:
    """Three significant figures, never in e-notation: the sizing after it must follow from the printed rate.

    >>> _sig3(5.637), _sig3(1234.5), _sig3(0.2513)
    ('5.64', '1234', '0.251')
    """
    return f"{x:.{max(0, 2 - math.floor(math.log10(x)))}f}" if x > 0 else "0"


def quick_study(say: Results, out: Path, limit: float, dry: bool) -> None:
    budget = "smoke" if dry else "quick"
    cmd = [sys.executable, "-m", "denoise_study.cli", "run", "n2n_loss", "--budget", budget, "--fresh", "--quiet",
           "--storage", str(out / "studies")]
    started = time.time()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit)
        (out / "study.log").write_text(proc.stdout + proc.stderr)
        say(f"n2n_loss {budget}: **{time.time() - started:.0f} s wall** (exit {proc.returncode}; study.log)")
    except subprocess.TimeoutExpired:
        say(f"n2n_loss {budget}: cut off after {limit:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("GPU_CHECK_DIR", "/tmp/gpu-check")))
    ap.add_argument("--data-root", default=None, help="the standard sets (Train400, Set12 ...); default: bundled data")
    ap.add_argument("--dry-run", action="store_true", help="the same stages on a CPU at tiny sizes (the test suite)")
    a = ap.parse_args()
    say = Results(a.out)
    started = time.time()
    dev = device(say, a.dry_run)
    gpu_tests(say, a.out, LIMITS_S["tests"])
    # timed steps take about two thirds of the stage; building each trial (its data) the rest
    paper_steps(say, dev, a.data_root, 6.0 if a.dry_run else LIMITS_S["steps"] / 1.5, a.dry_run)
    quick_study(say, a.out, LIMITS_S["study"], a.dry_run)
    say(f"gpu-check done in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
