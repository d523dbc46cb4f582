"""Classical denoisers on the same images as the networks: the reference a trained model must beat.

    result = score_baselines(config)   # a denoise trial's config: its data, noise, crop and evaluation sets

Each baseline has one parameter. Like a network's hyperparameters, it is chosen on the validation
images (by mean PSNR), then the baseline is scored on the held-out test images, image by image, on
exactly the noisy inputs the trials see (`denoise_core.trial.corrupt_fixed`, same seed):

    noisy    the input itself
    bm3d     BM3D (Dabov et al. 2007; the `bm3d` package) for Gaussian-like noise; its sigma is the
             noise model's where it is Gaussian with one level, else estimated (skimage's
             `estimate_sigma`) and scaled by the chosen factor
    tv       total-variation denoising (Chambolle 2004, scikit-image), weight chosen
    nlm      non-local means (Buades et al. 2005, scikit-image, fast mode), h = factor x estimated sigma
    median   median filter (scipy), size chosen, for impulse-like noise (impulse, salt-and-pepper, text,
             dropped pixels)

BM3D is run once per set on a mosaic of the images, each reflect-padded so no block straddles two
images: one call costs about half a second whatever the image size, so crop by crop would not do.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from denoise_core.registry import Registry

GAUSSIAN_LIKE = {"gaussian", "poisson", "uniform_blend"}
IMPULSE_LIKE = {"impulse", "salt_pepper", "text", "bernoulli"}
PAD = 8  # reflect padding around each image in a BM3D mosaic


@dataclass(frozen=True)
class Baseline:
    name: str
    denoise: Callable[[list[np.ndarray], object, float | None], list[np.ndarray]]  # images [H, W, C], param, sigma
    grid: tuple  # the parameter values tried on validation
    noises: frozenset | None = None  # the noises it is meant for; None: every noise


BASELINES: Registry[Baseline] = Registry("baseline")


def _estimate_sigma(img: np.ndarray) -> float:
    from skimage.restoration import estimate_sigma

    return float(estimate_sigma(img, channel_axis=-1, average_sigmas=True))


def _noisy(images, param, sigma):
    return [im.copy() for im in images]


def _median(images, size, sigma):
    from scipy.ndimage import median_filter

    return [median_filter(im, size=(size, size, 1), mode="reflect") for im in images]


def _tv(images, weight, sigma):
    from skimage.restoration import denoise_tv_chambolle

    return [denoise_tv_chambolle(im, weight=weight, channel_axis=-1) for im in images]


def _nlm(images, factor, sigma):
    from skimage.restoration import denoise_nl_means

    out = []
    for im in images:
        s = _estimate_sigma(im)
        out.append(denoise_nl_means(im, h=factor * s, sigma=s, patch_size=5, patch_distance=6, fast_mode=True,
                                    channel_axis=-1))
    return out


def _bm3d(images, factor, sigma):
    """All images in one mosaic (each reflect-padded by PAD), one BM3D call per channel."""
    import bm3d

    h, w, c = images[0].shape
    if any(im.shape != (h, w, c) for im in images):  # different sizes: one call each
        return [_bm3d([im], factor, sigma)[0] for im in images]
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    H, W = h + 2 * PAD, w + 2 * PAD
    mosaic = np.zeros((rows * H, cols * W, c))
    for i, im in enumerate(images):
        r, q = divmod(i, cols)
        mosaic[r * H:(r + 1) * H, q * W:(q + 1) * W] = np.pad(im, ((PAD, PAD), (PAD, PAD), (0, 0)), mode="reflect")
    s = sigma if sigma is not None else float(np.median([_estimate_sigma(im) for im in images]))
    out = np.stack([bm3d.bm3d(mosaic[..., k], sigma_psd=max(factor * s, 1e-4)) for k in range(c)], -1)
    return [out[r * H + PAD:r * H + PAD + h, q * W + PAD:q * W + PAD + w]
            for r, q in (divmod(i, cols) for i in range(len(images)))]


BASELINES.add("noisy", Baseline("noisy", _noisy, (None,)))
BASELINES.add("bm3d", Baseline("bm3d", _bm3d, (0.75, 1.0, 1.33), frozenset(GAUSSIAN_LIKE)))
BASELINES.add("tv", Baseline("tv", _tv, (0.03, 0.06, 0.1, 0.16, 0.25, 0.4, 0.7, 1.2)))
BASELINES.add("nlm", Baseline("nlm", _nlm, (0.6, 0.8, 1.0, 1.3, 1.7, 2.2)))
BASELINES.add("median", Baseline("median", _median, (3, 5, 7, 9, 11), frozenset(IMPULSE_LIKE)))


def baselines_for(noise: str) -> list[Baseline]:
    return [BASELINES.get(n) for n in BASELINES.names if BASELINES.get(n).noises is None
            or noise in BASELINES.get(n).noises]


def _to_numpy(x: torch.Tensor) -> list[np.ndarray]:
    return [im for im in x.detach().cpu().double().permute(0, 2, 3, 1).numpy()]  # [H, W, C] each


def _to_torch(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().clamp(0, 1)


def _apply(b: Baseline, noisy: torch.Tensor, param, sigma: float | None) -> torch.Tensor:
    """A baseline on a batch [B, C, H, W] in [0, 1]; some denoisers drop a single channel axis: put it back."""
    images = _to_numpy(noisy.clamp(0, 1) if b.name != "noisy" else noisy)
    return _to_torch([o.reshape(i.shape) for o, i in zip(b.denoise(images, param, sigma), images)])


def _known_sigma(noise) -> float | None:
    """The Gaussian noise's standard deviation on the [0, 1] scale when it has one fixed level."""
    lo, hi = noise.level
    return lo / 255.0 if type(noise).__name__ == "Gaussian" and lo == hi else None


