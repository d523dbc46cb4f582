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

PAD = 8  # reflect padding around each image in a BM3D mosaic
# a validation split smaller than this cannot choose a baseline: two flat 32x32 crops rank TV far above BM3D,
# which then loses by 9 dB on the test images. The report says so, and shows every baseline's test score
CHOICE_MIN_IMAGES = 8
CHOICE_MIN_PIXELS = 65_536  # 4 crops of 128x128, 16 of 64x64


@dataclass(frozen=True)
class Baseline:
    name: str
    denoise: Callable[[list[np.ndarray], object, float | None], list[np.ndarray]]  # images [H, W, C], param, sigma
    grid: tuple  # the parameter values tried on validation
    families: frozenset | None = None  # the noise families it is meant for (Noise.family); None: every noise


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


def _bm3d_call(img: np.ndarray, sigma: float) -> np.ndarray:
    """BM3D on one [H, W, C] image; CBM3D (Dabov et al. 2007b: grouping on luminance in an opponent colour
    space) for colour, the published colour baseline, not BM3D per channel."""
    import bm3d

    return bm3d.bm3d_rgb(img, sigma_psd=sigma) if img.shape[-1] == 3 else bm3d.bm3d(img[..., 0], sigma_psd=sigma)[..., None]


def _bm3d(images, factor, sigma):
    """All images in one mosaic (each reflect-padded by PAD): one BM3D call, CBM3D for colour."""
    h, w, c = images[0].shape
    if any(im.shape != (h, w, c) for im in images):  # different sizes: one call each
        return [_bm3d([im], factor, sigma)[0] for im in images]
    s = sigma if sigma is not None else float(np.median([_estimate_sigma(im) for im in images]))
    if len(images) == 1:  # one whole image (the literature's protocol): BM3D on it alone, no padding
        return [_bm3d_call(images[0], max(factor * s, 1e-4))]
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    H, W = h + 2 * PAD, w + 2 * PAD
    mosaic = np.zeros((rows * H, cols * W, c))
    for i, im in enumerate(images):
        r, q = divmod(i, cols)
        mosaic[r * H:(r + 1) * H, q * W:(q + 1) * W] = np.pad(im, ((PAD, PAD), (PAD, PAD), (0, 0)), mode="reflect")
    out = _bm3d_call(mosaic, max(factor * s, 1e-4))
    return [out[r * H + PAD:r * H + PAD + h, q * W + PAD:q * W + PAD + w]
            for r, q in (divmod(i, cols) for i in range(len(images)))]


BASELINES.add("noisy", Baseline("noisy", _noisy, (None,)))
BASELINES.add("bm3d", Baseline("bm3d", _bm3d, (0.75, 1.0, 1.33), frozenset({"additive"})))
BASELINES.add("tv", Baseline("tv", _tv, (0.03, 0.06, 0.1, 0.16, 0.25, 0.4, 0.7, 1.2)))
BASELINES.add("nlm", Baseline("nlm", _nlm, (0.6, 0.8, 1.0, 1.3, 1.7, 2.2)))
BASELINES.add("median", Baseline("median", _median, (3, 5, 7, 9, 11), frozenset({"impulse"})))


# what a baseline's scores depend on: the data, the noise and the evaluation sets (not the loss, the target ...)
SETTING = ("dataset", "data_root", "download", "channels", "crop", "eval_crop", "val_images", "test_images", "val_seed",
           "noise", "noise_params", "eval_levels", "test_protocol")


def setting_key(config: dict) -> str:
    """A short key of a trial config's evaluation setting: cells that share it share their baselines' scores."""
    import hashlib
    import json

    return hashlib.sha1(json.dumps({k: config.get(k) for k in SETTING}, sort_keys=True).encode()).hexdigest()[:12]


def baselines_for(noise) -> list[Baseline]:
    """The baselines meant for a noise model's family (`Noise.family`)."""
    return [BASELINES.get(n) for n in BASELINES.names if BASELINES.get(n).families is None
            or noise.family in BASELINES.get(n).families]


def _to_numpy(x: torch.Tensor) -> list[np.ndarray]:
    return [im for im in x.detach().cpu().double().permute(0, 2, 3, 1).numpy()]  # [H, W, C] each


