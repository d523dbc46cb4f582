"""Task `ddpm`: train `ddpm_unet` under a noise schedule, report the likelihood bound, denoising PSNR
and samples. A plain function like the denoising trial, testable without Ray.

    result = run_trial({"task": "ddpm", "schedule": "cosine", "timesteps": 100}, report)   # denoise_core.tasks

Every evaluation reports `train_loss`, `bits_per_dim` (the variational bound on the validation
images, 8-bit), `psnr_sigma{15,25,50}` (one x0 prediction from the matching timestep, on the
same validation crops and noise seed the denoising studies use) and `images_per_s`. The final
test evaluation adds `psnr_reverse_sigma{...}` (the reverse process from the matching timestep) and
writes `samples.png` (samples, ancestral over all T by default, or DDIM) and `progress.png`
(one chain from x_T to x_0).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, field_validator, model_validator

from denoise_core.config import CommonConfig
from denoise_core.data import random_crops
from denoise_core.diffusion import GaussianDiffusion, build_schedule
from denoise_core.metrics import psnr
from denoise_core.noise import build_noise
from denoise_core.results import Score
from denoise_core.tasks import TASKS, ReportView, Task
from denoise_core.trial import Trial, save_grid


class DDPMConfig(CommonConfig):
    """One DDPM trial. Defaults train on the bundled digits in about a minute on a CPU."""

    task: Literal["ddpm"] = "ddpm"
    model: str = "ddpm_unet"
    model_params: dict = Field(default_factory=lambda: {"width": 16, "mults": [1, 2]})
    schedule: str = "linear"
    schedule_params: dict = Field(default_factory=dict)
    timesteps: int = Field(1000, ge=2)
    prediction: Literal["eps", "x0", "v"] = "eps"
    lr: float = Field(2e-4, gt=0, lt=1)
    rampdown: float = Field(0.0, ge=0, le=1)  # DDPM trains at a constant rate
    batch_size: int = Field(32, ge=1)
    crop: int = Field(32, ge=8)
    dataset: str | dict[str, str] = "digits"
    eval_sigmas: list[float] = Field(default_factory=lambda: [15.0, 25.0, 50.0])  # on the 0-255 scale
    vlb_timesteps: int = Field(0, ge=0)  # 0: the bound over all T terms; K: stratified estimate from K terms
    n_samples: int = Field(16, ge=1)
    sampler: Literal["ancestral", "ddim"] = "ancestral"  # for the samples grid and the progress strip
    sample_steps: int = Field(50, ge=1)  # DDIM's steps (ancestral always takes all T)

    @field_validator("model")
    @classmethod
    def _time_conditioned(cls, v):
        if v != "ddpm_unet":
            raise ValueError(f"task ddpm trains the time-conditioned ddpm_unet, not {v!r}")
        return v

    @model_validator(mode="after")
    def _ddpm(self):
        try:
            build_schedule(self.schedule, self.timesteps, **self.schedule_params)  # name, T and parameters
        except (TypeError, AssertionError) as e:  # a schedule parameter the schedule does not take
            raise ValueError(f"schedule: {e}") from None
        for s in self.eval_sigmas:
            build_noise("gaussian", sigma=s)
        return self


def ddpm_metrics(cfg: DDPMConfig) -> list[str]:
    sigmas = [f"sigma{s:g}" for s in cfg.eval_sigmas]
    return ["bits_per_dim", "psnr_levels_mean", *(f"psnr_{s}" for s in sigmas), *(f"psnr_reverse_{s}" for s in sigmas)]


def ddpm_level_metrics(cfg: DDPMConfig) -> list[tuple[str, float, str]]:
    """One-step denoising PSNR at each evaluation sigma: ('sigma15', 15.0, 'psnr_sigma15') ..."""
    return [(f"sigma{s:g}", float(s), f"psnr_sigma{s:g}") for s in cfg.eval_sigmas]


def x0_note(view: ReportView) -> list[str]:
    """Studies that compare what the network predicts: why x0-prediction's bound is far above the others', with the
    study's own numbers (only where it is far above)."""
    s = view.cells
    x0 = s[[view.configs[c].prediction == "x0" for c in s["cell"]]] if len(s) else s
    rest = s[~s["cell"].isin(x0["cell"])] if len(s) else s
    if x0.empty or rest.empty or view.metric != "bits_per_dim" or not x0["mean"].min() > rest["mean"].max():
        return []
    text = (f"Why the x0-prediction cells' {view.metric} ({x0['mean'].min():.3g} to {x0['mean'].max():.3g}) is far above "
            f"the other cells' ({rest['mean'].min():.3g} to {rest['mean'].max():.3g}): trained with the unweighted loss on "
            "x0 (L_simple on x0), a network spends as much effort on large t as on the smallest t, where the bound divides "
            "its x0 error by the tiny posterior variance beta-tilde_t; eps- and v-prediction weight small t far more (an "
            "eps error is an x0 error times sqrt(1 - alpha-bar) / sqrt(alpha-bar)). It is a property of the objective, "
            "not a bug in the bound.")
    col = next((m for m in s.columns if m.startswith("psnr_sigma")), None)
    if col is not None:
        text += (f" Their one-step denoising is worse too at this budget ({col} {x0[col].mean():.1f} dB against "
                 f"{rest[col].mean():.1f} dB): a network that predicts x0 must rebuild the image, while one that predicts "
                 "eps or v starts from the noisy input itself.")
    return [text]


