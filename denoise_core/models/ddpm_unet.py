"""The time-conditioned U-Net of DDPM (Ho et al. 2020), small: called as `model(x, t)`."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from denoise_core.models import MODELS, SizedModel


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (Vaswani et al. 2017, as in DDPM). [B] -> [B, dim]"""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1)


def _groups(c: int) -> int:
    return next(g for g in (32, 16, 8, 4, 2, 1) if c % g == 0)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the time embedding added in between."""

    def __init__(self, c_in: int, c_out: int, t_dim: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(_groups(c_in), c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.temb = nn.Linear(t_dim, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(_groups(c_out), c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(temb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


@MODELS.register("ddpm_unet")
class DDPMUNet(SizedModel):
    """Levels of `width * mult` channels, one ResBlock per level down and up, skip concatenation.

    Input: H and W divisible by 2 ** (len(mults) - 1); `t` is a [B] tensor of timesteps.
    """

    def __init__(self, channels: int = 1, width: int = 32, mults: tuple = (1, 2, 2)):
        super().__init__()
        self.size_multiple = 2 ** (len(mults) - 1)
        t_dim = 4 * width
        self.width = width
        self.t_mlp = nn.Sequential(nn.Linear(width, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.inp = nn.Conv2d(channels, width, 3, padding=1)
        chans = [width * m for m in mults]
        self.down, c = nn.ModuleList(), width
        for co in chans:
            self.down.append(ResBlock(c, co, t_dim))
            c = co
        self.mid = ResBlock(c, c, t_dim)
        self.up = nn.ModuleList()
        for co in reversed(chans):
            self.up.append(ResBlock(c + co, co, t_dim))
            c = co
        self.out = nn.Sequential(nn.GroupNorm(_groups(c), c), nn.SiLU(), nn.Conv2d(c, channels, 3, padding=1))

    def forward(self, x, t):
        self.check_size(x)
        temb = self.t_mlp(timestep_embedding(t, self.width))
        h, skips = self.inp(x), []
        for i, block in enumerate(self.down):
            h = block(h, temb)
            skips.append(h)
            if i < len(self.down) - 1:
                h = F.avg_pool2d(h, 2)
        h = self.mid(h, temb)
        for i, block in enumerate(self.up):
            h = block(torch.cat([h, skips.pop()], 1), temb)
            if i < len(self.up) - 1:
                h = F.interpolate(h, scale_factor=2.0)
        return self.out(h)
