"""What every trial shares: data on the device, the fixed evaluation sets, the model and optimiser,
the training loop with evaluations, divergence detection, and resumable checkpoints. A task's trial
(`denoise_core.tasks.denoise.DenoiseTrial`, `denoise_core.tasks.ddpm.DDPMTrial`) subclasses `Trial`
and defines `train_step`, `evaluate` and `final_outputs`.

The loop reads nothing back from the device between evaluations: each step's loss and its divergence
monitor are summed on the device and read once per evaluation (text noise alone syncs once per chunk of
its drawing rounds, usually once a step: `denoise_core.noise.TextOverlay`). Evaluations return one value per
image; the loop reports their means (validation) and, for confirm runs, the held-out test scores
with their per-image values (`denoise_core.results`).
"""
from __future__ import annotations

import math
import os
import shutil
import time
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch

from denoise_core.data import fixed_crops_and_rows, load_dataset, load_split, split_source, views
from denoise_core.models import build_model, count_parameters
from denoise_core.results import PER_IMAGE, RESTORED, SOURCES, Score

Report = Callable[[dict], None]

# A trial diverges when the mean of its monitored loss over the steps since the last evaluation is
# not finite, is above DIVERGENCE_CEILING, or is more than DIVERGENCE_FACTOR times the lowest such
# mean of any earlier evaluation. The monitored loss is a mean squared error on the data's own
# scale whatever the training loss is (the annealed L0 changes its own scale by design): a zero
# prediction of images in [0, 1] (or of unit noise, for DDPM) scores about 1, so 1e3 is no model
# that learns. An order of magnitude above the best: a healthy run's window means fall or stay flat
# (the lr ramp-down only lowers them), while the late blow-ups seen on GPUs rose by 1e4 and more.
DIVERGENCE_FACTOR = 10.0
DIVERGENCE_CEILING = 1e3


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available on this machine")
    return torch.device(name)


def set_deterministic(device: torch.device) -> None:
    """Same seed, same numbers on CUDA too: deterministic cuDNN and cuBLAS kernels (CPU kernels already are)."""
    if device.type != "cuda":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def lr_factor(step: int, steps: int, rampdown: float) -> float:
    """1 until the last `rampdown` fraction of training, then a cosine ramp to 0 (Noise2Noise).

    >>> [round(lr_factor(s, 100, 0.3), 3) for s in (0, 70, 85, 100)]
    [1.0, 1.0, 0.5, 0.0]
    """
    start = 1.0 - rampdown
    p = step / steps
    if rampdown <= 0 or p < start:
        return 1.0
    return 0.5 + 0.5 * math.cos(math.pi * (p - start) / rampdown)


def save_png(path: Path, image: torch.Tensor) -> Path:
    """One image [C, H, W] or [1, C, H, W] in [0, 1] as an 8-bit PNG, grayscale when C is 1 (a third of
    the bytes of an RGB copy), compressed as far as PNG goes: the report embeds these."""
    from PIL import Image

    x = image.detach().float().clamp(0, 1).cpu()
    x = x[0] if x.dim() == 4 else x
    a = (x * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).save(path, optimize=True)
    return Path(path)


def save_grid(path: Path, rows: list[torch.Tensor], n: int = 6) -> Path:
    """Rows of images into one PNG, `n` images per row."""
    from torchvision.utils import make_grid

    images = torch.cat([r[:n].float().clamp(0, 1).cpu() for r in rows])
    grid = make_grid(images, nrow=min(n, len(rows[0])), padding=2, pad_value=1.0)
    return save_png(path, grid[:1] if images.shape[1] == 1 else grid)


# -- per-process caches: a Ray worker reused for the next trial keeps its data on the device ----
@lru_cache(maxsize=8)
def _dataset(name: str, split: str, root: str | None, channels: int, download: bool, limit: int | None,
             device: str) -> torch.Tensor:
    return load_dataset(name, root, split, channels, download=download, limit=limit).to(device)


@lru_cache(maxsize=8)
def _eval_set(name: str, split: str, root: str | None, channels: int, download: bool, crop: int,
              n: int) -> tuple[torch.Tensor, tuple[str, ...] | None]:
    """The split's fixed evaluation images on the CPU, spread evenly over its source images, and the source
    of each (None where each image is its own)."""
    data, sources = load_split(name, root, split, channels, download=download)
    crops, rows = fixed_crops_and_rows(data, crop, n, sources)
    return crops, (tuple(sources[r] for r in rows) if sources is not None else None)


