"""Every document a study stores, as a typed model: the Ray engine writes these, and `status`, `report`, `denoise`
and `evaluate` read them. No code outside the study layer indexes a stored dict by a string key; what a stored
value means is said once, here.

    <study>/study.json                   StudyInfo     the spec, the plan, and how each run went (RunInfo)
    <study>/records/<trial_id>.json      TrialRecord   one trial: its cell, parameters, status and history
    <study>/baselines/scores.json        BaselineScores the classical denoisers' scores per evaluation setting
    <study>/best/<cell>/trial.json       BestTrial     which confirm run a cell's best model comes from
    <checkpoint>/images.json             ShownImages   the report's whole image: split and PSNRs (written by the
                                                       task, so defined in denoise_core.results)

The models accept fields they do not name (`extra="allow"`), so a study written by a newer version still reads;
they are written as the standard library writes JSON, NaN and infinity included (a diverged trial's history
holds them).

A trial's history rows and its per-image scores stay keyed by metric: their keys are `denoise_core.results.Score`
keys, built in one place and never parsed back (`TrialRecord.curve`, `TrialRecord.per_image_of`).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# a trial's status: pending, running or retrying while it runs, then one of FINISHED
COMPLETED, STOPPED, FAILED, DIVERGED = "completed", "stopped", "failed", "diverged"
FINISHED = (COMPLETED, STOPPED, FAILED, DIVERGED)  # stopped: early-stopped within its cell by the scheduler


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write through a temporary file and a rename: a reader never sees half a file, a kill never leaves one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)
    return path


class Document(BaseModel):
    model_config = ConfigDict(extra="allow")

    @classmethod
    def read(cls, path: Path):
        """The document stored at `path` (a ValueError when it is not one)."""
        return cls.model_validate_json(Path(path).read_text())

    @classmethod
    def read_or_none(cls, path: Path):
        """The document at `path`, or None where it is unreadable or not one (half-written by another version)."""
        try:
            return cls.read(path)
        except (OSError, ValueError):
            return None

    def write(self, path: Path) -> Path:
        """Written atomically (a reader never sees half a file)."""
        return write_atomic(Path(path), self.dumps())

    def dumps(self) -> str:
        """JSON as the standard library writes it (NaN and infinity as its constants, ", " and ": " between items)."""
        return json.dumps(self.model_dump(), default=str)


# -- trials -------------------------------------------------------------------------------------------------------
class Resources(Document):
    cpu: float = 1.0
    gpu: float = 0.0


class Divergence(Document):
    step: int | None = None
    reason: str | None = None


class TrialRecord(Document):
    """One trial, rewritten at every result (`studies.records.StudyRecorder`)."""

    trial_id: str
    cell: str
    phase: str  # tune or confirm
    factors: dict[str, Any] = Field(default_factory=dict)  # the cell's compared factors
    params: dict[str, Any] = Field(default_factory=dict)  # the tuned parameters
    seed: int | None = None
    config: dict[str, Any] = Field(default_factory=dict)  # the trial's whole config
    status: str = "pending"
    history: list[dict[str, Any]] = Field(default_factory=list)  # one row per evaluation: step and Score keys
    error: str | None = None
    start: float | None = None
    end: float | None = None
    checkpoint: str | None = None
    node_id: str | None = None
    attempts: int = 0
    resources: Resources = Field(default_factory=Resources)
    resumed: bool = False
    diverged: Divergence | None = None
    per_image: dict[str, list] | None = None  # confirm runs: {test Score key: [value per image], SOURCES: [names]}

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def last(self) -> dict[str, Any]:
        """The last evaluation's row ({} before the first)."""
        return self.history[-1] if self.history else {}

    @property
    def last_step(self) -> int:
        return int(self.last.get("step") or 0)

    def curve(self, key: str) -> list[tuple[int, float]]:
        """(step, value) of every evaluation that reported `key` as a number."""
        return [(int(h["step"]), float(h[key])) for h in self.history
                if h.get("step") is not None and isinstance(h.get(key), (int, float)) and not isinstance(h.get(key), bool)]

    def value_at(self, key: str, step: int) -> float | None:
        """`key` at evaluation step `step`, where it is a finite number."""
        v = dict(self.curve(key)).get(step)
        return v if v is not None and math.isfinite(v) else None

    def per_image_of(self, key: str) -> list[float]:
        return list((self.per_image or {}).get(key) or [])

    def per_image_sources(self) -> list[str] | None:
        from denoise_core.results import SOURCES

        return (self.per_image or {}).get(SOURCES)