def _to_torch(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().clamp(0, 1)


def _apply(b: Baseline, noisy: torch.Tensor, param, sigma: float | None) -> torch.Tensor:
    """A baseline on a batch [B, C, H, W]: exactly the networks' noisy input (not clipped: Gaussian noise
    leaves [0, 1]); some denoisers drop a single channel axis: put it back."""
    images = _to_numpy(noisy)
    return _to_torch([o.reshape(i.shape) for o, i in zip(b.denoise(images, param, sigma), images)])


PROGRESS_EVERY_S = 10.0  # a baseline scoring whole test images says where it is at least this often


def score_baselines(config: dict, showcase: bool = True, progress: Callable[[str], None] | None = None,
                    done: dict | None = None, on_scored: Callable[[str, dict], None] | None = None) -> dict:
    """Every baseline that suits the config's noise, its parameter chosen on validation, scored on test.

    Returns {"noise", "channels", "val_images", "val_pixels", "metrics": {name: {"param", "val": {metric: mean},
    "test": {metric: mean}, "test_per_image": {metric: [...]}}}, "best": name (highest validation PSNR among the
    real denoisers), "showcase": {"clean", "noisy", <best>: [C, H, W] tensors}, "showcase_psnr": {...}}.
    Metrics: psnr and ssim under the config's noise, and under each extra evaluation level with
    `psnr_levels_mean`, named as the trial names them. Under `test_protocol: whole` the test images are
    whole and scored as the networks' are (denoise_core.protocol), on exactly their noisy inputs.
    `done` holds baselines scored before ({name: metrics}, an interrupted run's): they are not scored again.
    `on_scored(name, metrics)` hears of each baseline as soon as it is scored; `progress(line)` of each parameter
    chosen and of the test images scored, with the time, at least every PROGRESS_EVERY_S.
    """
    setting = Setting(config, progress or (lambda line: None))
    out = setting.header()
    for b in baselines_for(setting.noises[""]):
        entry = (done or {}).get(b.name)
        if entry is None:
            entry = setting.score(b)
            if on_scored is not None:
                on_scored(b.name, entry)
        out["metrics"][b.name] = entry
    real = [n for n in out["metrics"] if n != "noisy" and math.isfinite(out["metrics"][n]["val"].get("psnr", math.nan))]
    out["best"] = max(real, key=lambda n: out["metrics"][n]["val"]["psnr"]) if real else "noisy"
    if showcase:
        out.update(_showcase(setting.cfg, setting.noises[""], out))
    return out


class Setting:
    """One evaluation setting's validation crops and test images with their fixed noisy inputs, built once; each
    baseline is then chosen on the former and scored on the latter."""

    def __init__(self, config: dict, say: Callable[[str], None]):
        from denoise_core.tasks import validate_config
        from denoise_core.tasks.denoise import evaluation_noises

        self.cfg = cfg = validate_config({**config, "test": True})
        self.noises, self.say = evaluation_noises(cfg), say
        self.sets = {"val": _crop_set(cfg, "val", self.noises),
                     "test": _whole_set(cfg, self.noises) if cfg.test_protocol == "whole"
                     else _crop_set(cfg, "test", self.noises)}

    def header(self) -> dict:
        val = self.sets["val"].clean  # [N, C, H, W]
        return {"noise": self.cfg.noise, "metrics": {}, "channels": self.cfg.channels, "val_images": len(val),
                "val_pixels": int(val[:, :1].numel())}  # pixels per channel

    def choose(self, b: Baseline):
        """The parameter with the best mean validation PSNR over the evaluation noises (a score that is not a
        number never wins)."""
        import time

        started, val = time.time(), self.sets["val"]
        grid = (1.0,) if b.name == "bm3d" and self.noises[""].gaussian_sigma is not None else b.grid

        def mean_psnr(p):
            v = float(np.mean([val.scores(b, p, s, n)["psnr"].mean() for s, n in self.noises.items()]))
            return v if math.isfinite(v) else -math.inf

        p_best = max(grid, key=mean_psnr)
        took = f"{time.time() - started:.0f} s"
        self.say(f"{b.name}: scored on {len(val.clean)} validation images ({took})" if p_best is None else
                 f"{b.name}: parameter {p_best} chosen on {len(val.clean)} validation images ({len(grid)} tried, {took})")
        return p_best

    def score(self, b: Baseline) -> dict:
        """{"param", "val": {metric: mean}, "test": {metric: mean}, "test_per_image": {metric: [...]}}."""
        entry = {"param": (p := self.choose(b))}
        for split, evalset in self.sets.items():
            per = {}
            for sfx, noise in self.noises.items():
                tick = _Ticker(self.say, f"{b.name}, {noise!r}") if split == "test" else None
                for metric, v in evalset.scores(b, p, sfx, noise, tick).items():
                    per[f"{metric}{sfx}"] = v
            if self.cfg.eval_levels:
                per["psnr_levels_mean"] = torch.stack([per[f"psnr{s}"] for s in self.cfg.level_suffixes()]).mean(0)
            entry[split] = {k: float(v.mean()) for k, v in per.items()}
            if split == "test":
                entry["test_per_image"] = {k: [round(x, 5) for x in v.tolist()] for k, v in per.items()}
        return entry


class _Ticker:
    """`tick(done, total)`: a line "<what>: done/total test images (t s)" at the last image, and before it whenever
    PROGRESS_EVERY_S have passed since the last line."""

    def __init__(self, say: Callable[[str], None], what: str):
        import time

        self.say, self.what, self.started = say, what, time.time()
        self.last = self.started

    def __call__(self, done: int, total: int) -> None:
        import time

        now = time.time()
        if done == total or now - self.last >= PROGRESS_EVERY_S:
            self.say(f"{self.what}: {done}/{total} test images ({now - self.started:.0f} s)")
            self.last = now


class _CropSet:
    """A split's fixed crops, corrupted as the trials corrupt them (denoise_core.trial.corrupt_fixed)."""

    def __init__(self, clean: torch.Tensor, noisy: dict[str, torch.Tensor]):
        self.clean, self.noisy = clean, noisy

    def scores(self, b: Baseline, param, sfx: str, noise, tick=None) -> dict[str, torch.Tensor]:
        from denoise_core.metrics import psnr, ssim

        den = _apply(b, self.noisy[sfx], param, noise.gaussian_sigma)
        if tick is not None:
            tick(len(den), len(den))
        return {"psnr": psnr(den, self.clean), "ssim": ssim(den, self.clean)}


class _WholeSet:
    """The test split's whole images under the literature's protocol: the networks' very noisy inputs,
    outputs rounded to 8 bits (denoise_core.protocol)."""

    def __init__(self, clean: list[torch.Tensor], noisy: dict[str, list[torch.Tensor]]):
        self.clean, self.noisy = clean, noisy

    def scores(self, b: Baseline, param, sfx: str, noise, tick=None) -> dict[str, torch.Tensor]:
        from denoise_core.protocol import apply_whole, score_images

        out = apply_whole(lambda x: _apply(b, x, param, noise.gaussian_sigma), self.noisy[sfx], batch=1,
                          progress=tick)
        return score_images(out, self.clean)


def _crop_set(cfg, split: str, noises: dict) -> _CropSet:
    from denoise_core.data import split_source
    from denoise_core.protocol import inputs_per_noise
    from denoise_core.trial import eval_crops, fixed_inputs

    images = eval_crops(*split_source(cfg.dataset, split), cfg.data_root, cfg.channels, cfg.download, cfg.eval_size,
                        cfg.val_images if split == "val" else cfg.test_images)
    return _CropSet(*inputs_per_noise(fixed_inputs, noises, images, cfg.val_seed, cfg.channels))


def _whole_set(cfg, noises: dict) -> _WholeSet:
    from denoise_core.protocol import inputs_per_noise, test_inputs
    from denoise_core.tasks.denoise import whole_test_set

    key = tuple(sorted(cfg.dataset.items())) if isinstance(cfg.dataset, dict) else cfg.dataset
    images = list(whole_test_set(key, cfg.data_root, cfg.channels, cfg.download)[0])
    return _WholeSet(*inputs_per_noise(test_inputs, noises, images, cfg.val_seed, cfg.channels))


def _showcase(cfg, noise, out: dict) -> dict:
    """The report's whole test image: clean, noisy and the best baseline's output, with their PSNRs."""
    from denoise_core.data import showcase_image, split_source
    from denoise_core.metrics import psnr
    from denoise_core.trial import fixed_inputs

    name, part = split_source(cfg.dataset, "test")
    img, nz = fixed_inputs(noise, showcase_image(name, cfg.data_root, cfg.channels, cfg.download, split=part,
                                                 max_side=cfg.showcase_side),
                           cfg.val_seed, cfg.channels)
    b = BASELINES.get(out["best"])
    den = _apply(b, nz, out["metrics"][b.name]["param"], noise.gaussian_sigma).clamp(0, 1)
    return {"showcase": {"clean": img[0], "noisy": nz[0].clamp(0, 1), out["best"]: den[0]},
            "showcase_psnr": {"noisy": float(psnr(nz.clamp(0, 1), img)), out["best"]: float(psnr(den, img))}}


def score_set(clean: list[torch.Tensor], noisy: list[torch.Tensor], noise, names=("noisy", "bm3d"),
              progress=None) -> dict[str, dict]:
    """`denoise-study evaluate`: methods whose one parameter needs no validation set (the noisy input; BM3D,
    CBM3D for colour, at the noise's own sigma) on whole images under the literature's protocol, given the
    protocol's clean and noisy test images (`denoise_core.protocol.test_inputs`). Returns
    {method: {"psnr": [N], "ssim": [N]}}; `progress(method, i, n)` is called after each image."""
    from denoise_core.protocol import quantize, score_images, score_input

    out = {}
    for name in names:
        b = BASELINES.get(name)
        if b.families is not None and noise.family not in b.families:
            continue
        if name == "noisy":
            out[name] = score_input(noisy, clean)
            continue
        outputs = []
        for i, x in enumerate(noisy):
            outputs.append(quantize(_apply(b, x[None], 1.0, noise.gaussian_sigma)[0]))
            if progress:
                progress(name, i + 1, len(noisy))
        out[name] = score_images(outputs, clean)
    return out
