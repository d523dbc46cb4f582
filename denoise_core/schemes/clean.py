"""Noise2Clean: a noisy capture towards its clean image (supervised)."""
from __future__ import annotations

from denoise_core.schemes import SCHEMES, Scheme, one_capture


@SCHEMES.register("clean")
class Noise2Clean(Scheme):
    """Noise2Clean: a noisy capture of each crop towards its clean image (supervised)."""

    clean, captures, needs = True, 1, "clean images and a noisy capture of each"

    def train(self, trial, clean, captures, masks, progress):
        inp, _, _ = one_capture(captures, masks, trial.gen, trial.fresh)
        pred = trial.forward(inp)
        return trial.loss(pred, clean, progress=progress), (pred.detach() - clean).square().mean()
