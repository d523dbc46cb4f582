"""Tasks by name: what a study's `task:` selects, each task in one module of this package.

A task module defines everything about its task and registers it once:

    TASKS.add("denoise", Task(name="denoise", config=DenoiseConfig, trial=DenoiseTrial,
                              apply=apply_denoiser, metrics=denoise_metrics, images=(...), ...))

its config (a `denoise_core.config.CommonConfig` with `task: Literal[name]`), its trial (a
`denoise_core.trial.Trial`), how a trained model is applied to a noisy image, the metrics its
evaluations report (a spec's `metric` is checked against them before anything runs) and the images
its final checkpoint writes for the report. A new task is one new module here; nothing else lists it.

A task outside this package is named by its module path (`task: my_lab.superres`): that module is
imported on first use and registers its `Task` under that same name.

This module is light (no torch until a task is used): the CLI and the spec read task names from it.

    cfg = validate_config({"task": "ddpm", "schedule": "cosine"})   # -> DDPMConfig
    result = run_trial(cfg.model_dump(), report)                     # build_trial(...).run(report)
"""
from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from denoise_core.registry import Registry

TASKS: Registry["Task"] = Registry("task", package=__name__)


@dataclass(frozen=True)
class Grid:
    """The PNGs (names without .png) a task's final checkpoint holds for the report's side-by-side grid: the clean
    image, the model's input and its output, with their PSNRs in the checkpoint's images.json (`ShownImages`)."""

    clean: str = "image_clean"
    input: str = "image_noisy"
    output: str = "image_output"


@dataclass(frozen=True)
class ReportView:
    """What a task's report hooks see of a study (they name the task's own config fields and metrics; the report
    names none): the study's metric, one row per cell with confirm runs (`cells`, a pandas DataFrame: the cell key
    in `cell`, a column per factor, `mean` of the metric over confirm runs, and the mean of each `also` metric), and
    each cell's validated trial config."""

    metric: str
    cells: Any
    configs: dict[str, Any]


@dataclass(frozen=True)
class Task:
    name: str
    config: type  # pydantic model, a CommonConfig whose `task` field is Literal[name]
    trial: type  # a denoise_core.trial.Trial
    apply: Callable  # (model, config, noisy [B, C, H, W] in [0, 1], sigma or None) -> [0, 1]
    metrics: Callable[[Any], list[str]]  # a validated config -> the metric names its evaluations report
    images: tuple[str, ...] = ()  # PNGs (without .png) the final checkpoint holds, in the report's order
    images_caption: str = ""  # what those images show
    needs_sigma: bool = False  # applying the model needs the input's noise level (0-255 scale)
    baselines: bool = False  # classical denoisers compete on its test images (denoise_core.baselines)
    # one sentence for the report: how a config's test scores were made (its protocol and test set)
    test_note: Callable[[Any], str] | None = None
    # the conditions under which a config's test scores exist, for published rows to be matched against:
    # [(noise name, level, metric suffix)], empty where the scoring is not the literature's protocol
    test_conditions: Callable[[Any], list[tuple[str, float, str]]] | None = None
    # checks of a config's data beyond its sources (which `denoise_core.data.check_source` reads), run before
    # anything starts: raises a ValueError of one line
    check_data: Callable[[Any], None] | None = None
    # -- the report's parts that belong to the task ---------------------------------------------------------------
    grid: Grid | None = None  # a side-by-side grid of one image (clean, input, each cell's output); None: `images` shown
    notes: Callable[[ReportView], list[str]] | None = None  # sentences under the table of cells
    figures: Callable[[ReportView], list] | None = None  # plotly figures of its own, after the comparison
    # the config's extra evaluation levels: [(label, level, metric)], e.g. ("sigma15", 15.0, "psnr_sigma15")
    level_metrics: Callable[[Any], list[tuple[str, float, str]]] | None = None
    units: dict[str, str] = field(default_factory=dict)  # a metric's unit, by the metric's first word (psnr: dB)

    def unit(self, metric: str) -> str:
        """The unit of one of its metrics ('' where it has none)."""
        return next((u for k, u in self.units.items() if metric.startswith(k)), "")


def task_names() -> list[str]:
    """The built-in tasks, without importing them (the modules of this package)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def check_task_name(name: str) -> None:
    """A built-in task, or an importable module path; checked without importing torch."""
    if name in task_names():
        return
    if "." in name:
        try:
            if importlib.util.find_spec(name) is not None:
                return
        except (ImportError, ValueError):
            pass
    raise ValueError(f"unknown task {name!r}; known: {', '.join(task_names())} (or a module path that defines one)")


def get_task(name: str) -> Task:
    check_task_name(name)
    if name not in TASKS and "." in name:
        importlib.import_module(name)  # registers itself
    return TASKS.get(name)


def validate_config(config: dict):
    """Validate a trial config of any task (`task` defaults to denoise); one line naming the key on error.
    Each distinct config is validated once per process (a study's cells, probes and trials repeat them): the
    result is a copy of the remembered one."""
    import json

    key = json.dumps({"task": "denoise", **config}, sort_keys=True, default=str)
    return _validated(key).model_copy(deep=True)


@lru_cache(maxsize=4096)
def _validated(key: str):
    import json

    from pydantic import ValidationError

    from denoise_core.errors import one_line_error

    config = json.loads(key)
    task = get_task(config["task"])
    try:
        return task.config.model_validate(config)
    except ValidationError as e:
        raise ValueError(one_line_error(e, model=task.config)) from None


def build_trial(config: dict, workdir: str | Path | None = None):
    """The trial of the config's task, validated, with its data loaded."""
    cfg = validate_config(config)
    workdir = Path(workdir or tempfile.mkdtemp(prefix="denoise-trial-"))
    return get_task(cfg.task).trial(cfg, workdir)


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
