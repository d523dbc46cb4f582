"""What every trial's configuration has, whatever its task: plain data, validated, unknown keys
rejected. Each task's config (`denoise_core.tasks.*`) adds its own keys to `CommonConfig`."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from denoise_core.data import check_dataset_name
from denoise_core.models import MODELS, check_model_params, crop_error


class CommonConfig(BaseModel):
    """What every trial has: the network, the optimiser, the data, the run. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    model: str = "simple_unet"
    model_params: dict[str, Any] = Field(default_factory=dict)  # e.g. {"width": 32}
    lr: float = Field(1e-3, gt=0, lt=1)
    batch_size: int = Field(16, ge=1)
    steps: int = Field(500, ge=1, le=100_000_000)  # 1e8 steps is weeks on a GPU: more is a typo
    eval_every: int = Field(100, ge=1)
    rampdown: float = Field(0.3, ge=0, le=1)  # cosine lr ramp-down over this final fraction (Noise2Noise)
    crop: int = Field(64, ge=8)  # training crops
    eval_crop: int | None = Field(None, ge=8)  # validation and test images (None: the training crop)
    channels: Literal[1, 3] = 1
    dataset: str | dict[str, str] = "natural"  # one source, or {train: ..., val: ..., test: ...} (denoise_core.sources)
    data_root: str | None = None
    download: bool = False
    train_images: int | None = Field(None, ge=1)
    val_images: int = Field(32, ge=1)  # validation images: tuning and early stopping score these
    test_images: int = Field(32, ge=1)  # held-out test images: confirm runs score these, image by image
    val_seed: int = 1234  # the fixed noise seed: every trial is scored on the same noisy inputs
    # confirm runs: also score the held-out test split, with the weights of the evaluation that scored
    # best on validation by `select`, and with the final weights (denoise_core.results.Score)
    test: bool = False
    select: str | None = None  # the validation metric that picks the best evaluation (the study's metric)
    select_mode: Literal["max", "min"] = "max"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = Field(None, ge=1)
    channels_last: bool = False
    compile: bool = False
    # a resumable checkpoint every this many evaluations (0: only the final one); a retried trial
    # resumes from the last, so at most this many evaluations' work is lost to a fault
    checkpoint_every: int = Field(1, ge=0)
    grad_clip: float | None = Field(None, gt=0)  # clip the gradient's global norm to this (None: no clipping)
    deterministic: bool = True  # deterministic cuDNN/cuBLAS kernels on CUDA: same seed, same numbers

    @field_validator("model", "dataset")
    @classmethod
    def _known_model_or_data(cls, v, info):
        (MODELS.check if info.field_name == "model" else check_dataset_name)(v)
        return v

    @model_validator(mode="after")
    def _eval_within_steps(self):
        if self.eval_every > self.steps:
            self.eval_every = self.steps
        return self

    @model_validator(mode="after")
    def _model_takes_params_and_crop(self):
        """model_params bound against the model's builder, and the crop against the sizes the model
        takes: both fail here, before any trial starts, naming the key."""
        check_model_params(self.model, self.model_params)
        for key, size in (("crop", self.crop), ("eval_crop", self.eval_size)):
            err = crop_error(self.model, self.channels, size, self.model_params)
            if err:
                raise ValueError(err if err.startswith("model_params") else f"{key}={size}: {err}")
        return self

    @property
    def eval_size(self) -> int:
        """The side of the validation and test images."""
        return self.eval_crop or self.crop

    @property
    def train_side(self) -> int:
        """The side of the crops a training step cuts from the training images (a task may cut larger ones)."""
        return self.crop
