"""Training losses: l1, l2 and the annealed L0 of Noise2Noise (Lehtinen et al. 2018).

    loss = build_loss("l0")
    value = loss(pred, target, mask=None, progress=0.3)

`mask` (1 = observed) restricts any loss to observed pixels: with Bernoulli noise the
dropped pixels carry no information about the clean image, so they must not pull the
prediction towards zero.
"""
from __future__ import annotations

import torch

from denoise_core.registry import Registry

LOSSES: Registry["Loss"] = Registry("loss")
L0_EPS = 1e-8


def build_loss(name: str, **params) -> "Loss":
    """A loss by name; `mask` (1 = observed) limits it to observed pixels.

    >>> pred, target = torch.zeros(1, 1, 1, 2), torch.tensor([[[[1.0, 3.0]]]])
    >>> build_loss("l1")(pred, target).item(), build_loss("l2")(pred, target).item()
    (2.0, 5.0)
    >>> build_loss("l2")(pred, target, mask=torch.tensor([[[[1.0, 0.0]]]])).item()   # only the observed pixel
    1.0
    >>> l0 = build_loss("l0")
    >>> l0.gamma(0.0), l0.gamma(0.5), l0.gamma(1.0)     # annealed from L2 towards a mode seeker
    (2.0, 1.0, 0.0)
    """
    return LOSSES.build(name, **params)


class Loss:
    def elementwise(self, residual: torch.Tensor, progress: float) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def __call__(self, pred, target, *, mask=None, progress: float = 0.0) -> torch.Tensor:
        per_pixel = self.elementwise((pred - target).float(), progress)
        if mask is None:
            return per_pixel.mean()
        mask = mask.to(per_pixel.dtype).expand_as(per_pixel)
        return (per_pixel * mask).sum() / mask.sum().clamp(min=1.0)


@LOSSES.register("l1")
class L1(Loss):
    """Mean absolute error |pred - target|: its minimiser is the median of the targets (Lehtinen et al. 2018)."""

    def elementwise(self, residual, progress):
        return residual.abs()


@LOSSES.register("l2")
class L2(Loss):
    """Mean squared error (pred - target)^2: its minimiser is the mean of the targets, so Noise2Noise may train on it."""

    def elementwise(self, residual, progress):
        return residual.square()


@LOSSES.register("l0")
class AnnealedL0(Loss):
    """(|pred - target| + eps) ** gamma, gamma = 2 (1 - progress): L2 at the start, a mode seeker at the end."""

    def __init__(self, final_gamma: float = 0.0):
        self.final_gamma = final_gamma

    def gamma(self, progress: float) -> float:
        p = min(max(progress, 0.0), 1.0)
        return 2.0 + (self.final_gamma - 2.0) * p

    def elementwise(self, residual, progress):
        return (residual.abs() + L0_EPS) ** self.gamma(progress)
