"""What a trial reports, named in one place: the trial writes these keys, the store and the report
read them back through `Score`, and nothing assembles a metric name by editing strings.

    Score("psnr").key                          -> "psnr"              validation, the model
    Score("psnr", input=True).key              -> "input_psnr"        validation, the noisy input itself
    Score("psnr", "test").key                  -> "test_psnr"         held-out test, best-validation weights
    Score("psnr", "test", weights="final").key -> "test_final_psnr"   held-out test, final weights
    Score.parse("test_input_psnr")             -> Score("psnr", "test", input=True)

Validation scores come with every evaluation; test scores only with the last evaluation of a
confirm run (`test: true`), together with `PER_IMAGE`: for each test key, one value per test image,
in the order of the test split, so cells can be compared image by image; and under `SOURCES`, where test
images are crops of fewer source images (photographs, files), the source of each: crops of one
photograph are not independent, and the comparisons treat them so.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SPLITS = ("val", "test")
PER_IMAGE = "per_image"  # result key: {test key: [one value per test image], SOURCES: [source names]}
SOURCES = "sources"  # in PER_IMAGE: the source image of each test image (absent: each is its own)
# result key of a resumed trial's first report: the evaluations it made before (from its checkpoint), so a record
# that lost them with a killed driver is whole again
RESTORED = "restored_history"


@dataclass(frozen=True)
class Score:
    """One number a trial reports: a task's metric, on a split, of the model or of its noisy input."""

    metric: str  # what the task measures: psnr, ssim, bits_per_dim, psnr_sigma25 ...
    split: Literal["val", "test"] = "val"  # val: tuning and early stopping see it; test: held out
    weights: Literal["best", "final"] = "best"  # test only: the best validation evaluation's, or the last
    input: bool = False  # the noisy input scored against the clean image: what a denoiser must beat

    def __post_init__(self):
        if self.split not in SPLITS:
            raise ValueError(f"split={self.split!r}; allowed: {', '.join(SPLITS)}")
        if self.input and self.weights != "best":
            raise ValueError("the noisy input has no weights: an input score is never 'final'")

    @property
    def key(self) -> str:
        parts = ["test"] if self.split == "test" else []
        if self.split == "test" and self.weights == "final":
            parts.append("final")
        if self.input:
            parts.append("input")
        return "_".join([*parts, self.metric])

    @classmethod
    def parse(cls, key: str) -> "Score":
        """The inverse of `key`.

        >>> Score.parse("test_final_psnr_sigma25")
        Score(metric='psnr_sigma25', split='test', weights='final', input=False)
        >>> Score.parse(Score("ssim", "test", input=True).key) == Score("ssim", "test", input=True)
        True
        """
        split, weights, rest = "val", "best", key
        if rest.startswith("test_"):
            split, rest = "test", rest[len("test_"):]
            if rest.startswith("final_"):
                weights, rest = "final", rest[len("final_"):]
        inp = rest.startswith("input_")
        return cls(rest[len("input_"):] if inp else rest, split, weights, inp)

    def on(self, split: str, weights: str = "best") -> "Score":
        """The same metric of the same subject on another split (or with other weights)."""
        return Score(self.metric, split, "best" if self.input else weights, self.input)




class ShownImages(BaseModel):
    """images.json beside a checkpoint's PNGs: the split its whole image came from, and each PNG's PSNR (image_noisy,
    image_output ...). Written by a task's `final_outputs`, read by the report."""

    model_config = ConfigDict(extra="allow")
    split: str = "val"
    psnr: dict[str, float] = Field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> "ShownImages":
        return cls.model_validate_json(Path(path).read_text())

    def write(self, path: Path) -> Path:
        import json

        Path(path).write_text(json.dumps(self.model_dump()))
        return Path(path)
