"""Images/s of each noise generator on 64x64 RGB batches, next to the tutorial's per-pixel loop.

    python benchmarks/noise_throughput.py [--device cpu|cuda]

Prints one line per generator and the ratio to a Python-loop salt-and-pepper, all measured in this run.
"""
import argparse
import random
import time

import torch

from denoise_core.noise import NOISES, Corruption, TextOverlay, _glyph_atlas, build_noise


class PerRoundText(TextOverlay):
    """The text overlay as it was before issue 12: one round at a time, a host sync per round (the
    `any()` test and boolean indexing). Kept here to measure today's chunked version against it."""

    def corrupt(self, clean, level, generator):
        b, c, h, w = clean.shape
        dev = clean.device
        atlas = _glyph_atlas(self.font_size).to(dev)  # [N, gh, gw]
        n_glyph, gh, gw = atlas.shape
        target = level.view(b)
        covered = torch.zeros(b, h, w, dtype=torch.bool, device=dev)
        colour = torch.zeros(b, c, h, w, dtype=clean.dtype, device=dev)
        ys = torch.arange(gh, device=dev).view(1, gh, 1)
        xs = torch.arange(gw, device=dev).view(1, 1, gw)
        # a string of `k` glyphs per image per round; small steps keep the overshoot small
        k = max(1, w // (2 * gw))
        for _ in range(self.max_rounds):
            frac = covered.flatten(1).float().mean(1)
            active = frac < target  # [B]
            if not bool(active.any()):
                break
            idx = torch.randint(0, n_glyph, (b, k), generator=generator, device=dev)
            y0 = torch.randint(-gh // 2, h, (b, 1), generator=generator, device=dev)
            x0 = torch.randint(-gw, w, (b, 1), generator=generator, device=dev)
            x0 = x0 + torch.arange(k, device=dev).view(1, k) * gw  # glyphs side by side: a string
            rgb = torch.rand((b, c), generator=generator, device=dev, dtype=clean.dtype)
            glyph = atlas[idx] & active.view(b, 1, 1, 1)  # [B, k, gh, gw]
            yy = (y0.view(b, 1, 1, 1) + ys).expand(b, k, gh, gw)
            xx = (x0.view(b, k, 1, 1) + xs).expand(b, k, gh, gw)
            inside = glyph & (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            bi = torch.arange(b, device=dev).view(b, 1, 1, 1).expand(b, k, gh, gw)[inside]
            flat = bi * h * w + yy[inside] * w + xx[inside]
            covered.view(-1)[flat] = True
            # colour every pixel of this round's string with the image's colour
            painted = torch.zeros(b * h * w, dtype=torch.bool, device=dev)
            painted[flat] = True
            painted = painted.view(b, 1, h, w)
            colour = torch.where(painted, rgb.view(b, c, 1, 1), colour)
        noisy = torch.where(covered.unsqueeze(1), colour, clean)
        return Corruption(noisy)




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
    rates = {}
    for name in NOISES.names:
        noise = build_noise(name)
        rates[name] = r = rate(lambda: (noise(x, generator=g), sync()), a.batch)
        print(f"{name:40s} {r:12.1f} images/s   {r / loop:10.0f}x the loop")
    old = PerRoundText(coverage=0.25)
    r = rate(lambda: (old(x, generator=g), sync()), a.batch)
    print(f"{'text, per-round (before issue 12)':40s} {r:12.1f} images/s   text now {rates['text'] / r:.1f}x this")


if __name__ == "__main__":
    main()