# -- the study ------------------------------------------------------------------------------------------------------
class RunInfo(Document):
    """One `denoise-study run` of a study: when, where, and how it ended (finished, failed, stopped, killed)."""

    start: float
    heartbeat: float | None = None
    end: float | None = None
    ended: str | None = None
    command: str = ""
    host: str = ""
    pid: int | None = None
    resources: dict[str, float] = Field(default_factory=dict)
    nodes: int | None = None
    versions: dict[str, str] = Field(default_factory=dict)


class StudyInfo(Document):
    """study.json: the marker that a folder is a study, its spec, its plan at the budget it ran, and its runs."""

    spec: dict[str, Any] = Field(default_factory=dict)  # studies.spec.StudySpec, dumped
    runs: list[RunInfo] = Field(default_factory=list)
    budget: str | None = None
    planned: int = 0
    cells: list[str] = Field(default_factory=list)
    n_evals: int = 1
    storage: str | None = None
    optuna_storage: str | None = None
    trials_per_cell: int = 0
    seeds: int = 0
    max_concurrent: int | None = None
    tune_parallel: int | None = None  # q: a cell's tuning trials at once (None: stored before waves, q = 1)
    extra: dict[str, Any] | None = None  # the run's data flags (--data-root, --dataset ...); None: never stored

    @property
    def name(self) -> str | None:
        """The study's name, as its spec says (a folder is a study when this is the folder's own name)."""
        return self.spec.get("name")

    @property
    def last_run(self) -> RunInfo | None:
        return self.runs[-1] if self.runs else None


class LookPlan(Document):
    """looks.json: adaptive confirmation's plan as its looks decided it (`studies.searcher`): the confirm runs a cell
    has at each look, the cells that got another wave after each look taken, and the trials planned now."""

    seeds: list[int] = Field(default_factory=list)
    continuing: list[list[str]] = Field(default_factory=list)
    planned: int = 0


class BestTrial(Document):
    """best/<cell>/trial.json: the confirm run whose checkpoint is the cell's best model, and its score."""

    cell: str
    trial_id: str
    metric: str = ""
    value: float | None = None

    def score(self, metric: str) -> float | None:
        """Its `metric` (a file written before 2026-12 stored it under the metric's own name)."""
        return self.value if self.metric == metric else (self.model_extra or {}).get(metric)


# -- classical baselines ---------------------------------------------------------------------------------------------
class BaselineMetrics(Document):
    """One classical denoiser in one evaluation setting: its parameter (chosen on validation) and its scores."""

    param: Any = None
    val: dict[str, float] = Field(default_factory=dict)  # mean per metric key
    test: dict[str, float] = Field(default_factory=dict)
    test_per_image: dict[str, list[float]] = Field(default_factory=dict)


class BaselineEntry(Document):
    """Every classical denoiser of one evaluation setting (data, noise, evaluation sets)."""

    noise: str = ""
    metrics: dict[str, BaselineMetrics] = Field(default_factory=dict)  # by baseline name ("noisy": the input)
    best: str = "noisy"  # the real denoiser with the best validation PSNR
    images: dict[str, str] = Field(default_factory=dict)  # showcase PNGs, relative to the study folder
    showcase_psnr: dict[str, float] = Field(default_factory=dict)
    error: str | None = None
    channels: int | None = None  # 1 grey, 3 colour (CBM3D); None: stored before 2026-12
    val_images: int | None = None  # the validation images every parameter and the best baseline were chosen on
    val_pixels: int | None = None  # their pixels in all (per channel)

    def too_small_to_choose(self) -> bool:
        """Whether its validation split is too small to choose a baseline on (`denoise_core.baselines`)."""
        from denoise_core.baselines import CHOICE_MIN_IMAGES, CHOICE_MIN_PIXELS

        return self.val_images is not None and (self.val_images < CHOICE_MIN_IMAGES
                                                or (self.val_pixels or 0) < CHOICE_MIN_PIXELS)


class BaselineScores(Document):
    """baselines/scores.json: each cell's evaluation setting (a key), and each setting's scores."""

    cells: dict[str, str] = Field(default_factory=dict)
    entries: dict[str, BaselineEntry] = Field(default_factory=dict)
    # a setting's baselines scored before its run was interrupted ({key: {name: metrics}}): a resume scores the rest
    partial: dict[str, dict[str, BaselineMetrics]] = Field(default_factory=dict)

    def of(self, cell: str) -> BaselineEntry | None:
        return self.entries.get(self.cells.get(cell, ""))


# -- a checkpoint's images: written by the task (denoise_core), so defined there ---------------------------------------
from denoise_core.results import ShownImages  # noqa: E402  (re-exported: every stored document is named here)

__all__ = ["TrialRecord", "StudyInfo", "RunInfo", "BestTrial", "BaselineScores", "BaselineEntry", "BaselineMetrics",
           "ShownImages", "COMPLETED", "STOPPED", "FAILED", "DIVERGED", "FINISHED"]
