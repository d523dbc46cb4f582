"""The denoising trial (task `denoise`): noisy crop in, clean (or, Noise2Noise, noisy) crop as the
target. Run it through `denoise_core.tasks.run_trial`, which any task's config dispatches:

    result = run_trial({"noise": "gaussian", "noise_params": {"sigma": 25}}, report)

`report(metrics)` is called at every evaluation; when the metrics carry a "checkpoint" key, it is a
directory the caller may persist (Ray's trainable turns it into a `tune.Checkpoint`). The result
holds the final metrics, the model checkpoint (state dict + config, loadable with
torch.load(weights_only=True)) and a PNG grid of clean / noisy / output validation images.
"""
from __future__ import annotations

from pathlib import Path

import torch

from denoise_core.config import TrialConfig
from denoise_core.data import random_crops, showcase_image
from denoise_core.losses import build_loss
from denoise_core.metrics import psnr, ssim
from denoise_core.noise import NOISES, build_noise
from denoise_core.trial import Trial, save_grid


class DenoiseTrial(Trial):
    def __init__(self, cfg: TrialConfig, workdir: Path):
        super().__init__(cfg, workdir)
        self.noise = build_noise(cfg.noise, **cfg.noise_params)
        self.loss = build_loss(cfg.loss)
        self.noisy = {split: self._noisy_sets(split) for split in self.clean}
        self.val_sets = self.noisy["val"]

    def _noisy_sets(self, split: str) -> dict[str, torch.Tensor]:
        """Noisy inputs of a split, drawn once with the fixed seed: '' for the training noise, one per eval level."""
        cfg = self.cfg
        param = NOISES.get(cfg.noise).param
        noises = {"": self.noise} | {f"_{param}{lvl:g}": build_noise(cfg.noise, **{**cfg.noise_params, param: lvl})
                                     for lvl in cfg.eval_levels}
        return {key: self.noisy_validation(noise, split) for key, noise in noises.items()}

    @torch.no_grad()
    def predict(self, noisy: torch.Tensor, chunk: int = 64) -> torch.Tensor:
        self.model.eval()
        outs = []
        for i in range(0, len(noisy), chunk):
            with self.autocast:
                outs.append(self.model(noisy[i:i + chunk]).float())
        self.model.train()
        # a diverged model's NaNs become 0: its scores are then real (and poor) numbers
        return torch.nan_to_num(torch.cat(outs), nan=0.0).clamp(0, 1)

    def evaluate(self, final: bool = False, split: str = "val") -> dict:
        metrics, clean = {}, self.clean[split]
        for key, noisy in self.noisy[split].items():
            out = self.predict(noisy)
            metrics[f"psnr{key}"] = psnr(out, clean).mean().item()
            metrics[f"ssim{key}"] = ssim(out, clean).mean().item()
            metrics[f"input_psnr{key}"] = psnr(noisy.clamp(0, 1), clean).mean().item()
        if self.cfg.eval_levels:
            levels = [k for k in self.noisy[split] if k]
            metrics["psnr_levels_mean"] = sum(metrics[f"psnr{k}"] for k in levels) / len(levels)
        return metrics

    def train_step(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        clean = random_crops(self.train_data, cfg.batch_size, cfg.crop, self.gen)  # [B, C, crop, crop]
        corrupted = self.noise(clean, generator=self.gen)
        if cfg.target == "noisy":  # Noise2Noise: an independent second corruption of the same crop
            target_c = self.noise(clean, generator=self.gen)
            target, mask = target_c.noisy, target_c.mask
        else:
            target, mask = clean, None
        inp = corrupted.noisy
        if cfg.channels_last:
            inp = inp.contiguous(memory_format=torch.channels_last)
        with self.autocast:
            pred = self.forward(inp)
        pred = pred.float()
        loss = self.loss(pred, target, mask=mask, progress=step / cfg.steps)
        self.optimise(loss)
        return loss, (pred.detach() - target).square().mean()

    def final_outputs(self, d: Path) -> dict[str, str]:
        """grid.png (validation crops: clean / noisy / output) and one whole validation image, clean, noisy
        (the fixed seed) and denoised, as image_clean.png, image_noisy.png, image_output.png."""
        from torchvision.utils import save_image

        cfg = self.cfg
        out = self.predict(self.val_sets[""])
        files = {"grid": str(save_grid(d / "grid.png", [self.val_clean, self.val_sets[""].clamp(0, 1), out]))}
        clean = showcase_image(cfg.dataset, cfg.data_root, cfg.channels, cfg.download).to(self.device)
        size_error = getattr(self.model, "size_error", lambda h, w: None)
        if size_error(*clean.shape[-2:]) is None:  # a fixed-size model (dense autoencoder) shows the grid only
            noisy = self.noise(clean, generator=self.eval_generator()).noisy
            for name, img in (("image_clean", clean), ("image_noisy", noisy.clamp(0, 1)), ("image_output", self.predict(noisy))):
                save_image(img.float().cpu(), str(d / f"{name}.png"))
                files[name] = str(d / f"{name}.png")
        return files