def score_baselines(config: dict, showcase: bool = True) -> dict:
    """Every baseline that suits the config's noise, tuned on validation and scored on test.

    Returns {"noise", "metrics": {name: {"param", "val": {metric: mean}, "test": {metric: mean},
    "test_per_image": {metric: [...]}}}, "best": name (highest validation PSNR among the real
    denoisers), "showcase": {"clean", "noisy", <best>: [C, H, W] tensors}, "showcase_psnr": {...}}.
    Metrics: psnr and ssim under the config's noise, and under each extra evaluation level with
    `psnr_levels_mean`, named as the trial names them.
    """
    from denoise_core.data import showcase_image
    from denoise_core.metrics import psnr, ssim
    from denoise_core.noise import build_noise
    from denoise_core.tasks import validate_config
    from denoise_core.trial import corrupt_fixed, eval_crops

    cfg = validate_config({**config, "test": True})
    noises = {"": build_noise(cfg.noise, **cfg.noise_params)}
    param = type(noises[""]).param
    for suffix, lvl in zip(cfg.level_suffixes(), cfg.eval_levels):
        noises[suffix] = build_noise(cfg.noise, **{**cfg.noise_params, param: lvl})
    clean = {split: eval_crops(cfg.dataset, cfg.data_root, split, cfg.channels, cfg.download, cfg.eval_size,
                               cfg.val_images if split == "val" else cfg.test_images) for split in ("val", "test")}
    noisy = {(split, sfx): corrupt_fixed(n, clean[split], cfg.val_seed) for split in clean for sfx, n in noises.items()}
    out = {"noise": cfg.noise, "metrics": {}}
    for b in baselines_for(cfg.noise):
        # the parameter: best mean validation PSNR over the evaluation noises
        def run(split, sfx, p):
            return _apply(b, noisy[split, sfx], p, _known_sigma(noises[sfx]))

        grid = (1.0,) if b.name == "bm3d" and _known_sigma(noises[""]) is not None else b.grid
        p_best = max(grid, key=lambda p: float(np.mean([psnr(run("val", s, p), clean["val"]).mean() for s in noises])))
        entry = {"param": p_best, "val": {}, "test": {}, "test_per_image": {}}
        for split in ("val", "test"):
            per = {}
            for sfx in noises:
                den = run(split, sfx, p_best)
                per[f"psnr{sfx}"], per[f"ssim{sfx}"] = psnr(den, clean[split]), ssim(den, clean[split])
            if cfg.eval_levels:
                per["psnr_levels_mean"] = torch.stack([per[f"psnr{s}"] for s in cfg.level_suffixes()]).mean(0)
            entry[split] = {k: float(v.mean()) for k, v in per.items()}
            if split == "test":
                entry["test_per_image"] = {k: [round(x, 5) for x in v.tolist()] for k, v in per.items()}
        out["metrics"][b.name] = entry
    real = [n for n in out["metrics"] if n != "noisy"]
    out["best"] = max(real, key=lambda n: out["metrics"][n]["val"]["psnr"]) if real else "noisy"
    if showcase:
        img = showcase_image(cfg.dataset, cfg.data_root, cfg.channels, cfg.download, split="test")
        nz = corrupt_fixed(noises[""], img, cfg.val_seed).clamp(0, 1)
        b = BASELINES.get(out["best"])
        den = _apply(b, nz, out["metrics"][b.name]["param"], _known_sigma(noises[""]))
        out["showcase"] = {"clean": img[0], "noisy": nz[0], out["best"]: den[0]}
        out["showcase_psnr"] = {"noisy": float(psnr(nz, img)), out["best"]: float(psnr(den, img))}
    return out
