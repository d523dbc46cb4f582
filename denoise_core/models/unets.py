"""U-Nets for direct denoising: a small one for quick studies and the Noise2Noise paper's."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from denoise_core.models import MODELS, SizedModel


@MODELS.register("simple_unet")
class SimpleUNet(SizedModel):
    """Three 5x5 conv stages (full, 1/2, 1/4 resolution), max-pool down, upsample up, additive skips.

    Input: H and W divisible by 4.
    """

    size_multiple = 4

    def __init__(self, channels: int = 1, width: int = 32):
        super().__init__()
        conv = lambda i, o: nn.Sequential(nn.Conv2d(i, o, 5, padding=2), nn.ReLU(inplace=True))  # noqa: E731
        self.enc1, self.enc2, self.enc3 = conv(channels, width), conv(width, width), conv(width, width)
        self.dec2, self.dec1 = conv(width, width), conv(width, width)
        self.out = nn.Conv2d(width, channels, 1)

    def forward(self, x):
        self.check_size(x)
        e1 = self.enc1(x)  # [B, w, H, W]
        e2 = self.enc2(F.max_pool2d(e1, 2))  # [B, w, H/2, W/2]
        e3 = self.enc3(F.max_pool2d(e2, 2))  # [B, w, H/4, W/4]
        d2 = self.dec2(F.interpolate(e3, scale_factor=2.0) + e2)
        d1 = self.dec1(F.interpolate(d2, scale_factor=2.0) + e1)
        return self.out(d1)


@MODELS.register("n2n_unet")
class N2NUNet(SizedModel):
    """The U-Net of Lehtinen et al. 2018 (appendix, table 2): 48-channel encoder with five 2x2
    max-pools, 96-channel decoder with nearest upsampling and concatenated skips, LeakyReLU 0.1,
    linear output. `width` replaces 48 (the decoder uses 2x width, the last stages 64/48 and 32/48 of it).

    Input: H and W divisible by 32.
    """

    size_multiple = 32

    def __init__(self, channels: int = 1, width: int = 48):
        super().__init__()
        w, d = width, 2 * width

        def conv(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.LeakyReLU(0.1, inplace=True))

        self.enc0 = nn.Sequential(conv(channels, w), conv(w, w))  # ENC_CONV0, ENC_CONV1, then POOL1
        self.enc = nn.ModuleList([conv(w, w) for _ in range(4)])  # ENC_CONV2..5, each then POOL
        self.bottom = conv(w, w)  # ENC_CONV6
        self.dec5 = nn.Sequential(conv(2 * w, d), conv(d, d))  # concat with POOL4
        self.dec = nn.ModuleList([nn.Sequential(conv(d + w, d), conv(d, d)) for _ in range(3)])  # 4, 3, 2
        c1a, c1b = max(8, width * 64 // 48), max(4, width * 32 // 48)
        self.dec1 = nn.Sequential(conv(d + channels, c1a), conv(c1a, c1b))
        self.out = nn.Conv2d(c1b, channels, 3, padding=1)  # DEC_CONV1C, linear

    def forward(self, x):
        self.check_size(x)
        skips = [x]
        h = F.max_pool2d(self.enc0(x), 2)  # POOL1
        skips.append(h)
        for i, enc in enumerate(self.enc):  # POOL2..POOL5
            h = F.max_pool2d(enc(h), 2)
            if i < 3:
                skips.append(h)
        h = self.bottom(h)  # [B, w, H/32, W/32]
        up = lambda t: F.interpolate(t, scale_factor=2.0)  # noqa: E731
        h = self.dec5(torch.cat([up(h), skips.pop()], 1))
        for dec in self.dec:
            h = dec(torch.cat([up(h), skips.pop()], 1))
        h = self.dec1(torch.cat([up(h), skips.pop()], 1))
        return self.out(h)
