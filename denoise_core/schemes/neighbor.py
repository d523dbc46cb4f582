"""Neighbor2Neighbor (Huang et al. 2021): two sub-images of one noisy capture, one towards the other.

Each 2x2 cell of a crop gives one pixel to each sub-image, two horizontally or vertically adjacent pixels chosen at
random (never the same one, never diagonal), so the two sub-images are noisy views of nearly the same content with
independent noise. The network maps the first to the second, plus the paper's regulariser on the whole image's
output (computed without gradient), weighted by gamma; the reference code ramps that weight linearly from 0 to gamma
over training (`ramp: linear`), which is the default here.

The network trains on the sub-images, so each crop is cut at twice the side of `crop` (`crop_scale`): the network's
training input is `crop` x `crop`, as every other scheme's (the paper's 256x256 crops give 128x128 sub-images), and
the regulariser runs it on the whole crop without gradient.
"""
from __future__ import annotations

import torch

from denoise_core.schemes import SCHEMES, Scheme, one_capture

# the pixel pairs of a 2x2 cell (0 1 / 2 3) the reference code draws from: adjacent, in either order
PAIRS = ((0, 1), (0, 2), (1, 3), (2, 3), (1, 0), (2, 0), (3, 1), (3, 2))


@SCHEMES.register("neighbor")
class Neighbor2Neighbor(Scheme):
    """Neighbor2Neighbor: one sub-image of a noisy capture towards its neighbour sub-image, with the regulariser."""

    clean, captures, needs = False, 1, "one capture of each image"
    crop_scale = 2  # crops of twice the side: sub-images of `crop` x `crop`

    def __init__(self, gamma: float = 2.0, ramp: str = "linear"):
        if not 0 <= gamma <= 100:
            raise ValueError(f"target_params: gamma={gamma!r} is the regulariser's weight, 0 to 100")
        if ramp not in ("linear", "none"):
            raise ValueError(f"target_params: ramp={ramp!r} is linear (0 to gamma over training) or none")
        self.gamma, self.ramp = gamma, ramp

    def check(self, cfg) -> None:
        from denoise_core.data import TILE
        from denoise_core.models import build_model

        side = cfg.train_side
        if side > TILE:
            raise ValueError(f"target neighbor cuts crops of twice the side: crop={cfg.crop} asks for {side}x{side}, "
                             f"larger than the {TILE}x{TILE} training tiles; use crop {TILE // 2} or less")
        model = build_model(cfg.model, cfg.channels, **cfg.model_params)
        err = getattr(model, "size_error", lambda h, w: None)(side, side)
        if err:
            raise ValueError(f"target neighbor runs its regulariser on the whole {side}x{side} crop: {err}")

    @staticmethod
    def pairs(b: int, h: int, w: int, gen: torch.Generator, device) -> torch.Tensor:
        """[B, h/2, w/2, 2]: for every 2x2 cell, the positions (0 to 3) of its two sub-image pixels."""
        choice = torch.randint(0, len(PAIRS), (b, h // 2, w // 2), generator=gen, device=device)
        return torch.tensor(PAIRS, device=device)[choice]

    @staticmethod
    def sub(y: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """The sub-image [B, C, h/2, w/2] of `y` [B, C, h, w] taking, in each 2x2 cell, the pixel at `pos` [B, h/2, w/2]."""
        b, c, h, w = y.shape
        cells = y.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h // 2, w // 2, 4)
        return cells.gather(4, pos[:, None, :, :, None].expand(b, c, h // 2, w // 2, 1)).squeeze(4)

    def train(self, trial, clean, captures, masks, progress):
        y, _, _ = one_capture(captures, masks, trial.gen, trial.fresh)
        b, _, h, w = y.shape
        p = self.pairs(b, h, w, trial.gen, y.device)
        y1, y2 = self.sub(y, p[..., 0]), self.sub(y, p[..., 1])
        out1 = trial.forward(y1)
        with torch.no_grad():
            whole = trial.forward(y)
        weight = self.gamma * (progress if self.ramp == "linear" else 1.0)
        loss = trial.loss(out1, y2, progress=progress) + weight * trial.loss(
            out1 - y2, self.sub(whole, p[..., 0]) - self.sub(whole, p[..., 1]), progress=progress)
        return loss, (out1.detach() - y2).square().mean()
