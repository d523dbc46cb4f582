"""Task `denoise`: a network maps a noisy crop to the clean one (Noise2Clean), or is trained by another scheme
(`target:`, `denoise_core.schemes`): towards a second, independent capture (Noise2Noise, `target: noisy`), or from one
noisy capture alone (Noise2Void's blind spot, Neighbor2Neighbor's sub-images).

    result = run_trial({"noise": "gaussian", "noise_params": {"sigma": 25}}, report)   # denoise_core.tasks

Every evaluation reports `psnr` and `ssim` on the validation images (and `input_psnr`, `input_ssim`:
the noisy input's own scores), per extra noise level `psnr_<param><level>` and `psnr_levels_mean`;
confirm runs add the test scores (`denoise_core.results`). The final checkpoint holds `model.pt` and
one whole test image, clean, noisy and denoised, with their PSNR in `images.json`.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import torch
from pydantic import Field, field_validator, model_validator

from denoise_core.config import CommonConfig
from denoise_core.data import load_whole, random_crops, showcase_image, split_source, views
from denoise_core.losses import LOSSES, build_loss
from denoise_core.metrics import psnr, ssim
from denoise_core.noise import NOISES, Noise, build_noise
from denoise_core.protocol import PROTOCOL, apply_whole, inputs_per_noise, score_images, score_input, test_inputs
from denoise_core.results import Score, ShownImages
from denoise_core.schemes import SCHEMES, build_scheme
from denoise_core.tasks import TASKS, Grid, Task
from denoise_core.trial import Trial, fixed_inputs, save_png


CAPTURE_SEED = 4321  # the fixed training captures (train_captures: k): one draw per study, never the val_seed's
MAX_CAPTURES = 16


class DenoiseConfig(CommonConfig):
    """One denoising trial. Every field round-trips through JSON."""

    task: Literal["denoise"] = "denoise"
    noise: str = "gaussian"
    noise_params: dict[str, Any] = Field(default_factory=dict)  # e.g. {"sigma": 25}
    eval_levels: list[float] = Field(default_factory=list)  # extra validation levels of the noise's parameter
    target: str = "clean"  # the training scheme (`denoise-study spec target` lists them)
    target_params: dict[str, Any] = Field(default_factory=dict)  # e.g. {"fraction": 0.01} for blindspot
    # how many noisy realisations of each training image exist: `fresh` draws new noise at every step (an endless
    # supply of noisy pairs, as the Noise2Noise paper drew its synthetic noise); k draws k once per image from
    # CAPTURE_SEED, the same for every trial, as a user with k captures of each image has them (Noise2Noise needs 2)
    train_captures: Literal["fresh"] | int = "fresh"  # captures of each training image: fresh, or 1 to 16 drawn once
    # how confirm runs are scored on the test split: `whole` is the literature's protocol (denoise_core.protocol:
    # whole images, one noise draw per image, 8-bit outputs); `crops` scores test_images fixed crops (fast)
    test_protocol: Literal["crops", "whole"] = "crops"
    loss: str = "l2"
    # a zero-shot scheme's fit (`target: zs_n2n`, `noise2fast`): its Adam steps per image, in place of the published
    # number (ZS-N2N's 3000, its lr steps scaled alike; Noise2Fast's cap). A budget's fraction of the published fit;
    # trained schemes ignore it (their training is `steps`)
    fit_steps: int | None = Field(None, ge=1, le=100_000)
    # the side (at most) of the one whole image the report shows denoised by each cell and the best baseline: a zero-shot
    # scheme fits a network on it, so a quick budget may want it small
    showcase_side: int = Field(160, ge=32, le=1024)

    @field_validator("loss", "noise", "target")
    @classmethod
    def _known_name(cls, v, info):
        {"loss": LOSSES, "noise": NOISES, "target": SCHEMES}[info.field_name].check(v)
        return v

    @field_validator("train_captures", mode="before")
    @classmethod
    def _captures(cls, v):
        if v != "fresh" and (isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_CAPTURES):
            raise ValueError(f"'fresh' or a number of captures from 1 to {MAX_CAPTURES}, got {v!r}")
        return v

    @field_validator("model")
    @classmethod
    def _direct_denoiser(cls, v):
        if v == "ddpm_unet":
            raise ValueError("ddpm_unet is time-conditioned; train it with task: ddpm")
        return v

    @model_validator(mode="after")
    def _levels(self):
        self._real_noise()
        NOISES.check_params(self.noise, self.noise_params)  # a misspelt parameter first: it explains a missing level
        param = NOISES.get(self.noise).param
        if "noise" in self.model_fields_set and param and param not in self.noise_params:
            raise ValueError(f"noise_params: noise {self.noise!r} needs its level {param!r} stated "
                             f"(e.g. noise_params: {{{param}: ...}}); `denoise-study spec noise` lists each noise's units")
        build_noise(self.noise, **self.noise_params)  # parameter names and ranges
        for level in self.eval_levels:
            build_noise(self.noise, **{**self.noise_params, NOISES.get(self.noise).param: level})
        return self

    def _real_noise(self) -> None:
        """`noise: real` and `dataset: pairs:PATH` go together, in every split: real captures have no model to
        draw a noise level from, and a noise model has no captures to stand for."""
        from denoise_core.sources import has_captures

        captured = has_captures(self.dataset)
        if self.noise == "real" and not all(captured):
            raise ValueError("noise 'real' takes its noisy images from the data: every split's dataset must be "
                             "pairs:PATH (scenes of noisy captures), or noisy:PATH for training")
        if self.noise != "real" and any(captured):
            raise ValueError(f"dataset pairs:PATH holds real noise: use noise: real (not {self.noise!r}), "
                             f"for every split")
        if self.noise == "real" and self.eval_levels:
            raise ValueError("eval_levels: noise 'real' has no level to vary")
        if self.noise == "real" and self.train_captures != "fresh":
            raise ValueError("train_captures: noise 'real' trains on the captures its scenes hold; "
                             "train_captures fixes the draws of a noise model")
        self._scheme()

    def _scheme(self) -> None:
        """The training scheme can be trained on this data: its parameters, its captures, its noise model."""
        from denoise_core.sources import parse

        scheme = build_scheme(self.target, **self.target_params)
        train = split_source(self.dataset, "train")[0]
        if parse(train)[0].train_only and (scheme.clean or scheme.captures > 1):
            raise ValueError(f"target {self.target!r} trains on " + ("clean images" if scheme.clean else
                             f"{scheme.captures} captures of each image") + f"; {train} holds one noisy capture of "
                             f"each and no clean image: train a scheme that needs no more ({', '.join(single_capture_schemes())})")
        if self.train_captures != "fresh" and self.train_captures < scheme.captures:
            raise ValueError(f"train_captures: {self.train_captures} leaves target {self.target!r} short: it trains on "
                             f"{scheme.captures} captures of each image; use {scheme.captures} or more, or fresh")
        noise = build_noise(self.noise, **self.noise_params)
        if scheme.needs_sigma and noise.gaussian_sigma is None:
            raise ValueError(f"target {self.target!r} needs one known Gaussian sigma, and {noise!r} has none "
                             f"(not Gaussian, a blind range, clipped, or real captures); a study leaves such cells out with exclude:")
        scheme.check(self)
        if scheme.zero_shot:  # nothing to train: one step that takes none, one evaluation that fits each image
            self.steps, self.eval_every = 1, 1

    @property
    def train_side(self) -> int:
        """The side of the crops a training step cuts: `crop`, or a multiple of it for a scheme whose network trains
        on sub-images of its crops (Neighbor2Neighbor: twice)."""
        return self.crop * SCHEMES.get(self.target).crop_scale

    def level_suffixes(self) -> list[str]:
        """'_sigma10' ... : one per extra evaluation level."""
        return [f"_{NOISES.get(self.noise).param}{lvl:g}" for lvl in self.eval_levels]


def single_capture_schemes() -> list[str]:
    """The schemes that train on one noisy capture of each image with no clean image and no noise model."""
    return [n for n in SCHEMES.names if not (s := SCHEMES.get(n)).clean and s.captures == 1 and not s.needs_sigma]


# the wall time of denoising one evaluation image: a trained network's forward pass, a zero-shot scheme's whole fit
SECONDS_PER_IMAGE = "seconds_per_image"


def denoise_metrics(cfg: DenoiseConfig) -> list[str]:
    levels = cfg.level_suffixes()
    return ["psnr", "ssim", *(f"{m}{s}" for s in levels for m in ("psnr", "ssim"))] + \
        (["psnr_levels_mean"] if levels else []) + [SECONDS_PER_IMAGE]


def denoise_test_note(cfg: DenoiseConfig) -> str:
    test = split_source(cfg.dataset, "test")[0]
    captured = NOISES.get(cfg.noise).captured  # real noise: the inputs are the captures, no seed draws them
    if cfg.test_protocol == "whole" and captured:
        return (f"Test protocol: every scene of {test}, whole: its first noisy capture denoised, the output rounded to "
                f"8 bits, PSNR and SSIM against the scene's clean image, per scene, averaged over the scenes.")
    if cfg.test_protocol == "whole":
        return f"Test protocol: every image of {test}, {PROTOCOL}."
    inputs = "the noisy input is each scene's first capture" if captured else "noise from a fixed seed"
    return (f"Test protocol: {cfg.test_images} fixed {cfg.eval_size}x{cfg.eval_size} crops of {test}'s held-out "
            f"images, {inputs}; not the literature's whole-image protocol, so no published row applies.")


def denoise_level_metrics(cfg: DenoiseConfig) -> list[tuple[str, float, str]]:
    """PSNR at each extra evaluation level: ('sigma15', 15.0, 'psnr_sigma15') ..."""
    param = NOISES.get(cfg.noise).param
    return [(f"{param}{lvl:g}", float(lvl), f"psnr{sfx}") for sfx, lvl in zip(cfg.level_suffixes(), cfg.eval_levels)]


def denoise_check_data(cfg: DenoiseConfig) -> None:
    """Validation and test scenes are scored against their clean images, so every one of them needs it (a source
    per split, read whole, included); Noise2Clean on real captures needs every training scene's too."""
    from denoise_core.sources import scenes_without_clean

    for split in ("val", "test"):
        name, part = split_source(cfg.dataset, split)
        if missing := scenes_without_clean(name, part):
            raise ValueError(f"dataset {name!r} ({split}): {len(missing)} scene(s) have no clean image (clean.png) to "
                             f"score against ({_some(missing)}); give {split} scenes with clean.png")
    name, part = split_source(cfg.dataset, "train")
    missing = scenes_without_clean(name, part) if SCHEMES.get(cfg.target).clean else []
    if missing:
        raise ValueError(f"dataset {name!r}: target: clean needs every training scene's clean image (clean.png); "
                         f"{len(missing)} have none ({_some(missing)}); "
                         f"train Noise2Noise (target: noisy) instead, capture to capture")


