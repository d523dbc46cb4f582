"""Noise2Void (Krull et al. 2019) and its N2V2 variant (Hoeck et al. 2022): a blind spot, from one noisy capture.

A fraction of each crop's pixels is masked: each replaced by a random other pixel of its (2r+1)^2 neighbourhood
(`replacement: neighbour`, N2V's "uniform without the centre pixel") or by the median of that neighbourhood without
its centre (`replacement: median`, N2V2); the network maps the masked capture to the capture, and the loss counts the
masked pixels only, so a pixel's own noise can never be its own target.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from denoise_core.schemes import SCHEMES, Scheme, one_capture

N2V_FRACTION = 0.00198  # N2V's default: 0.198% of a patch's pixels (8 of a 64x64 patch)


@SCHEMES.register("blindspot")
class BlindSpot(Scheme):
    """Noise2Void / N2V2: masked pixels of one noisy capture, each replaced from its neighbourhood, towards themselves."""

    clean, captures, needs = False, 1, "one capture of each image"

    def __init__(self, fraction: float = N2V_FRACTION, radius: int = 2, replacement: str = "neighbour"):
        if not 0 < fraction < 1:
            raise ValueError(f"target_params: fraction={fraction!r} is the share of pixels masked, in (0, 1)")
        if isinstance(radius, bool) or not isinstance(radius, int) or not 1 <= radius <= 8:
            raise ValueError(f"target_params: radius={radius!r} is the neighbourhood's radius in pixels, 1 to 8")
        if replacement not in ("neighbour", "median"):
            raise ValueError(f"target_params: replacement={replacement!r} is neighbour (N2V) or median (N2V2)")
        self.fraction, self.radius, self.replacement = fraction, radius, replacement

    def check(self, cfg) -> None:
        if cfg.crop <= 2 * self.radius:
            raise ValueError(f"target_params: radius={self.radius} needs crops wider than {2 * self.radius}, "
                             f"got crop={cfg.crop}")

    def mask(self, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked input, mask): `y` [B, C, h, w] with round(fraction * h * w) pixels per crop (at least one, all
        channels) replaced from their neighbourhood, and 1 at those pixels (shape [B, 1, h, w])."""
        b, c, h, w = y.shape
        n, r, dev = max(1, round(self.fraction * h * w)), self.radius, y.device
        at = torch.rand(b, h * w, generator=gen, device=dev).topk(n, dim=1).indices  # n distinct pixels a crop
        ys, xs, row = at // w, at % w, torch.arange(b, device=dev)[:, None]
        side = 2 * r + 1
        if self.replacement == "neighbour":
            o = torch.randint(0, side * side - 1, (b, n), generator=gen, device=dev)
            o = o + (o >= side * side // 2)  # every offset of the window but the centre
            sy, sx = _reflect(ys + o // side - r, h), _reflect(xs + o % side - r, w)
            values = y[row, :, sy, sx]  # [B, n, C]
        else:
            windows = F.unfold(F.pad(y, (r, r, r, r), mode="reflect"), side)  # [B, C * side^2, h * w]
            windows = windows.view(b, c, side * side, h * w)
            around = torch.cat([windows[:, :, :side * side // 2], windows[:, :, side * side // 2 + 1:]], dim=2)
            values = around.gather(3, at[:, None, None, :].expand(b, c, side * side - 1, n)).median(dim=2).values
            values = values.permute(0, 2, 1)  # [B, n, C]
        masked = y.clone()
        masked[row, :, ys, xs] = values
        mask = torch.zeros(b, 1, h, w, device=dev, dtype=y.dtype)
        mask[row, 0, ys, xs] = 1.0
        return masked, mask

    def train(self, trial, clean, captures, masks, progress):
        y, observed, _ = one_capture(captures, masks, trial.gen, trial.fresh)
        masked, mask = self.mask(y, trial.gen)
        if observed is not None:  # a dropped pixel (Bernoulli) is no target
            mask = mask * observed
        pred = trial.forward(masked)
        loss = trial.loss(pred, y, mask=mask.expand_as(y), progress=progress)
        return loss, ((pred.detach() - y).square() * mask).sum() / mask.expand_as(y).sum().clamp(min=1)


def _reflect(i: torch.Tensor, size: int) -> torch.Tensor:
    """Indices reflected into [0, size) about the edges (no edge repeated): -1 -> 1, size -> size - 2."""
    i = i.abs()
    return torch.where(i > size - 1, 2 * (size - 1) - i, i)