def schedule_figures(view: ReportView) -> list:
    """The cells' noise schedules: alpha-bar and log-SNR over normalised time, one line per schedule and T (solid:
    the largest T)."""
    import numpy as np
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    names = sorted({cfg.schedule for cfg in view.configs.values()})
    timesteps = sorted({cfg.timesteps for cfg in view.configs.values()})
    fig = make_subplots(rows=1, cols=2, subplot_titles=("alpha-bar", "log SNR"))
    for name, T in ((n, t) for n in names for t in timesteps):
        ab = torch.cumprod(1 - build_schedule(name, T), 0).numpy()
        x = np.arange(1, T + 1) / T
        line = dict(color=qualitative.Plotly[names.index(name) % len(qualitative.Plotly)],
                    dash="solid" if T == max(timesteps) else "dot")
        fig.add_scatter(x=x, y=ab, name=f"{name} T={T}", legendgroup=f"{name}{T}", line=line, row=1, col=1)
        fig.add_scatter(x=x, y=np.log(ab / (1 - ab)), name=f"{name} T={T}", legendgroup=f"{name}{T}", line=line,
                        showlegend=False, row=1, col=2)
    fig.update_xaxes(title_text="t / T")
    fig.update_yaxes(title_text="alpha-bar", col=1)
    fig.update_yaxes(title_text="log SNR", col=2)
    fig.update_layout(title="noise schedules (solid: the largest T)", height=380)
    return [fig]


def to_model_scale(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] images to the [-1, 1] scale DDPM works in."""
    return 2 * x - 1


def from_model_scale(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] back to [0, 1] images, clipped."""
    return (x.clamp(-1, 1) + 1) / 2


