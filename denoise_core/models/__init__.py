"""Denoising networks by name: `build_model(name, channels=1 or 3, **hparams) -> nn.Module`.

Every model maps [B, C, H, W] to [B, C, H, W]; `ddpm_unet` is called as `model(x, t)`.
`width` scales each one. Each model states the sizes it takes (`size_multiple`, or a
fixed `size`) and raises a ValueError naming the model and the size otherwise.
"""
from __future__ import annotations

import torch
from torch import nn

from denoise_core.registry import Registry

MODELS: Registry[nn.Module] = Registry("model")


def build_model(name: str, channels: int = 1, **hparams) -> nn.Module:
    if channels not in (1, 3):
        raise ValueError(f"channels={channels!r}: models take 1 (grayscale) or 3 (RGB) channels")
    return MODELS.build(name, channels=channels, **hparams)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class SizedModel(nn.Module):
    """Checks that H and W are multiples of `size_multiple` (pooling depth) before forward."""

    size_multiple = 1

    def check_size(self, x: torch.Tensor) -> None:
        h, w = x.shape[-2:]
        m = self.size_multiple
        if h % m or w % m:
            raise ValueError(f"{type(self).__name__} needs H and W divisible by {m}, got {h}x{w}")


# register the models (imports have the side effect of filling MODELS)
from denoise_core.models import classic, ddpm_unet, unets  # noqa: E402,F401