def _some(names: list[str]) -> str:
    return ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")


def denoise_test_conditions(cfg: DenoiseConfig) -> list[tuple[str, float, str]]:
    """(noise, level, metric suffix) of a config's test scores under the literature's protocol: its own noise at
    its training level (no suffix), and at each extra evaluation level (suffix _sigma15 ...)."""
    if cfg.test_protocol != "whole":
        return []
    noise = evaluation_noises(cfg)[""]
    lo, hi = noise.level
    own = [(cfg.noise, lo, "")] if lo == hi else []  # a blind range has no one level
    return own + [(cfg.noise, float(lvl), sfx) for sfx, lvl in zip(cfg.level_suffixes(), cfg.eval_levels)]


def apply_denoiser(model, cfg, noisy, sigma=None):
    """A direct denoiser maps the noisy image to its estimate; it needs no noise level. Its training scheme applies it
    as the trial's evaluations did (R2R: the mean over its recorruptions)."""
    return build_scheme(cfg.target, **cfg.target_params).infer(model, noisy, cfg).clamp(0, 1)


def evaluation_noises(cfg: DenoiseConfig) -> dict[str, Noise]:
    """The noises a trial is scored under: '' the training noise, then one per extra evaluation level (the
    suffix names its metrics: psnr_sigma15 ...). The baselines score under the same."""
    param = NOISES.get(cfg.noise).param
    return {"": build_noise(cfg.noise, **cfg.noise_params)} | {
        s: build_noise(cfg.noise, **{**cfg.noise_params, param: lvl}) for s, lvl in zip(cfg.level_suffixes(), cfg.eval_levels)}


