"""Denoising networks by name: `build_model(name, channels=1 or 3, **hparams) -> nn.Module`.

Every model maps [B, C, H, W] to [B, C, H, W]; `ddpm_unet` is called as `model(x, t)`.
`width` scales each one. Each model states the sizes it takes (`size_error`: a multiple of
`size_multiple`, or one fixed size) and raises a ValueError naming the model and the size otherwise.

A new model is one module in this package that registers it with `@MODELS.register("name")`;
the registry imports the package's modules on first use, so nothing else lists them.
"""
from __future__ import annotations

import inspect
import json
from functools import lru_cache

import torch
from torch import nn

from denoise_core.registry import Registry

MODELS: Registry[nn.Module] = Registry("model", package="denoise_core.models")


def build_model(name: str, channels: int = 1, **hparams) -> nn.Module:
    if channels not in (1, 3):
        raise ValueError(f"channels={channels!r}: models take 1 (grayscale) or 3 (RGB) channels")
    return MODELS.build(name, channels=channels, **hparams)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def check_model_params(name: str, params: dict) -> None:
    """Bind `params` against the model builder's signature: a misspelt or unknown key fails here,
    naming the model and what it takes, not inside a trial.

    >>> check_model_params("simple_unet", {"widht": 8})
    Traceback (most recent call last):
    ValueError: model_params: simple_unet takes no 'widht'; it takes width
    """
    sig = inspect.signature(MODELS.get(name))
    takes = [p for p in sig.parameters if p != "channels"]
    unknown = [k for k in params if k not in takes or k == "channels"]
    if unknown:
        raise ValueError(f"model_params: {name} takes no {unknown[0]!r}; it takes {', '.join(takes)}")


@lru_cache(maxsize=256)
def _size_error(name: str, channels: int, crop: int, params_json: str) -> str | None:
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = build_model(name, channels, **json.loads(params_json))
    return model.size_error(crop, crop) if isinstance(model, SizedModel) else None


def crop_error(name: str, channels: int, crop: int, params: dict) -> str | None:
    """Why model `name` built with `params` cannot take crop x crop inputs, or None when it can.

    >>> crop_error("simple_unet", 1, 30, {"width": 8})
    'SimpleUNet needs H and W divisible by 4, got 30x30'
    """
    try:
        return _size_error(name, channels, crop, json.dumps(params, sort_keys=True))
    except (TypeError, ValueError, RuntimeError) as e:
        return f"model_params: {name} cannot be built with {params}: {e}"


class SizedModel(nn.Module):
    """Checks that H and W are multiples of `size_multiple` (pooling depth) before forward."""

    size_multiple = 1

    def size_error(self, h: int, w: int) -> str | None:
        """Why this model cannot take an H x W input, or None when it can."""
        m = self.size_multiple
        if h % m or w % m:
            return f"{type(self).__name__} needs H and W divisible by {m}, got {h}x{w}"
        return None

    def check_size(self, x: torch.Tensor) -> None:
        err = self.size_error(*x.shape[-2:])
        if err:
            raise ValueError(err)
