"""Images/s of each noise generator on 64x64 RGB batches, next to the tutorial's per-pixel loop.

    python benchmarks/noise_throughput.py [--device cpu|cuda]

Prints one line per generator and the ratio to a Python-loop salt-and-pepper, all measured in this run.
"""
import argparse
import random
import time

import torch

from denoise_core.noise import NOISES, build_noise


def tutorial_salt_pepper(img, p=0.1):
    """How many tutorials write it: a Python loop over every pixel."""
    out = img.clone()
    c, h, w = out.shape
    for ch in range(c):
        for y in range(h):
            for x in range(w):
                r = random.random()
                if r < p / 2:
                    out[ch, y, x] = 0.0
                elif r < p:
                    out[ch, y, x] = 1.0
    return out


def rate(fn, n_images, min_time=1.0):
    fn()  # warm-up
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_time:
        fn()
        done += n_images
    return done / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=256)
    a = ap.parse_args()
    dev = torch.device(a.device)
    x = torch.rand(a.batch, 3, 64, 64, device=dev)
    g = torch.Generator(device=dev).manual_seed(0)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    loop = rate(lambda: tutorial_salt_pepper(x[0].cpu()), 1, min_time=2.0)
    print(f"device {dev}, batch {a.batch} x 3 x 64 x 64, torch threads {torch.get_num_threads()}")
    print(f"{'tutorial per-pixel salt_pepper loop':40s} {loop:12.1f} images/s")
    for name in NOISES.names:
        noise = build_noise(name)
        r = rate(lambda: (noise(x, generator=g), sync()), a.batch)
        print(f"{name:40s} {r:12.1f} images/s   {r / loop:10.0f}x the loop")


if __name__ == "__main__":
    main()