def denoise_image(diffusion: GaussianDiffusion, model, noisy: torch.Tensor, sigma: float, *, reverse: bool = False,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Denoise [0, 1] images carrying Gaussian noise of std `sigma` on the 0-255 scale; returns [0, 1] images.
    In the model's [-1, 1] scale that noise has std 2 sigma / 255."""
    out = diffusion.denoise(model, to_model_scale(noisy), 2 * sigma / 255, reverse=reverse, generator=generator)
    return from_model_scale(out)


def apply_ddpm(model, cfg: DDPMConfig, noisy: torch.Tensor, sigma: float | None) -> torch.Tensor:
    """A DDPM denoises Gaussian noise of a known level `sigma` (0-255 scale) by one x0 prediction
    from the matching timestep."""
    if sigma is None:
        raise ValueError("a DDPM denoises Gaussian noise of a known level: pass --sigma (0-255 scale)")
    d = GaussianDiffusion(build_schedule(cfg.schedule, cfg.timesteps, **cfg.schedule_params), cfg.prediction)
    return denoise_image(d, model, noisy, sigma)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """8-bit data, as the discretized decoder assumes (DDPM section 3.3)."""
    return torch.round(x.clamp(0, 1) * 255) / 255


class DDPMTrial(Trial):
    def __init__(self, cfg: DDPMConfig, workdir: Path):
        super().__init__(cfg, workdir)
        self.diffusion = GaussianDiffusion(build_schedule(cfg.schedule, cfg.timesteps, **cfg.schedule_params),
                                           cfg.prediction).to(self.device)
        self.x0 = {split: to_model_scale(quantize(clean)) for split, clean in self.clean.items()}
        # the denoising studies' evaluation inputs: same crops, same seed
        self.noisy = {split: {s: self.noisy_validation(build_noise("gaussian", sigma=s), split) for s in cfg.eval_sigmas}
                      for split in self.clean}

    def net(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.autocast:
            return self.compiled(x, t).float()

    def train_step(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        x0 = to_model_scale(random_crops(self.train_data, self.cfg.batch_size, self.cfg.crop, self.gen))
        loss = self.diffusion.training_loss(self.net, x0, generator=self.gen)  # an MSE: its own monitor
        self.optimise(loss)
        return loss, loss

    @torch.no_grad()
    def evaluate(self, final: bool = False, split: str = "val") -> dict:
        cfg, d, clean = self.cfg, self.diffusion, self.clean[split]
        self.model.eval()
        scores = {"bits_per_dim": d.bits_per_dim(self.net, self.x0[split], generator=self.eval_generator(),
                                                  timesteps=cfg.vlb_timesteps)}  # [N]
        for s, noisy in self.noisy[split].items():
            metric = f"psnr_sigma{s:g}"
            scores[metric] = psnr(denoise_image(d, self.net, noisy, s), clean)
            scores[Score(metric, input=True).key] = psnr(noisy.clamp(0, 1), clean)
            scores[f"t_sigma{s:g}"] = d.timestep_for_sigma(2 * s / 255)
            if final and split == "test":  # the costly reverse chain only where findings read it
                rev = denoise_image(d, self.net, noisy, s, reverse=True, generator=self.eval_generator(1))
                scores[f"psnr_reverse_sigma{s:g}"] = psnr(rev, clean)
        scores["psnr_levels_mean"] = torch.stack([scores[f"psnr_sigma{s:g}"] for s in cfg.eval_sigmas]).mean(0)
        scores[Score("psnr_levels_mean", input=True).key] = torch.stack(
            [scores[Score(f"psnr_sigma{s:g}", input=True).key] for s in cfg.eval_sigmas]).mean(0)
        self.model.train()
        return scores

    @torch.no_grad()
    def final_outputs(self, d: Path) -> dict[str, str]:
        cfg = self.cfg
        self.model.eval()
        shape = (cfg.n_samples, cfg.channels, cfg.crop, cfg.crop)
        samples, chain = self.diffusion.sample(self.net, shape, generator=self.eval_generator(2), device=self.device,
                                               method=cfg.sampler, steps=cfg.sample_steps, keep=10)
        self.model.train()
        n = max(1, int(cfg.n_samples ** 0.5))
        rows = [from_model_scale(samples[i:i + n]) for i in range(0, len(samples) - n + 1, n)]
        strip = torch.cat([from_model_scale(x[:1]) for x in chain])
        return {"samples": str(save_grid(d / "samples.png", rows, n=n)),
                "progress": str(save_grid(d / "progress.png", [strip], n=len(strip)))}


TASKS.add("ddpm", Task(
    name="ddpm", config=DDPMConfig, trial=DDPMTrial, apply=apply_ddpm, metrics=ddpm_metrics,
    images=("samples", "progress"), images_caption="samples, and one chain from x_T to x_0", needs_sigma=True,
    notes=x0_note, figures=schedule_figures, level_metrics=ddpm_level_metrics,
    units={"bits_per_dim": "bits/dim", "psnr": "dB"}))
