"""Per-image PSNR and SSIM, on torchmetrics' functional implementations.

Our conventions: one value per image ([B] tensor), data_range 1.0, SSIM with a
Gaussian window of 11 pixels and sigma 1.5 (Wang et al. 2004), computed in float32
and averaged only where the window lies inside the image (as skimage and the
paper do; torchmetrics' own mean also counts the reflect-padded border).
"""
from __future__ import annotations

import torch

SSIM_WINDOW = 11  # the Gaussian window's size in pixels (sigma 1.5)


def _check(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(f"expected two [B, C, H, W] tensors of one shape, got {tuple(pred.shape)} and {tuple(target.shape)}")


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB per image, [B]."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    _check(pred, target)
    return peak_signal_noise_ratio(
        pred.float(), target.float(), data_range=data_range, reduction="none", dim=(1, 2, 3)
    )


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM per image, [B]; images must be at least 11x11."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check(pred, target)
    if min(pred.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"ssim needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {tuple(pred.shape[-2:])}")
    _, ssim_map = structural_similarity_index_measure(
        pred.float(), target.float(), gaussian_kernel=True, kernel_size=SSIM_WINDOW, sigma=1.5,
        data_range=data_range, reduction="none", return_full_image=True,
    )  # [B, C, H, W]
    r = SSIM_WINDOW // 2
    return ssim_map[..., r:-r, r:-r].flatten(1).mean(1)
