"""Noise2Noise (Lehtinen et al. 2018): one noisy capture towards another, independent one."""
from __future__ import annotations

import torch

from denoise_core.schemes import SCHEMES, Scheme


@SCHEMES.register("noisy")
class Noise2Noise(Scheme):
    """Noise2Noise: one noisy capture of each crop towards another, independent one (never itself)."""

    clean, captures, needs = False, 2, "two captures of each image"

    def train(self, trial, clean, captures, masks, progress):
        b, k = captures.shape[:2]
        row = torch.arange(b, device=captures.device)
        if trial.fresh:  # two fresh draws: the first the input, the second the target
            a, other = torch.zeros_like(row), torch.ones_like(row)
        else:
            a = torch.randint(0, k, (b,), generator=trial.gen, device=captures.device)
            other = (a + torch.randint(1, k, (b,), generator=trial.gen, device=captures.device)) % k
        target, mask = captures[row, other], None if masks is None else masks[row, other]
        pred = trial.forward(captures[row, a])
        return trial.loss(pred, target, mask=mask, progress=progress), (pred.detach() - target).square().mean()
