"""Noise2Fast (Lequyer et al., Nature Machine Intelligence 2022): a network fitted on checkerboard halves of the one
noisy image it denoises, stopped by its agreement with that image.

The image (min-max scaled to [0, 1], as the authors' code does, since the network ends in a sigmoid and fits by binary
cross-entropy) gives four half images: two of H/2 rows (row i takes, column by column, alternately row 2i + 1 and
row 2i) and two of W/2 columns (the same along columns). Each pair of the same orientation is a Noise2Noise pair of
nearly the same content, so the network is fitted on one of the four (input, target) pairs at random per step. Each
step the whole image goes through the network; the fit stops once the output has not come closer (by mean squared
error) to the noisy image for `patience` steps, and the estimate is the mean of the last `average` outputs, scaled
back. Network and hyperparameters as the authors' N2F.py (jason-lequyer/Noise2Fast): four pairs of 3x3 convolutions
of 64 channels with ReLU, a 1x1 convolution and a sigmoid; Adam at lr 1e-3; patience 100; the mean of the last 105
outputs. The authors run colour per channel (N2F_4D.py); here the network takes the channels together. `max_steps`
bounds a fit the rule never stops (the authors' loop has no bound).

The stopping rule reads one number per step from the device: it is the method's own definition.
"""
from __future__ import annotations

from collections import deque

import torch
import torch.nn.functional as F
from torch import nn

from denoise_core.schemes import SCHEMES
from denoise_core.schemes._zero_shot import ZeroShot, init_network


def checkerboard_halves(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(h1, h2, v1, v2) of `y` [B, C, H, W] (an odd last row or column dropped): h1 [B, C, H/2, W] takes in column j
    row 2i + 1 where j is even and row 2i where j is odd, h2 the other pixel of each column pair; v1, v2 the same
    along columns, [B, C, H, W/2]. Together h1 and h2 hold every pixel once, as do v1 and v2.

    >>> y = torch.arange(16.).view(1, 1, 4, 4)
    >>> h1, h2, v1, v2 = checkerboard_halves(y)
    >>> h1[0, 0].tolist(), h2[0, 0].tolist()
    ([[4.0, 1.0, 6.0, 3.0], [12.0, 9.0, 14.0, 11.0]], [[0.0, 5.0, 2.0, 7.0], [8.0, 13.0, 10.0, 15.0]])
    >>> v1[0, 0].tolist(), v2[0, 0].tolist()
    ([[1.0, 3.0], [4.0, 6.0], [9.0, 11.0], [12.0, 14.0]], [[0.0, 2.0], [5.0, 7.0], [8.0, 10.0], [13.0, 15.0]])
    """
    h, w = y.shape[-2] // 2 * 2, y.shape[-1] // 2 * 2
    z = y[..., :h, :w]
    even_col = (torch.arange(w, device=y.device) % 2 == 0)  # [W]
    even_row = (torch.arange(h, device=y.device) % 2 == 0)[:, None]  # [H, 1]
    top, bottom = z[..., 0::2, :], z[..., 1::2, :]  # [B, C, H/2, W]
    left, right = z[..., :, 0::2], z[..., :, 1::2]  # [B, C, H, W/2]
    return (torch.where(even_col, bottom, top), torch.where(even_col, top, bottom),
            torch.where(even_row, right, left), torch.where(even_row, left, right))


class N2FNet(nn.Module):
    """The authors' network: four pairs of 3x3 convolutions with ReLU, a 1x1 convolution, a sigmoid."""

    def __init__(self, channels: int, width: int = 64):
        super().__init__()
        layers, c = [], channels
        for _ in range(8):
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU()]
            c = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(width, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(self.body(x)))


@SCHEMES.register("noise2fast")
class Noise2Fast(ZeroShot):
    """Noise2Fast: a network fitted on an image's checkerboard halves, stopped by its agreement with the image."""

    name, label = "noise2fast", "Noise2Fast"

    def __init__(self, lr: float = 1e-3, patience: int = 100, average: int = 105, max_steps: int = 20_000,
                 width: int = 64):
        for key, v, lo in (("patience", patience, 1), ("average", average, 1), ("max_steps", max_steps, 1),
                           ("width", width, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"target_params: {key}={v!r} must be a whole number >= {lo}")
        if not 0 < lr < 1:
            raise ValueError(f"target_params: lr={lr!r} is the fit's learning rate, in (0, 1) (published: 0.001)")
        self.lr, self.patience, self.average, self.max_steps, self.width = lr, patience, average, max_steps, width

    def network(self, channels: int) -> nn.Module:
        return N2FNet(channels, self.width)

    def plan(self, steps: int | None = None) -> str:
        """>>> Noise2Fast().plan(150)
        'a fit of its own, stopped after 100 steps without gain or at 150 steps (published: no cap)'
        """
        cap = f"at {steps} steps (published: no cap)" if steps else f"at {self.max_steps} steps"
        return f"a fit of its own, stopped after {self.patience} steps without gain or {cap}"

    def fit(self, y: torch.Tensor, seed: int, steps: int | None = None) -> torch.Tensor:
        lo, span = y.min(), (y.max() - y.min()).clamp_min(1e-8)
        x = (y - lo) / span  # [0, 1]: the sigmoid's range, the BCE's targets
        h1, h2, v1, v2 = checkerboard_halves(x)
        pairs = ((h2, h1), (h1, h2), (v1, v2), (v2, v1))  # (input, target), both ways of each orientation
        f = init_network(lambda: self.network(y.shape[1]), seed, y.device)
        opt = torch.optim.Adam(f.parameters(), lr=self.lr)
        gen = torch.Generator().manual_seed(seed)
        recent, best, since = deque(maxlen=self.average), float("inf"), 0
        for _ in range(steps or self.max_steps):
            inp, target = pairs[int(torch.randint(len(pairs), (1,), generator=gen))]
            loss = F.binary_cross_entropy(f(inp), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                out = f(x)
                recent.append(out)
                agreement = float(F.mse_loss(out, x))  # the stopping rule's one read per step
            if agreement < best:
                best, since = agreement, 0
            else:
                since += 1
                if since > self.patience:
                    break
        return (torch.stack(list(recent)).mean(0) * span + lo).clamp(0, 1)
