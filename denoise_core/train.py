"""The denoising trial: a plain function, testable without Ray.

    result = run_trial(config, report)

`report(metrics)` is called at every evaluation; when the metrics carry a "checkpoint"
key, it is a directory the caller may persist (Ray's trainable turns it into a
`tune.Checkpoint`). The returned dict holds the final metrics, the path of the model
checkpoint (state dict + config, loadable with torch.load(weights_only=True)) and a PNG
grid of clean / noisy / output validation crops.
"""
from __future__ import annotations

import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from denoise_core.config import TrialConfig, validate_trial_config
from denoise_core.data import fixed_crops, load_dataset, random_crops
from denoise_core.losses import build_loss
from denoise_core.metrics import psnr, ssim
from denoise_core.models import build_model, count_parameters
from denoise_core.noise import NOISES, build_noise

Report = Callable[[dict], None]


def run_trial(config: dict, report: Report, *, workdir: str | Path | None = None,
              resume_from: str | Path | None = None) -> dict:
    return build_trial(config, workdir).run(report, resume_from)


def build_trial(config: dict, workdir: str | Path | None = None) -> "Trial":
    """The trial of the config's task (`denoise` or `ddpm`), validated, with its data loaded."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="denoise-trial-"))
    if config.get("task", "denoise") == "ddpm":
        from denoise_core.ddpm_train import DDPMTrial, validate_ddpm_config

        return DDPMTrial(validate_ddpm_config(config), workdir)
    return DenoiseTrial(validate_trial_config(config), workdir)


def measure_step_memory(config: dict, steps: int = 2) -> dict | None:
    """Peak GPU memory of a few training steps and one evaluation of this config, with the
    device's total: {"peak_bytes", "total_bytes", "device"}. None when the trial runs on the CPU."""
    trial = build_trial({**config, "steps": max(steps, 2), "checkpoint_every": 0})
    if trial.device.type != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats(trial.device)
    for s in range(steps):
        trial.train_step(s)
    trial.evaluate()
    torch.cuda.synchronize(trial.device)
    props = torch.cuda.get_device_properties(trial.device)
    return {"peak_bytes": torch.cuda.max_memory_reserved(trial.device), "total_bytes": props.total_memory,
            "device": props.name}


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available on this machine")
    return torch.device(name)


def lr_factor(step: int, steps: int, rampdown: float) -> float:
    """1 until the last `rampdown` fraction of training, then a cosine ramp to 0 (Noise2Noise)."""
    start = 1.0 - rampdown
    p = step / steps
    if rampdown <= 0 or p < start:
        return 1.0
    return 0.5 + 0.5 * math.cos(math.pi * (p - start) / rampdown)


def save_grid(path: Path, rows: list[torch.Tensor], n: int = 6) -> Path:
    """Rows of images (clean, noisy, output ...) into one PNG, `n` images per row."""
    from torchvision.utils import save_image

    images = torch.cat([r[:n].float().clamp(0, 1).cpu() for r in rows])
    save_image(images, str(path), nrow=min(n, len(rows[0])), padding=2, pad_value=1.0)
    return path


