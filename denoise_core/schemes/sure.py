"""SURE (Stein's unbiased risk estimate; Soltanayev & Chun 2018, Metzler et al. 2018): Gaussian noise of known sigma.

On a capture y = x + n, n ~ N(0, sigma^2 I) of N values, the network's output f(y) has
    SURE = |y - f(y)|^2 / N - sigma^2 + 2 sigma^2 div f(y) / N,
whose expectation is the mean squared error |f(y) - x|^2 / N: it needs no clean image. The divergence is estimated by
Monte Carlo (Ramani et al. 2008): b . (f(y + epsilon b) - f(y)) / epsilon with b ~ N(0, I), one more pass of the
network. SURE is its own loss, the squared error's estimate: it trains with loss l2 only.
"""
from __future__ import annotations

import torch

from denoise_core.schemes import SCHEMES, Scheme, one_capture


@SCHEMES.register("sure")
class Sure(Scheme):
    """SURE: the mean squared error estimated from one Gaussian capture (sigma known), Monte-Carlo divergence."""

    clean, captures, needs_sigma, needs = False, 1, True, "one capture of each image and the noise's sigma"

    def __init__(self, epsilon: float = 1e-3):
        if not 0 < epsilon < 1:
            raise ValueError(f"target_params: epsilon={epsilon!r} is the divergence's finite-difference step, in (0, 1)")
        self.epsilon = epsilon

    def check(self, cfg) -> None:
        if cfg.loss != "l2":
            raise ValueError(f"target sure is an estimate of the squared error: it trains with loss l2, not "
                             f"{cfg.loss!r}")

    def value(self, f, y: torch.Tensor, sigma: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(SURE of `f` at `y`, f(y)), averaged over the batch's values."""
        out = f(y)
        b = torch.randn(y.shape, generator=gen, device=y.device, dtype=y.dtype)
        div = (b * (f(y + self.epsilon * b) - out)).mean() / self.epsilon
        return (y - out).square().mean() - sigma ** 2 + 2 * sigma ** 2 * div, out

    def train(self, trial, clean, captures, masks, progress):
        y, _, _ = one_capture(captures, masks, trial.gen, trial.fresh)
        loss, out = self.value(trial.forward, y, trial.noise.gaussian_sigma, trial.gen)
        return loss, (out.detach() - y).square().mean()
