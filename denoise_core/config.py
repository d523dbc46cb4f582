"""The trial's configuration: plain data, validated, unknown keys rejected."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from denoise_core.data import check_dataset_name
from denoise_core.errors import one_line_error
from denoise_core.losses import LOSSES
from denoise_core.models import MODELS
from denoise_core.noise import NOISES, build_noise


class CommonConfig(BaseModel):
    """What every trial has: the network, the optimiser, the data, the run. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    model: str = "simple_unet"
    model_params: dict[str, Any] = Field(default_factory=dict)  # e.g. {"width": 32}
    lr: float = Field(1e-3, gt=0, lt=1)
    batch_size: int = Field(16, ge=1)
    steps: int = Field(500, ge=1)
    eval_every: int = Field(100, ge=1)
    rampdown: float = Field(0.3, ge=0, le=1)  # cosine lr ramp-down over this final fraction (Noise2Noise)
    crop: int = Field(64, ge=8)
    channels: Literal[1, 3] = 1
    dataset: str = "natural"
    data_root: str | None = None
    download: bool = False
    train_images: int | None = Field(None, ge=1)
    val_images: int = Field(32, ge=1)
    val_seed: int = 1234  # the fixed noise seed: every trial is scored on the same noisy inputs
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = Field(None, ge=1)
    channels_last: bool = False
    compile: bool = False
    # a resumable checkpoint every this many evaluations (0: only the final one); a retried trial
    # resumes from the last, so at most this many evaluations' work is lost to a fault
    checkpoint_every: int = Field(1, ge=0)

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


class TrialConfig(CommonConfig):
    """One denoising trial (task `denoise`). Every field round-trips through JSON."""

    task: Literal["denoise"] = "denoise"
    noise: str = "gaussian"
    noise_params: dict[str, Any] = Field(default_factory=dict)  # e.g. {"sigma": 25}
    eval_levels: list[float] = Field(default_factory=list)  # extra validation levels of the noise's parameter
    target: Literal["clean", "noisy"] = "clean"
    loss: str = "l2"

    @field_validator("loss", "noise")
    @classmethod
    def _known_name(cls, v, info):
        (LOSSES.check if info.field_name == "loss" else NOISES.check)(v)
        return v

    @model_validator(mode="after")
    def _cross(self):
        if self.model == "ddpm_unet":
            raise ValueError("ddpm_unet is time-conditioned; train it with task: ddpm")
        build_noise(self.noise, **self.noise_params)  # parameter names and ranges
        if self.eval_levels:
            param = NOISES.get(self.noise).param
            for level in self.eval_levels:
                build_noise(self.noise, **{**self.noise_params, param: level})
        return self


def validate_config(config: dict):
    """Validate a trial config of either task (denoise or ddpm)."""
    if config.get("task", "denoise") == "ddpm":
        from denoise_core.ddpm_train import validate_ddpm_config

        return validate_ddpm_config(config)
    return validate_trial_config(config)


def validate_trial_config(config: dict) -> TrialConfig:
    """Validate, turning pydantic's report into one line that names the key."""
    from pydantic import ValidationError

    try:
        return TrialConfig.model_validate(config)
    except ValidationError as e:
        raise ValueError(one_line_error(e)) from None
