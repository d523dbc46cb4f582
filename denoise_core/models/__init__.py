"""Denoising networks by name: `build_model(name, channels=1 or 3, **hparams) -> nn.Module`.

Every model maps [B, C, H, W] to [B, C, H, W]; `ddpm_unet` is called as `model(x, t)`.
`width` scales each one. Each model states the sizes it takes (`size_error`: a multiple of
`size_multiple`, or one fixed size) and raises a ValueError naming the model and the size otherwise.
"""
from denoise_core.models.base import MODELS, SizedModel, build_model, check_model_params, count_parameters, crop_error
from denoise_core.models import classic, ddpm_unet, unets  # noqa: E402,F401 - each registers its models

__all__ = ["MODELS", "SizedModel", "build_model", "check_model_params", "count_parameters", "crop_error"]
