"""DDPM sampling images/s: ancestral (all T steps) vs DDIM (50 steps), same model, same batch.

    python benchmarks/sampling_throughput.py [--device cpu|cuda] [--T 1000] [--batch 16] [--size 16] [--width 16]

Both samplers run the same (untrained) ddpm_unet; speed does not depend on the weights.
"""
import argparse

import torch

from _timing import rate
from denoise_core.diffusion import GaussianDiffusion, build_schedule
from denoise_core.models import build_model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--T", type=int, default=1000)
    ap.add_argument("--ddim-steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--width", type=int, default=16)
    a = ap.parse_args()
    dev = torch.device(a.device)
    model = build_model("ddpm_unet", 1, width=a.width, mults=[1, 2]).to(dev).eval()
    d = GaussianDiffusion(build_schedule("linear", a.T), "eps")
    shape = (a.batch, 1, a.size, a.size)
    g = torch.Generator(device=dev).manual_seed(0)
    anc = rate(lambda: d.sample(model, shape, generator=g, device=dev), 1, a.batch, dev, warmup=0)
    ddim = rate(lambda: d.sample(model, shape, generator=g, device=dev, method="ddim", steps=a.ddim_steps),
                3, a.batch, dev)
    print(f"device {dev}, ddpm_unet width {a.width}, {a.size}x{a.size}, batch {a.batch}, T={a.T}")
    print(f"ancestral ({a.T} steps)   {anc:10.2f} images/s")
    print(f"DDIM ({a.ddim_steps} steps)        {ddim:10.2f} images/s")
    print(f"ratio                    {ddim / anc:10.1f}x (the step ratio is {a.T / a.ddim_steps:.0f}x)")


if __name__ == "__main__":
    main()
