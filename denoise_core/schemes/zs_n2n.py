"""Zero-Shot Noise2Noise (Mansour & Heckel, CVPR 2023): a two-layer network fitted on the one noisy image it denoises.

The image y [1, C, H, W] gives itself a Noise2Noise pair: two half-resolution views d1(y), d2(y), each pixel of which
averages one diagonal of a 2x2 cell (d1: the anti-diagonal, d2: the diagonal). Their noise is independent and their
signal nearly equal. A small residual network f (y - f(y) is the estimate) is fitted with

    L = 1/2 (|d1(y) - D(d2(y))|^2 + |d2(y) - D(d1(y))|^2)          residual loss: each view's estimate towards the other
      + 1/2 (|D(d1(y)) - d1(D(y))|^2 + |D(d2(y)) - d2(D(y))|^2)     consistency: denoise-then-downsample agrees with
                                                                    downsample-then-denoise
    D(z) = z - f(z), |.|^2 the mean squared error,

by Adam, and the estimate is D(y) clipped to [0, 1]. Network, steps and learning rate as the authors' Colab notebook
(linked from the paper's abstract, its hyperparameters mirrored in SylvanMiao/ZS-Noise2Noise-pytorch-implementation
parameters.yaml): conv 3x3 (C -> 48), LeakyReLU 0.2, conv 3x3 (48 -> 48), LeakyReLU 0.2, conv 1x1 (48 -> C), about 22k
parameters for colour; 3000 steps at lr 1e-3, halved every 1000.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from denoise_core.schemes import SCHEMES
from denoise_core.schemes._zero_shot import ZeroShot, init_network


def pair_downsample(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two half-resolution views of `y` [B, C, H, W]: d1 averages each 2x2 cell's anti-diagonal (top-right,
    bottom-left), d2 its diagonal (top-left, bottom-right); an odd last row or column is dropped.

    >>> y = torch.arange(16.).view(1, 1, 4, 4)
    >>> [v.flatten().tolist() for v in pair_downsample(y)]
    [[2.5, 4.5, 10.5, 12.5], [2.5, 4.5, 10.5, 12.5]]
    >>> [v.flatten().tolist() for v in pair_downsample(torch.tensor([[[[1., 2.], [3., 4.]]]]))]
    [[2.5], [2.5]]
    >>> [v.flatten().tolist() for v in pair_downsample(torch.tensor([[[[1., 0.], [0., 0.]]]]))]
    [[0.0], [0.5]]
    """
    c = y.shape[1]
    anti = torch.tensor([[0.0, 0.5], [0.5, 0.0]], dtype=y.dtype, device=y.device).expand(c, 1, 2, 2)
    diag = torch.tensor([[0.5, 0.0], [0.0, 0.5]], dtype=y.dtype, device=y.device).expand(c, 1, 2, 2)
    return F.conv2d(y, anti, stride=2, groups=c), F.conv2d(y, diag, stride=2, groups=c)


class ZSN2NNet(nn.Module):
    """The paper's network: two 3x3 convolutions with LeakyReLU, a 1x1 to the image's channels (predicts the noise)."""

    def __init__(self, channels: int, width: int = 48):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.conv3 = nn.Conv2d(width, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.conv1(x), 0.2)
        x = F.leaky_relu(self.conv2(x), 0.2)
        return self.conv3(x)


def zs_n2n_losses(f: nn.Module, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(residual, consistency) of the noise predictor `f` on the noisy image `y` [1, C, H, W] (the module's equation)."""
    d1, d2 = pair_downsample(y)
    e1, e2 = d1 - f(d1), d2 - f(d2)  # each view's estimate, D(d1(y)) and D(d2(y))
    residual = 0.5 * (F.mse_loss(e1, d2) + F.mse_loss(e2, d1))
    c1, c2 = pair_downsample(y - f(y))  # d1(D(y)), d2(D(y))
    consistency = 0.5 * (F.mse_loss(e1, c1) + F.mse_loss(e2, c2))
    return residual, consistency


@SCHEMES.register("zs_n2n")
class ZeroShotNoise2Noise(ZeroShot):
    """Zero-Shot Noise2Noise: a 22k-parameter network fitted on each noisy image's own downsampled pair."""

    name, label = "zs_n2n", "ZS-N2N"
    PUBLISHED_STEPS = 3000

    def __init__(self, steps: int = PUBLISHED_STEPS, lr: float = 1e-3, lr_every: int = 1000, lr_gamma: float = 0.5,
                 width: int = 48, consistency: bool = True):
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 100_000:
            raise ValueError(f"target_params: steps={steps!r} is the Adam steps per image, 1 to 100000 (published: {self.PUBLISHED_STEPS})")
        if not 0 < lr < 1:
            raise ValueError(f"target_params: lr={lr!r} is the fit's learning rate, in (0, 1) (published: 0.001)")
        if isinstance(lr_every, bool) or not isinstance(lr_every, int) or lr_every < 1 or not 0 < lr_gamma <= 1:
            raise ValueError(f"target_params: the lr is multiplied by lr_gamma in (0, 1] every lr_every >= 1 steps, "
                             f"got {lr_gamma!r} every {lr_every!r}")
        if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= 512:
            raise ValueError(f"target_params: width={width!r} is the network's channels, 1 to 512 (published: 48)")
        self.steps, self.lr, self.lr_every, self.lr_gamma, self.width = steps, lr, lr_every, lr_gamma, width
        self.consistency = bool(consistency)  # False: the residual loss alone (the paper's ablation)

    def network(self, channels: int) -> nn.Module:
        return ZSN2NNet(channels, self.width)

    def plan(self, steps: int | None = None) -> str:
        """>>> ZeroShotNoise2Noise().plan(150)
        'a fit of its own: 150 Adam steps (published: 3000)'
        """
        published = f" (published: {self.PUBLISHED_STEPS})"
        if steps:
            return f"a fit of its own: {steps} Adam steps{published}"
        return f"a fit of its own: {self.steps} Adam steps" + (" (as published)" if self.steps == self.PUBLISHED_STEPS else published)

    def fit(self, y: torch.Tensor, seed: int, steps: int | None = None) -> torch.Tensor:
        steps = steps or self.steps
        every = max(1, round(self.lr_every * steps / self.steps))  # the lr's halvings at the same fractions of the fit
        f = init_network(lambda: self.network(y.shape[1]), seed, y.device)
        opt = torch.optim.Adam(f.parameters(), lr=self.lr)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=every, gamma=self.lr_gamma)
        for _ in range(steps):
            residual, consistency = zs_n2n_losses(f, y)
            loss = residual + consistency if self.consistency else residual
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        with torch.no_grad():
            return (y - f(y)).clamp(0, 1)
