"""Tasks by name: what a study's `task:` selects, in one place.

A task is its config class, its trial class, the images its final checkpoint writes (the report
embeds them) and how a trained model is applied to a noisy image. Configs of every task form one
pydantic discriminated union on `task`. The classes are named as "module:attribute" and imported
on first use, so the registry itself is light: the CLI and the report read it without torch.

    cfg = validate_config({"task": "ddpm", "schedule": "cosine"})   # -> DDPMConfig
    result = run_trial(cfg.model_dump(), report)                     # build_trial(...).run(report)

A new task is one `TASKS.add(...)` below plus its config and trial modules.
"""
from __future__ import annotations

import importlib
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from denoise_core.registry import Registry


def _load(ref: str) -> Any:
    module, attr = ref.split(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Task:
    name: str
    config_ref: str  # "module:ConfigClass", a pydantic model whose `task` field is Literal[name]
    trial_ref: str  # "module:TrialClass", a denoise_core.trial.Trial
    apply_ref: str  # "module:function": (model, config, noisy [B,C,H,W] in [0,1], sigma or None) -> [0,1]
    images: tuple[str, ...]  # PNGs (without .png) the final checkpoint holds, in the report's order
    images_caption: str  # what those images show
    needs_sigma: bool = False  # applying the model needs the input's noise level

    @property
    def config(self) -> type:
        return _load(self.config_ref)

    @property
    def trial(self) -> type:
        return _load(self.trial_ref)

    @property
    def apply(self) -> Callable:
        return _load(self.apply_ref)


TASKS: Registry[Task] = Registry("task")
TASKS.add("denoise", Task("denoise", "denoise_core.config:TrialConfig", "denoise_core.train:DenoiseTrial",
                          "denoise_core.tasks:apply_denoiser", ("image_output", "grid"),
                          "a whole validation image denoised by each cell (the noisy input on the left), "
                          "then validation crops: clean / noisy / output"))
TASKS.add("ddpm", Task("ddpm", "denoise_core.ddpm_train:DDPMConfig", "denoise_core.ddpm_train:DDPMTrial",
                       "denoise_core.ddpm_train:apply_ddpm", ("samples", "progress"),
                       "samples, and one chain from x_T to x_0", needs_sigma=True))


@lru_cache(maxsize=1)
def _config_adapter():
    from typing import Annotated, Union

    from pydantic import Field, TypeAdapter

    configs = tuple(TASKS.get(name).config for name in TASKS.names)
    return TypeAdapter(Annotated[Union[configs], Field(discriminator="task")])  # noqa: UP007


def validate_config(config: dict):
    """Validate a trial config of any task (`task` defaults to denoise); one line naming the key on error."""
    from pydantic import ValidationError

    from denoise_core.errors import one_line_error

    config = {"task": "denoise", **config}
    TASKS.check(config["task"])
    try:
        return _config_adapter().validate_python(config)
    except ValidationError as e:
        raise ValueError(one_line_error(e, drop_prefix=config["task"])) from None


def build_trial(config: dict, workdir: str | Path | None = None):
    """The trial of the config's task, validated, with its data loaded."""
    cfg = validate_config(config)
    workdir = Path(workdir or tempfile.mkdtemp(prefix="denoise-trial-"))
    return TASKS.get(cfg.task).trial(cfg, workdir)


def run_trial(config: dict, report: Callable[[dict], None], *, workdir: str | Path | None = None,
              resume_from: str | Path | None = None) -> dict:
    """One trial as a plain function (Ray's trainable wraps it): reports at every evaluation, returns
    the final metrics, the history, the model checkpoint and the report's images."""
    return build_trial(config, workdir).run(report, resume_from)


def load_model(path: str | Path):
    """A final checkpoint's model (eval mode, CPU) and its validated config."""
    import torch

    from denoise_core.models import build_model

    ckpt = torch.load(Path(path), weights_only=True, map_location="cpu")
    cfg = validate_config(ckpt["config"])
    model = build_model(cfg.model, cfg.channels, **cfg.model_params)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), cfg


def apply_denoiser(model, cfg, noisy, sigma=None):
    """A direct denoiser maps the noisy image to its estimate; it needs no noise level."""
    return model(noisy).clamp(0, 1)


def measure_step_memory(config: dict, steps: int = 2) -> dict | None:
    """Peak GPU memory of a few training steps and one evaluation of this config, with the
    device's total: {"peak_bytes", "total_bytes", "device"}. None when the trial runs on the CPU."""
    import torch

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