@lru_cache(maxsize=8)
def eval_crops(name: str, split: str, root: str | None, channels: int, download: bool, crop: int, n: int,
               device: str = "cpu") -> torch.Tensor:
    """The fixed evaluation images [n, C, crop, crop] of a source's split (the same for every trial of a
    study), spread evenly over its source images."""
    return _eval_set(name, split, root, channels, download, crop, n)[0].to(device)


def eval_sources(name: str, split: str, root: str | None, channels: int, download: bool, crop: int,
                 n: int) -> tuple[str, ...] | None:
    """The source image of each of `eval_crops(...)` (None where each image is its own source)."""
    return _eval_set(name, split, root, channels, download, crop, n)[1]


def corrupt_fixed(noise, clean: torch.Tensor, seed: int) -> torch.Tensor:
    """`clean` corrupted by `noise` with a CPU generator at `seed`: the same numbers whichever device
    a trial runs on, so CPU and GPU trials and the classical baselines score the same noisy inputs."""
    return noise(clean.cpu(), generator=torch.Generator().manual_seed(seed)).noisy.to(clean.device)


def fixed_inputs(noise, images: torch.Tensor, seed: int, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A set's (clean, noisy) evaluation images: `images` and their draw of the noise model at `seed`
    (`corrupt_fixed`), or, for real noise (`noise.captured`), the clean view and the first capture of its
    stacked views (`denoise_core.data.views`)."""
    if noise.captured:
        clean, captures = views(images, channels)
        return clean.contiguous(), captures[:, 0].contiguous()
    return images, corrupt_fixed(noise, images, seed)


def mean_of(value) -> float:
    """An evaluation's value as one number: the mean over images of a per-image tensor."""
    return float(value.float().mean()) if isinstance(value, torch.Tensor) else float(value)


class Window:
    """Sums of the training loss and the divergence monitor since the last evaluation, on the device."""

    def __init__(self, device: torch.device):
        self.sums = torch.zeros(2, device=device, dtype=torch.float64)
        self.n = 0

    def add(self, loss: torch.Tensor, monitor: torch.Tensor) -> None:
        self.sums += torch.stack([loss.detach().double(), monitor.detach().double()])
        self.n += 1

    def read(self) -> tuple[float, float]:
        """(mean loss, mean monitor): the one host sync of an evaluation window."""
        loss, monitor = (self.sums / max(self.n, 1)).tolist()
        self.sums.zero_()
        self.n = 0
        return loss, monitor


def divergence(monitor: float, history: list[dict]) -> str | None:
    """Why the window whose monitored loss is `monitor` diverged, or None.

    >>> divergence(0.5, [{"monitor_loss": 0.02}, {"monitor_loss": 0.01}])
    'monitored loss 0.5 is 50x its best so far (0.01)'
    >>> divergence(0.05, [{"monitor_loss": 0.01}]) is None
    True
    >>> divergence(4.42e18, [])
    'monitored loss 4.42e+18 is above 1000'

    """
    if not math.isfinite(monitor):
        return f"monitored loss is {monitor}"
    if monitor > DIVERGENCE_CEILING:
        return f"monitored loss {monitor:.3g} is above {DIVERGENCE_CEILING:g}"
    best = min((h["monitor_loss"] for h in history if "monitor_loss" in h), default=math.inf)
    if monitor > DIVERGENCE_FACTOR * best:
        return f"monitored loss {monitor:.3g} is {monitor / best:.3g}x its best so far ({best:.3g})"
    return None


class Trial:
    def __init__(self, cfg, workdir: Path):
        self._created = time.perf_counter()  # setup_s: from here to the first step (data, model, validation sets)
        self.cfg, self.workdir = cfg, workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.device = pick_device(cfg.device)
        if cfg.deterministic:
            set_deterministic(self.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        dev = str(self.device)
        self.train_data = _dataset(*split_source(cfg.dataset, "train"), cfg.data_root, cfg.channels, cfg.download,
                                   cfg.train_images, dev)
        # the clean evaluation images per split: validation always, test for confirm runs (cfg.test)
        self.clean = {split: eval_crops(*split_source(cfg.dataset, split), cfg.data_root, cfg.channels, cfg.download,
                                        cfg.eval_size, cfg.val_images if split == "val" else cfg.test_images, dev)
                      for split in (("val", "test") if cfg.test else ("val",))}
        self.best: dict | None = None  # the evaluation that scored best on validation: step, value, weights
        self.model = build_model(cfg.model, cfg.channels, **cfg.model_params).to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.compiled = torch.compile(self.model) if cfg.compile else self.model  # what training steps call
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(s, cfg.steps, cfg.rampdown))
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    # -- what a task defines ------------------------------------------------------------------
    def train_step(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimisation step; returns (loss, monitor) as device scalars (see DIVERGENCE_FACTOR)."""
        raise NotImplementedError

    def evaluate(self, final: bool = False, split: str = "val") -> dict:
        """Scores on the split's fixed images (val, or test for confirm runs), keyed by `Score(...).key`
        on the validation split ("psnr", "input_psnr" ...): one value per image, or one number for
        the whole set; `final` adds the costly ones."""
        raise NotImplementedError

    def final_outputs(self, d: Path) -> dict[str, str]:
        """Write the report's images into the final checkpoint directory; returns {name: path}."""
        raise NotImplementedError

    def parameter_count(self) -> int:
        """The trainable parameters of what denoises (the report's cost column)."""
        return count_parameters(self.model)

    # -- shared pieces --------------------------------------------------------------------------
    def eval_generator(self, offset: int = 0) -> torch.Generator:
        """A generator at the fixed validation seed: every trial of a study draws the same numbers."""
        return torch.Generator(device=self.device).manual_seed(self.cfg.val_seed + offset)

    def noisy_validation(self, noise, split: str = "val") -> torch.Tensor:
        """The split's images corrupted by `noise` with the fixed seed (the same for every trial, task and device)."""
        return corrupt_fixed(noise, self.clean[split], self.cfg.val_seed)

    def keep_if_best(self, step: int, metrics: dict) -> None:
        """Remember the weights of the best validation evaluation so far (by `select`), for the test scores."""
        cfg = self.cfg
        if not cfg.test or cfg.select not in metrics or not math.isfinite(metrics[cfg.select]):
            return
        value, sign = metrics[cfg.select], (1 if cfg.select_mode == "max" else -1)
        if self.best is None or sign * value > sign * self.best["value"]:
            self.best = {"step": step, "value": value,
                         "weights": {k: v.detach().clone() for k, v in self.model.state_dict().items()}}

    def test_scores(self) -> dict:
        """Held-out test scores: with the best validation evaluation's weights (the protocol's score:
        early stopping by validation), and with the final weights; the former also per test image."""
        final = self.evaluate(final=True, split="test")
        best = final
        if self.best is not None and self.best["step"] != self.cfg.steps:  # else the best weights are the final ones
            final_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.model.load_state_dict(self.best["weights"])
            best = self.evaluate(final=True, split="test")
            self.model.load_state_dict(final_weights)
        out, per_image = {}, {}
        for key, value in best.items():
            test = Score.parse(key).on("test")
            out[test.key] = mean_of(value)
            if isinstance(value, torch.Tensor) and value.dim() == 1:
                per_image[test.key] = [round(v, 5) for v in value.float().tolist()]
        for key, value in final.items():
            if not Score.parse(key).input:
                out[Score.parse(key).on("test", "final").key] = mean_of(value)
        cfg = self.cfg
        sources = self.test_sources()
        if per_image and sources is not None:
            per_image[SOURCES] = list(sources)
        return out | {PER_IMAGE: per_image, "best_val_step": self.best["step"] if self.best else cfg.steps}

    def test_sources(self) -> tuple[str, ...] | None:
        """The source image of each test image (what the statistics pair and group on), None where each is its own."""
        cfg = self.cfg
        return eval_sources(*split_source(cfg.dataset, "test"), cfg.data_root, cfg.channels, cfg.download,
                            cfg.eval_size, cfg.test_images)

    def optimise(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.sched.step()

    def save_state(self, step: int, history: list[dict]) -> Path:
        d = self.workdir / f"state-{step:07d}"
        d.mkdir(exist_ok=True)
        torch.save({"model": self.model.state_dict(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                    "gen": self.gen.get_state(), "cpu_rng": torch.get_rng_state(), "step": step, "history": history,
                    "best": self.best}, d / "state.pt")
        return d

    def load_state(self, path: Path) -> tuple[int, list[dict]]:
        # weights_only: tensors, numbers, strings and containers only. On shared storage anyone who can write
        # a study's folder could otherwise make every worker that resumes this trial run a pickled callable
        state = torch.load(Path(path) / "state.pt", map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.gen.set_state(state["gen"].to(self.gen.get_state().device))
        torch.set_rng_state(state["cpu_rng"])
        self.best = state.get("best")
        return state["step"], state["history"]

    def finish(self, step: int, history: list[dict]) -> tuple[Path, dict[str, str]]:
        """The final checkpoint directory: model.pt, the report's images and the resumable state."""
        d = self.save_state(step, history)
        torch.save({"state_dict": self.model.state_dict(), "config": self.cfg.model_dump()}, d / "model.pt")
        return d, self.final_outputs(d)

    # -- the loop -------------------------------------------------------------------------------
    def measure(self, step: int, window: Window, seen: int, history: list[dict]) -> dict:
        """The metrics of one evaluation: the window's losses (one host sync), validation, speed."""
        loss, monitor = window.read()
        step_s = time.perf_counter() - self._window_start  # the steps, including their wait for the device
        metrics = {"step": step, "train_loss": loss, "monitor_loss": monitor}
        why = divergence(monitor, history)
        t_eval = time.perf_counter()
        metrics.update({k: mean_of(v) for k, v in self.evaluate(final=step == self.cfg.steps or why is not None).items()})
        if why:
            metrics.update(diverged=1.0, diverged_step=step, diverged_reason=why)
        else:
            self.keep_if_best(step, metrics)
        if self.cfg.test and (step == self.cfg.steps or why):
            metrics.update(self.test_scores())
        metrics.update(images_per_s=seen / step_s, lr=self.sched.get_last_lr()[0],
                       params=self.parameter_count(), step_s=step_s, eval_s=time.perf_counter() - t_eval)
        return metrics

    def run(self, report: Report, resume_from: Path | None = None) -> dict:
        cfg = self.cfg
        step, history = self.load_state(resume_from) if resume_from else (0, [])
        restored = {RESTORED: [dict(h) for h in history]} if resume_from else {}  # sent once, with the first report
        evals_done = step // cfg.eval_every
        window, seen = Window(self.device), 0
        checkpoint_s, last_periodic, final_dir, images, per_image = 0.0, None, None, {}, {}
        setup_s = time.perf_counter() - self._created
        self._window_start = time.perf_counter()
        done = bool(history) and "diverged" in history[-1]  # resumed from a diverged trial's last checkpoint
        while step < cfg.steps and not done:
            window.add(*self.train_step(step))
            step, seen = step + 1, seen + cfg.batch_size
            if step % cfg.eval_every and step != cfg.steps:
                continue
            metrics = self.measure(step, window, seen, history)
            metrics.update(checkpoint_s=checkpoint_s, setup_s=setup_s)
            history.append({k: v for k, v in metrics.items() if k not in ("diverged_reason", PER_IMAGE)})
            per_image = metrics.get(PER_IMAGE, per_image)
            evals_done += 1
            t_ckpt, periodic = time.perf_counter(), None
            if step == cfg.steps or "diverged" in metrics:
                final_dir, images = self.finish(step, history)
                metrics["checkpoint"] = str(final_dir)
            elif cfg.checkpoint_every and evals_done % cfg.checkpoint_every == 0:
                periodic = self.save_state(step, history)
                metrics["checkpoint"] = str(periodic)
            report({**metrics, **restored})  # the caller persists a checkpoint during this call (Tune does)
            restored = {}
            if "checkpoint" in metrics:
                checkpoint_s += time.perf_counter() - t_ckpt  # writing it and handing it over, both
                if last_periodic is not None:
                    shutil.rmtree(last_periodic, ignore_errors=True)
                last_periodic = periodic
            done = "diverged" in metrics  # a result, not a crash: the caller records it as diverged
            self._window_start, seen = time.perf_counter(), 0
        if final_dir is None:  # resumed from the final checkpoint: report the end once more
            final_dir, images = self.finish(step, history)
            per_image = self.test_scores()[PER_IMAGE] if cfg.test else {}
            report({**history[-1], PER_IMAGE: per_image, "checkpoint": str(final_dir), **restored})
        return {"metrics": dict(history[-1]), "history": history, "checkpoint": str(final_dir / "model.pt"),
                "checkpoint_dir": str(final_dir), "diverged": "diverged" in history[-1], PER_IMAGE: per_image,
                "images": images}
