"""What the zero-shot schemes share: no training set, a small network fitted on each noisy image it denoises.

A zero-shot scheme (ZS-N2N, Noise2Fast) trains nothing before evaluation: a trial of one takes no training step
(`DenoiseConfig` holds such a cell to one step and one evaluation), and its `infer` fits a fresh network on each
evaluated image alone, from the same initial weights (drawn at the trial's seed), then returns that network's
estimate. Its cost is therefore at test time: `seconds` holds the wall time of each image's fit, which the trial
reports as `seconds_per_image` beside the networks' (a trained network's is one forward pass).
"""
from __future__ import annotations

import time

import torch

from denoise_core.schemes import Scheme

MIN_SIDE = 8  # a zero-shot scheme's downsampled pairs of a smaller image hold too few pixels to fit on


class ZeroShot(Scheme):
    name, label = "", ""  # the scheme's registered name, and the literature's (tables, `evaluate` rows)
    zero_shot = True
    clean, captures = False, 1
    needs = "the one noisy image it denoises: no training set, no clean image, no noise model"

    def check(self, cfg) -> None:
        from denoise_core.noise import build_noise

        self.check_noise(build_noise(cfg.noise, **cfg.noise_params))

    def check_noise(self, noise) -> None:
        """Refuse noise the method's training pairs cannot average away: its loss pulls each view's estimate towards
        another noisy view, so the noise must be zero-mean and independent pixel to pixel (Gaussian, Poisson, real
        camera noise); impulses, text and dropped pixels are not."""
        if noise.family == "impulse":
            raise ValueError(f"{self.label} ({self.name}) fits its network on two noisy views of the one image, each "
                             f"towards the other: it needs zero-mean noise, independent pixel to pixel, and {noise!r} "
                             f"is not (the median baseline or a scheme trained on a dataset suits it)")

    def fit(self, y: torch.Tensor, seed: int, steps: int | None = None) -> torch.Tensor:  # pragma: no cover
        """The method's estimate of one noisy image `y` [1, C, H, W], from a network initialised at `seed`, in
        `steps` steps at most where given (a config's `fit_steps`), else the method's own number."""
        raise NotImplementedError

    def plan(self, steps: int | None = None) -> str:  # pragma: no cover - abstract
        """How each image is fitted with `steps` (a config's `fit_steps`) as the cap, against the published fit: the
        report's words for a zero-shot cell's cost."""
        raise NotImplementedError

    def check_size(self, x: torch.Tensor) -> None:
        if min(x.shape[-2:]) < MIN_SIDE:
            raise ValueError(f"{self.label} ({self.name}) needs images of at least {MIN_SIDE}x{MIN_SIDE} pixels, got "
                             f"{tuple(x.shape[-2:])}")

    def network(self, channels: int) -> torch.nn.Module:  # pragma: no cover - abstract
        """The network a fit starts from (untrained)."""
        raise NotImplementedError

    def network_parameters(self, channels: int) -> int:
        return sum(p.numel() for p in self.network(channels).parameters())

    def infer(self, model, x: torch.Tensor, cfg) -> torch.Tensor:
        """Each image of `x` [B, C, H, W] fitted on alone (the trained `model` is not used: there is none)."""
        self.check_size(x)
        outs = []
        with torch.enable_grad():  # the trial predicts under no_grad; a zero-shot fit is training
            for i in range(len(x)):
                started = time.perf_counter()
                outs.append(self.fit(x[i:i + 1].float(), cfg.seed, cfg.fit_steps))
                self.seconds.append(time.perf_counter() - started)
        return torch.cat(outs)

    @property
    def seconds(self) -> list[float]:
        """The wall time of each image's fit since the last `take_seconds`."""
        return self.__dict__.setdefault("_seconds", [])

    def take_seconds(self) -> list[float]:
        out, self.__dict__["_seconds"] = self.seconds, []
        return out


def init_network(build, seed: int, device) -> torch.nn.Module:
    """A network built with the CPU generator at `seed` (the caller's global RNG state left as it was), then moved:
    the same initial weights on every device."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().to(device)
