"""GPU busy fraction during a study: packed trials (--gpus-per-trial 0.25) vs one trial per GPU.

    python benchmarks/gpu_busy.py [--study n2n_loss] [--budget quick] [--shares 1 0.25]

Runs the study once per share (fresh, in a temporary storage) while sampling nvidia-smi's
utilization.gpu (the fraction of time a kernel was running) every 0.5 s, and prints the mean
busy fraction and the wall time of each, measured in this run. Needs a CUDA GPU and nvidia-smi.
"""
import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def sample_busy(stop: threading.Event, out: list) -> None:
    while not stop.is_set():
        r = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                           capture_output=True, text=True)
        if r.returncode == 0:
            vals = [float(v) for v in r.stdout.split()]
            out.append(sum(vals) / len(vals) / 100)
        stop.wait(0.5)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--study", default="n2n_loss")
    ap.add_argument("--budget", default="quick")
    ap.add_argument("--shares", type=float, nargs="+", default=[1.0, 0.25])
    a = ap.parse_args()
    if shutil.which("nvidia-smi") is None:
        print("no nvidia-smi on this machine: the GPU busy fraction was not measured")
        return
    exe = Path(sys.executable).parent / "denoise-study"
    results = {}
    for share in a.shares:
        storage = tempfile.mkdtemp(prefix="bench-busy-")
        samples, stop = [], threading.Event()
        th = threading.Thread(target=sample_busy, args=(stop, samples), daemon=True)
        t0 = time.time()
        th.start()
        subprocess.run([str(exe), "run", a.study, "--budget", a.budget, "--storage", storage,
                        "--gpus-per-trial", str(share), "--quiet"], check=True, stdout=subprocess.DEVNULL)
        stop.set()
        th.join()
        results[share] = (sum(samples) / max(len(samples), 1), time.time() - t0)
        shutil.rmtree(storage, ignore_errors=True)
        print(f"--gpus-per-trial {share:g}: GPU busy {results[share][0]:.1%}, wall {results[share][1]:.0f} s", flush=True)
    if 1.0 in results and len(results) > 1:
        for share, (busy, wall) in results.items():
            if share != 1.0:
                print(f"packed {share:g} vs one per GPU: busy {busy / results[1.0][0]:.2f}x, "
                      f"wall time {results[1.0][1] / wall:.2f}x faster")


if __name__ == "__main__":
    main()
