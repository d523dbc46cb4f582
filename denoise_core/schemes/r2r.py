"""Recorrupted-to-Recorrupted (Pang et al. 2021), Gaussian noise of known sigma: two recorruptions of one capture.

From one capture y = x + n, n ~ N(0, sigma^2): the input y + alpha * sigma * z and the target y - sigma * z / alpha,
z ~ N(0, I). Their noises (n + alpha sigma z and n - sigma z / alpha) are uncorrelated, so training one towards the
other is Noise2Noise on one capture. At evaluation the network sees the capture itself (`eval_samples: 0`), or the
mean of its outputs over that many recorruptions y + alpha * sigma * z (each one more pass of the network: the
report counts it as compute).
"""
from __future__ import annotations

import torch

from denoise_core.schemes import SCHEMES, Scheme, one_capture


@SCHEMES.register("r2r")
class Recorrupted2Recorrupted(Scheme):
    """Recorrupted-to-Recorrupted: two recorruptions of one Gaussian capture (sigma known), one towards the other."""

    clean, captures, needs_sigma, needs = False, 1, True, "one capture of each image and the noise's sigma"

    def __init__(self, alpha: float = 0.5, eval_samples: int = 0):
        if not 0 < alpha <= 10:
            raise ValueError(f"target_params: alpha={alpha!r} scales the recorruption, in (0, 10]")
        if isinstance(eval_samples, bool) or not isinstance(eval_samples, int) or not 0 <= eval_samples <= 64:
            raise ValueError(f"target_params: eval_samples={eval_samples!r} is the recorruptions averaged at "
                             f"evaluation, 0 (none) to 64")
        self.alpha, self.eval_samples = alpha, eval_samples

    def recorrupt(self, y: torch.Tensor, sigma: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(input, target) of a capture `y` of Gaussian noise of std `sigma` (on y's scale)."""
        z = torch.randn(y.shape, generator=gen, device=y.device, dtype=y.dtype) * sigma
        return y + self.alpha * z, y - z / self.alpha

    def train(self, trial, clean, captures, masks, progress):
        y, _, _ = one_capture(captures, masks, trial.gen, trial.fresh)
        inp, target = self.recorrupt(y, trial.noise.gaussian_sigma, trial.gen)
        pred = trial.forward(inp)
        return trial.loss(pred, target, progress=progress), (pred.detach() - target).square().mean()

    def infer(self, model, x: torch.Tensor, cfg) -> torch.Tensor:
        """Recorruptions at the training noise's sigma (the inputs the network learnt from), seeded by `val_seed`."""
        if not self.eval_samples:
            return model(x)
        from denoise_core.noise import build_noise

        sigma = build_noise(cfg.noise, **cfg.noise_params).gaussian_sigma
        gen = torch.Generator(device=x.device).manual_seed(cfg.val_seed)  # the same recorruptions every time
        return sum(model(self.recorrupt(x, sigma, gen)[0]) for _ in range(self.eval_samples)) / self.eval_samples

    def passes(self) -> int:
        return max(1, self.eval_samples)