def with_levels_mean(scores: dict, cfg: DenoiseConfig) -> dict:
    """psnr_levels_mean (and its input twin): the mean over the extra evaluation levels, per image."""
    if cfg.eval_levels:
        for inp in (False, True):
            per_level = [scores[Score(f"psnr{s}", input=inp).key] for s in cfg.level_suffixes()]
            scores[Score("psnr_levels_mean", input=inp).key] = torch.stack(per_level).mean(0)
    return scores


@lru_cache(maxsize=4)
def whole_test_set(dataset, root: str | None, channels: int, download: bool) -> tuple[tuple, tuple]:
    """The test split's images whole, with their names (per process: a reused worker keeps them)."""
    name, part = split_source(dict(dataset) if isinstance(dataset, tuple) else dataset, "test")
    images, names = load_whole(name, root, part, channels, download)
    return tuple(images), tuple(names)


def fixed_captures(noise: Noise, images: torch.Tensor, k: int, seed: int) -> tuple[torch.Tensor, tuple[int, bool]]:
    """The training images with `k` noisy captures of each, drawn once at `seed` (on the CPU, so every device and
    every trial of a study trains on the same captures), stacked along the channels after the clean view:
    [N, (1 + k) * C, H, W], then k masks where the noise has them (Bernoulli). A crop cuts every view at one place.
    Returns (stacked, (k, masked)).

    >>> x = torch.rand(3, 1, 8, 8)
    >>> st, (k, masked) = fixed_captures(build_noise("gaussian", sigma=25), x, 2, 0)
    >>> st.shape, k, masked, bool((st[:, :1] == x).all()), bool((st[:, 1:2] != st[:, 2:3]).any())
    (torch.Size([3, 3, 8, 8]), 2, False, True, True)
    """
    gen = torch.Generator().manual_seed(seed)
    draws = [noise(images.cpu(), generator=gen) for _ in range(k)]
    masked = draws[0].mask is not None
    parts = [images.cpu(), *(d.noisy for d in draws), *((d.mask for d in draws) if masked else ())]
    return torch.cat(parts, dim=1).to(images.device), (k, masked)


