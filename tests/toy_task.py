"""A task in one file, as a user would add one (`task: tests.toy_task` in a study's YAML): deblurring.

The input is the clean crop under a box blur of `kernel` pixels; the network restores it. Nothing else in
the project names this task: the registry imports this module on first use and it registers itself.
`sleep_s` makes every step wait, so a study of this task can run as long as wanted for almost no CPU
(the test suite's bystander study)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from denoise_core.config import CommonConfig
from denoise_core.data import random_crops
from denoise_core.metrics import psnr
from denoise_core.results import Score
from denoise_core.tasks import TASKS, ReportView, Task
from denoise_core.trial import Trial, save_grid

NAME = __name__  # "tests.toy_task": a task outside denoise_core is named by its module path


class DeblurConfig(CommonConfig):
    task: Literal["tests.toy_task"] = NAME
    kernel: int = Field(3, ge=1, le=15)
    sleep_s: float = Field(0.0, ge=0)


def blur(x: torch.Tensor, k: int) -> torch.Tensor:
    """A k x k box blur with reflected borders: [B, C, H, W] -> the same shape."""
    p = k // 2
    return F.avg_pool2d(F.pad(x, (p, k - 1 - p, p, k - 1 - p), mode="reflect"), k, stride=1)


class DeblurTrial(Trial):
    def __init__(self, cfg: DeblurConfig, workdir: Path):
        super().__init__(cfg, workdir)
        self.blurred = {split: blur(clean, cfg.kernel) for split, clean in self.clean.items()}

    def train_step(self, step: int):
        if self.cfg.sleep_s:
            time.sleep(self.cfg.sleep_s)
        clean = random_crops(self.train_data, self.cfg.batch_size, self.cfg.crop, self.gen)
        loss = (self.compiled(blur(clean, self.cfg.kernel)) - clean).square().mean()
        self.optimise(loss)
        return loss, loss

    @torch.no_grad()
    def evaluate(self, final: bool = False, split: str = "val") -> dict:
        self.model.eval()
        out = self.model(self.blurred[split]).clamp(0, 1)
        self.model.train()
        clean = self.clean[split]
        return {"psnr": psnr(out, clean), Score("psnr", input=True).key: psnr(self.blurred[split].clamp(0, 1), clean)}

    @torch.no_grad()
    def final_outputs(self, d: Path) -> dict[str, str]:
        out = self.model(self.blurred["val"]).clamp(0, 1)
        return {"restored": str(save_grid(d / "restored.png", [self.clean["val"], self.blurred["val"], out], n=4))}


def blur_note(view: ReportView) -> list[str]:
    """The report's note of this task, through its hook: the widest blur's cells against the narrowest's."""
    kernels = {c: view.configs[c].kernel for c in view.cells["cell"]}
    if len(set(kernels.values())) < 2:
        return []
    wide, narrow = max(kernels.values()), min(kernels.values())
    mean = lambda k: view.cells[view.cells["cell"].map(kernels) == k]["mean"].mean()
    return [f"Deblurring note: a {wide}x{wide} blur restores to {mean(wide):.2f} dB, a {narrow}x{narrow} blur to "
            f"{mean(narrow):.2f} dB."]


def blur_figure(view: ReportView) -> list:
    """A figure of this task's own, through its hook: the mean PSNR against the blur's width."""
    import plotly.graph_objects as go

    kernels = [view.configs[c].kernel for c in view.cells["cell"]]
    fig = go.Figure(go.Scatter(x=kernels, y=list(view.cells["mean"]), mode="markers"))
    fig.update_layout(title="restored PSNR against the blur kernel", xaxis_title="kernel (pixels)", yaxis_title="dB")
    return [fig]


TASKS.add(NAME, Task(name=NAME, config=DeblurConfig, trial=DeblurTrial, apply=lambda model, cfg, x, sigma: model(x).clamp(0, 1),
                     metrics=lambda cfg: ["psnr"], images=("restored",), images_caption="clean / blurred / restored",
                     notes=blur_note, figures=blur_figure, units={"psnr": "dB"}))