class Trial:
    """What every trial shares: data as tensors on the device, the model and optimiser, the loop
    with evaluations, periodic resumable checkpoints and the final checkpoint. Subclasses define
    `train_step`, `evaluate` and `final_outputs`."""

    def __init__(self, cfg, workdir: Path):
        self.cfg, self.workdir = cfg, workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.device = pick_device(cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.train_data = load_dataset(cfg.dataset, cfg.data_root, "train", cfg.channels,
                                       download=cfg.download, limit=cfg.train_images).to(self.device)
        self.val_clean = fixed_crops(load_dataset(cfg.dataset, cfg.data_root, "val", cfg.channels,
                                                  download=cfg.download), cfg.crop, cfg.val_images).to(self.device)
        self.model = build_model(cfg.model, cfg.channels, **cfg.model_params).to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if cfg.compile else self.model
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(s, cfg.steps, cfg.rampdown))
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    def eval_generator(self, offset: int = 0) -> torch.Generator:
        """A generator at the fixed validation seed: every trial of a study draws the same numbers."""
        return torch.Generator(device=self.device).manual_seed(self.cfg.val_seed + offset)

    def noisy_validation(self, noise) -> torch.Tensor:
        """The validation crops corrupted by `noise` with the fixed seed (the same for every trial and task)."""
        return noise(self.val_clean, generator=self.eval_generator()).noisy

    def train_step(self, step: int) -> float:
        raise NotImplementedError

    def evaluate(self, final: bool = False) -> dict:
        raise NotImplementedError

    def final_outputs(self, d: Path) -> dict[str, str]:
        """Write the report's images into the final checkpoint directory; returns {name: path}."""
        raise NotImplementedError

    def optimise(self, loss: torch.Tensor, step: int) -> float:
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss ({loss.item()}) at step {step} with lr={self.cfg.lr:g}; the trial stops here")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        return loss.item()

    def save_state(self, step: int, history: list[dict]) -> Path:
        d = self.workdir / f"state-{step:07d}"
        d.mkdir(exist_ok=True)
        torch.save({"model": self.model.state_dict(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                    "gen": self.gen.get_state(), "cpu_rng": torch.get_rng_state(), "step": step, "history": history},
                   d / "state.pt")
        return d

    def load_state(self, path: Path) -> tuple[int, list[dict]]:
        state = torch.load(Path(path) / "state.pt", map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.gen.set_state(state["gen"].to(self.gen.get_state().device))
        torch.set_rng_state(state["cpu_rng"])
        return state["step"], state["history"]

    def finish(self, step: int, history: list[dict]) -> tuple[Path, dict[str, str]]:
        """The final checkpoint directory: model.pt, the report's images and the resumable state."""
        d = self.save_state(step, history)
        torch.save({"state_dict": self.model.state_dict(), "config": self.cfg.model_dump()}, d / "model.pt")
        return d, self.final_outputs(d)

    def run(self, report: Report, resume_from: Path | None = None) -> dict:
        cfg = self.cfg
        step, history = self.load_state(resume_from) if resume_from else (0, [])
        evals_done = step // cfg.eval_every
        losses, t0, seen, final_dir = [], time.perf_counter(), 0, None
        checkpoint_s, last_periodic = 0.0, None  # seconds spent on checkpoints; the last periodic one
        n_params = count_parameters(self.model)
        while step < cfg.steps:
            losses.append(self.train_step(step))
            step, seen = step + 1, seen + cfg.batch_size
            if step % cfg.eval_every and step != cfg.steps:
                continue
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - t0
            metrics = {"step": step, "train_loss": sum(losses) / len(losses), **self.evaluate(final=step == cfg.steps),
                       "images_per_s": seen / elapsed, "lr": self.sched.get_last_lr()[0], "params": n_params,
                       "checkpoint_s": checkpoint_s}
            history.append(dict(metrics))
            evals_done += 1
            t_ckpt, periodic = time.perf_counter(), None
            if step == cfg.steps:
                final_dir, images = self.finish(step, history)
                metrics["checkpoint"] = str(final_dir)
            elif cfg.checkpoint_every and evals_done % cfg.checkpoint_every == 0:
                periodic = self.save_state(step, history)
                metrics["checkpoint"] = str(periodic)
            report(metrics)  # the caller persists a checkpoint during this call (Tune does)
            if "checkpoint" in metrics:
                checkpoint_s += time.perf_counter() - t_ckpt  # writing it and handing it over, both
                if last_periodic is not None:
                    shutil.rmtree(last_periodic, ignore_errors=True)
                last_periodic = periodic
            losses, t0, seen = [], time.perf_counter(), 0
        if final_dir is None:  # resumed from the final checkpoint: report the end once more
            final_dir, images = self.finish(step, history)
            report({**history[-1], "checkpoint": str(final_dir)})
        final = dict(history[-1])
        return {"metrics": final, "history": history, "checkpoint": str(final_dir / "model.pt"),
                "checkpoint_dir": str(final_dir), **images}


class DenoiseTrial(Trial):
    """Train a direct denoiser: noisy crop in, clean (or, Noise2Noise, noisy) crop as the target."""

    def __init__(self, cfg: TrialConfig, workdir: Path):
        super().__init__(cfg, workdir)
        self.noise = build_noise(cfg.noise, **cfg.noise_params)
        self.loss = build_loss(cfg.loss)
        self.val_sets = self._validation_sets()

    def _validation_sets(self) -> dict[str, torch.Tensor]:
        """Noisy validation inputs, drawn once with the fixed seed: '' for the training noise, one per eval level."""
        cfg = self.cfg
        param = NOISES.get(cfg.noise).param
        noises = {"": self.noise} | {f"_{param}{lvl:g}": build_noise(cfg.noise, **{**cfg.noise_params, param: lvl})
                                     for lvl in cfg.eval_levels}
        return {key: self.noisy_validation(noise) for key, noise in noises.items()}

    @torch.no_grad()
    def predict(self, noisy: torch.Tensor, chunk: int = 64) -> torch.Tensor:
        self.model.eval()
        outs = []
        for i in range(0, len(noisy), chunk):
            with self.autocast:
                outs.append(self.model(noisy[i:i + chunk]).float())
        self.model.train()
        return torch.cat(outs).clamp(0, 1)

    def evaluate(self, final: bool = False) -> dict:
        metrics = {}
        for key, noisy in self.val_sets.items():
            out = self.predict(noisy)
            metrics[f"psnr{key}"] = psnr(out, self.val_clean).mean().item()
            metrics[f"ssim{key}"] = ssim(out, self.val_clean).mean().item()
            metrics[f"input_psnr{key}"] = psnr(noisy.clamp(0, 1), self.val_clean).mean().item()
        if self.cfg.eval_levels:
            levels = [k for k in self.val_sets if k]
            metrics["psnr_levels_mean"] = sum(metrics[f"psnr{k}"] for k in levels) / len(levels)
        return metrics

    def train_step(self, step: int) -> float:
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
        return self.optimise(self.loss(pred.float(), target, mask=mask, progress=step / cfg.steps), step)

    def final_outputs(self, d: Path) -> dict[str, str]:
        out = self.predict(self.val_sets[""])
        return {"grid": str(save_grid(d / "grid.png", [self.val_clean, self.val_sets[""].clamp(0, 1), out]))}