class DenoiseTrial(Trial):
    def __init__(self, cfg: DenoiseConfig, workdir: Path):
        super().__init__(cfg, workdir)
        self.noises = evaluation_noises(cfg)
        self.noise = self.noises[""]
        self.loss = build_loss(cfg.loss)
        self.scheme = build_scheme(cfg.target, **cfg.target_params)
        if self.noise.captured:
            denoise_check_data(cfg)
        self.fixed = None  # train_captures: k: the training images' k fixed captures (and masks), stacked with them
        self.fresh = not self.noise.captured and cfg.train_captures == "fresh"  # noise drawn anew at every step
        if cfg.train_captures != "fresh":
            self.train_data, self.fixed = fixed_captures(self.noise, self.train_data, cfg.train_captures, CAPTURE_SEED)
        # each split's clean images and their fixed noisy inputs per evaluation noise (real noise: the evaluation
        # sets are stacked views, so the clean view and the first capture)
        self.noisy = {}
        for split in list(self.clean):
            self.clean[split], self.noisy[split] = inputs_per_noise(fixed_inputs, self.noises, self.clean[split],
                                                                    cfg.val_seed, cfg.channels)
        self.whole = None  # the test split under the literature's protocol: clean, names, noisy per noise
        if cfg.test and cfg.test_protocol == "whole":
            key = tuple(sorted(cfg.dataset.items())) if isinstance(cfg.dataset, dict) else cfg.dataset
            images, names = whole_test_set(key, cfg.data_root, cfg.channels, cfg.download)
            clean, noisy = inputs_per_noise(test_inputs, self.noises, list(images), cfg.val_seed, cfg.channels)
            self.whole = SimpleNamespace(clean=clean, names=list(names), noisy=noisy)

    @torch.no_grad()
    def predict(self, noisy: torch.Tensor, chunk: int = 64) -> torch.Tensor:
        self.model.eval()
        outs = []
        for i in range(0, len(noisy), chunk):
            with self.autocast:
                outs.append(self.scheme.infer(self.model, noisy[i:i + chunk], self.cfg).float())
        self.model.train()
        # a diverged model's NaNs become 0: its scores are then real (and poor) numbers
        return torch.nan_to_num(torch.cat(outs), nan=0.0).clamp(0, 1)

    def evaluate(self, final: bool = False, split: str = "val") -> dict:
        if split == "test" and self.whole is not None:
            return self.evaluate_whole()
        scores, clean = {}, self.clean[split]
        for suffix, noisy in self.noisy[split].items():
            out, seconds = self.timed(lambda: self.predict(noisy), len(noisy))
            noisy = noisy.clamp(0, 1)
            for name, fn in (("psnr", psnr), ("ssim", ssim)):
                scores[Score(f"{name}{suffix}").key] = fn(out, clean)
                scores[Score(f"{name}{suffix}", input=True).key] = fn(noisy, clean)
            if not suffix:
                scores[Score(SECONDS_PER_IMAGE).key] = seconds
        return with_levels_mean(scores, self.cfg)

    def evaluate_whole(self) -> dict:
        """The test split under the literature's protocol (denoise_core.protocol), one value per whole image."""
        scores, w = {}, self.whole
        multiple = getattr(self.model, "size_multiple", 1)
        for suffix, noisy in w.noisy.items():
            out, seconds = self.timed(lambda: apply_whole(self.predict, noisy, multiple, device=self.device), len(noisy))
            for name, v in score_images(out, w.clean).items():
                scores[Score(f"{name}{suffix}").key] = v
            for name, v in score_input(noisy, w.clean).items():
                scores[Score(f"{name}{suffix}", input=True).key] = v
            if not suffix:
                scores[Score(SECONDS_PER_IMAGE).key] = seconds
        return with_levels_mean(scores, self.cfg)

    def parameter_count(self) -> int:
        """A zero-shot scheme's network (fitted per image), else the trained one."""
        return self.scheme.network_parameters(self.cfg.channels) if self.scheme.zero_shot else super().parameter_count()

    def timed(self, denoise, n: int) -> tuple:
        """(`denoise()`'s outputs, the seconds each of its `n` images took [n]): a zero-shot scheme's fit of each
        image, or a network's pass over the set shared out evenly (one device sync per evaluation)."""
        import time

        started = time.perf_counter()
        out = denoise()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        took = time.perf_counter() - started
        each = self.scheme.take_seconds() if self.scheme.zero_shot else [took / n] * n
        return out, torch.tensor(each, dtype=torch.float64)

    def test_sources(self):
        """Under the whole-image protocol each test image is its own source (named by its file)."""
        return tuple(self.whole.names) if self.whole is not None else super().test_sources()

    def train_step(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        if self.scheme.zero_shot:  # its one step trains nothing: every fit happens in the evaluation
            zero = torch.zeros((), device=self.device)
            return zero, zero
        crops = random_crops(self.train_data, cfg.batch_size, cfg.train_side, self.gen)  # [B, C, side, side] (or views)
        loss, monitor = self.scheme.train(self, *self.batch(crops), progress=step / cfg.steps)
        self.optimise(loss)
        return loss, monitor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network on a training batch (what a scheme calls): channels-last and autocast as configured, float out."""
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.autocast:
            return self.compiled(x).float()

    def batch(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(clean [B, C, h, w], captures [B, K, C, h, w], masks or None) of the crops: real captures of their scenes,
        the fixed captures of `train_captures: k`, or as many fresh draws of the noise as the scheme trains on."""
        c = self.cfg.channels
        if self.noise.captured:
            clean, captures = views(crops, c)
            return clean, captures, None
        if self.fixed is not None:
            k, masked = self.fixed
            v = crops.unflatten(1, (crops.shape[1] // c, c))  # [B, 1 + k (+ k masks), C, h, w]
            return v[:, 0].contiguous(), v[:, 1:1 + k], v[:, 1 + k:] if masked else None
        draws = [self.noise(crops, generator=self.gen) for _ in range(self.scheme.captures)]
        masks = torch.stack([d.mask for d in draws], 1) if draws[0].mask is not None else None
        return crops, torch.stack([d.noisy for d in draws], 1), masks

    def final_outputs(self, d: Path) -> dict[str, str]:
        """One whole image of the held-out split (validation for tuning trials), clean, noisy (the fixed
        seed) and denoised, as image_clean/noisy/output.png, with PSNRs in images.json. A fixed-size
        model (the dense autoencoder) takes no whole image: it writes none."""
        cfg = self.cfg
        split = "test" if "test" in self.clean else "val"
        name, part = split_source(cfg.dataset, split)
        image = showcase_image(name, cfg.data_root, cfg.channels, cfg.download, split=part,
                               max_side=cfg.showcase_side).to(self.device)
        if getattr(self.model, "size_error", lambda h, w: None)(*image.shape[-2:]) is not None:
            return {}
        clean, noisy = fixed_inputs(self.noise, image, cfg.val_seed, cfg.channels)
        output = self.predict(noisy)
        files = {name: str(save_png(d / f"{name}.png", img)) for name, img in
                 (("image_clean", clean), ("image_noisy", noisy.clamp(0, 1)), ("image_output", output))}
        ShownImages(split=split, psnr={"image_noisy": psnr(noisy.clamp(0, 1), clean).item(),
                                       "image_output": psnr(output, clean).item()}).write(d / "images.json")
        return files


TASKS.add("denoise", Task(
    name="denoise", config=DenoiseConfig, trial=DenoiseTrial, apply=apply_denoiser, metrics=denoise_metrics,
    images=("image_output",), images_caption="one whole held-out image denoised by each cell's best model",
    baselines=True, test_note=denoise_test_note, test_conditions=denoise_test_conditions,
    check_data=denoise_check_data, grid=Grid(), level_metrics=denoise_level_metrics, units={"psnr": "dB", "ssim": ""}))
