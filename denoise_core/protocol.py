"""The literature's test protocol (DnCNN, FFDNet, KAIR's test scripts), in one place: networks, classical
baselines and `denoise-study evaluate` all score through it, so their numbers sit beside published rows.

    noisy = noisy_images(noise, clean, seed)             # one fixed draw per image, not clipped
    out = apply_whole(model_fn, noisy, multiple=4)       # whole images, padded to the model's multiple
    scores = score_images(out, clean)                    # per-image PSNR / SSIM on 8-bit outputs

1. The clean image is the 8-bit file read as float in [0, 1].
2. Noise is drawn once per image from a generator seeded by (seed + image index), on the CPU, so every
   method, device and run sees the same noisy inputs; Gaussian noise is not clipped unless the noise
   model says `clip`.
3. The denoiser sees the whole image: reflect-padded at the bottom and right to its size multiple,
   images of one shape batched together, the output cropped back.
4. The output is clipped to [0, 1] and rounded to 8 bits; PSNR and SSIM are taken per image against the
   clean image and averaged over the set.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

PROTOCOL = ("whole images, noise drawn once per image from a fixed seed and not clipped, outputs rounded to "
            "8 bits, PSNR and SSIM per image averaged over the set (the DnCNN / FFDNet protocol)")


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Clip to [0, 1] and round to 8 bits (step 4): what a saved PNG holds."""
    return (x.clamp(0, 1) * 255).round() / 255


def noisy_images(noise, clean: list[torch.Tensor], seed: int) -> list[torch.Tensor]:
    """Each clean [C, H, W] image corrupted by `noise` with a CPU generator at seed + its index (step 2)."""
    out = []
    for i, img in enumerate(clean):
        g = torch.Generator().manual_seed(seed + i)
        out.append(noise(img[None].cpu(), generator=g).noisy[0])
    return out


def test_inputs(noise, images: list[torch.Tensor], seed: int, channels: int) -> tuple[list, list]:
    """The (clean, noisy) test images: `images` and their noise drawn by `noisy_images`, or, for real noise
    (`noise.captured`, a pairs:PATH set), each scene's clean view and its first capture."""
    if noise.captured:
        from denoise_core.data import views

        pairs = [views(img, channels) for img in images]
        return [c for c, _ in pairs], [k[0] for _, k in pairs]
    return images, noisy_images(noise, images, seed)


def inputs_per_noise(inputs, noises: dict, images, seed: int, channels: int) -> tuple:
    """(clean, {suffix: noisy}) of a set under each evaluation noise, `inputs` being `test_inputs` (whole images)
    or `denoise_core.trial.fixed_inputs` (a tensor of crops); the clean images are those of the main noise ('')."""
    pairs = {sfx: inputs(noise, images, seed, channels) for sfx, noise in noises.items()}
    clean = pairs[""][0]
    check_clean(clean)
    return clean, {sfx: noisy for sfx, (_, noisy) in pairs.items()}


def check_clean(clean) -> None:
    """Every score is taken against these images: one that holds NaN (a real-noise scene with no clean.png) or
    infinity would make every score of the set NaN, so it is refused here, once per set, not scored.

    >>> check_clean([torch.zeros(1, 4, 4), torch.full((1, 4, 4), float("nan"))])
    Traceback (most recent call last):
    ...
    ValueError: clean image 2 of 2 holds NaN or infinite values (a scene with no clean image?): nothing can be scored against it
    """
    finite = [bool(torch.isfinite(im).all()) for im in clean]  # a list of [C, H, W] images, or a stack [N, C, H, W]
    if not all(finite):
        raise ValueError(f"clean image {finite.index(False) + 1} of {len(finite)} holds NaN or infinite values (a scene "
                         f"with no clean image?): nothing can be scored against it")


def pad_to_multiple(x: torch.Tensor, m: int) -> tuple[torch.Tensor, str | None]:
    """[B, C, H, W] padded at the bottom and right to a multiple of `m`: reflected where the image is large
    enough, else its edge repeated (a tiny image). Returns the batch and how it was padded (None: not)."""
    h, w = x.shape[-2:]
    ph, pw = -h % m, -w % m
    if not (ph or pw):
        return x, None
    how = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=how), how


def by_shape(images: list[torch.Tensor]) -> dict[tuple, list[int]]:
    """Indices of the images, grouped by shape (step 3: images of one shape are batched together)."""
    groups: dict[tuple, list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault(tuple(img.shape), []).append(i)
    return groups


def apply_whole(fn: Callable[[torch.Tensor], torch.Tensor], noisy: list[torch.Tensor], multiple: int = 1,
                batch: int = 8, device: torch.device | str = "cpu",
                progress: Callable[[int, int], None] | None = None) -> list[torch.Tensor]:
    """`fn` (a batch [B, C, H, W] -> the same shape) on whole images (step 3), returned clipped and rounded
    to 8 bits on the CPU (step 4), in the input's order; `progress(done, total)` after each batch."""
    out: list[torch.Tensor | None] = [None] * len(noisy)
    done = 0
    for shape, idx in by_shape(noisy).items():
        for k in range(0, len(idx), batch):
            part = idx[k:k + batch]
            x, _ = pad_to_multiple(torch.stack([noisy[i] for i in part]).to(device), multiple)
            y = fn(x)[..., :shape[-2], :shape[-1]]
            for i, yi in zip(part, quantize(torch.nan_to_num(y.float(), nan=0.0)).cpu()):
                out[i] = yi
            done += len(part)
            if progress is not None:
                progress(done, len(noisy))
    return out


def score_images(outputs: list[torch.Tensor], clean: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-image PSNR and SSIM [N] (step 4); images of different sizes are scored one by one."""
    from denoise_core.metrics import psnr, ssim

    p = torch.stack([psnr(o[None], c[None].to(o.device))[0] for o, c in zip(outputs, clean)])
    s = torch.stack([ssim(o[None], c[None].to(o.device))[0] for o, c in zip(outputs, clean)])
    return {"psnr": p, "ssim": s}


def score_input(noisy: list[torch.Tensor], clean: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """The noisy inputs themselves, saved as 8-bit images and scored: the table's "noisy" row."""
    return score_images([quantize(n) for n in noisy], clean)
