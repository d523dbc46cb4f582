"""A study as typed, validated data: what to compare, what to tune, how much to spend.

    spec = load_spec("n2n_loss")            # a catalog name, or a path to the user's YAML
    plan = spec.plan("quick")               # cells, each with its full trial config

A *cell* is one combination of the compared factors. Inside a cell Optuna tunes the
`tune` space for `trials_per_cell` trials; the cell's best configuration is then re-run
with `seeds` seeds (the confirm phase). Errors name the field, the value and what is allowed.

A cell is a dict {factor: label}, named by `studies.cells.cell_key`.
"""
from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from studies.cells import cell_key, cell_label, in_slice

CATALOG = Path(__file__).parent / "catalog"
BUDGETS = ("smoke", "quick", "full")
# q per budget where a budget leaves `tune_parallel` out: a paper budget on a GPU cluster runs 4 of a cell's tuning
# trials at once (4 cells x 4 x 0.25 GPU fill 4 GPUs); the laptop budgets stay sequential TPE (their cells fill 2 cores)
TUNE_PARALLEL_DEFAULT = {"full": 4}


class SpecError(ValueError):
    """The user's study or flags are wrong: one line, exit code 2."""


NAME_RULE = "letters, digits, '_', '-' and '.', starting with a letter or digit, at most 100 characters"


def check_study_name(name: str) -> str:
    """A study's name is the name of its folder under the storage root, and nothing else: no '.', '..',
    path separator or leading dot, so that `<storage>/<name>` can never point at the root itself, its
    parent or anywhere else (a `--fresh` run deletes that folder's contents).

    >>> check_study_name("..")
    Traceback (most recent call last):
    ValueError: study name '..' is not allowed: letters, digits, '_', '-' and '.', starting with a letter or digit, at most 100 characters
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", name):
        raise ValueError(f"study name {name!r} is not allowed: {NAME_RULE}")
    return name


class Param(BaseModel):
    """One dimension of the Optuna search space."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["uniform", "loguniform", "int", "choice"]  # uniform, loguniform (ranges), int, or choice (values)
    low: float | None = None  # the range's lower end (uniform, loguniform, int)
    high: float | None = None  # the range's upper end
    values: list[Any] | None = None  # the levels of a choice

    @model_validator(mode="after")
    def _bounds(self):
        if self.type == "choice":
            if not self.values:
                raise ValueError("a choice needs a non-empty 'values' list")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} parameter needs 'low' and 'high'")
        if not self.low < self.high:
            raise ValueError(f"low={self.low:g} must be below high={self.high:g}")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError(f"loguniform needs low > 0, got low={self.low:g}")
        return self

    def distribution(self):
        import optuna.distributions as d

        if self.type == "choice":
            return d.CategoricalDistribution(self.values)
        if self.type == "int":
            return d.IntDistribution(int(self.low), int(self.high))
        return d.FloatDistribution(self.low, self.high, log=self.type == "loguniform")

    def probes(self) -> list:
        """The values validated before anything runs: both ends of a range, every choice."""
        if self.type == "choice":
            return list(self.values)
        if self.type == "int":
            return [int(self.low), int(self.high)]
        return [self.low, self.high]

    def middle(self):
        """A representative value, used to validate configs before anything runs."""
        if self.type == "choice":
            return self.values[0]
        if self.type == "int":
            return int(round((self.low + self.high) / 2))
        return math.sqrt(self.low * self.high) if self.type == "loguniform" else (self.low + self.high) / 2


class Budget(BaseModel):
    """How much a run spends: tuning trials per cell, confirm seeds, steps and data sizes."""

    model_config = ConfigDict(extra="forbid")
    trials_per_cell: int = Field(ge=1)  # Optuna's tuning trials in each cell
    # what of the source paper this budget is: its data, model, noise and steps, or the fraction of them it takes
    paper: str | None = None
    seeds: int | None = Field(None, ge=1)  # overrides the study's `seeds`: the confirm runs of the first look
    # adaptive confirmation: after each look, cells with an undecided comparison get another wave of `seeds` runs,
    # up to this many a cell (studies.analysis; unset: one look of `seeds`)
    max_seeds: int | None = Field(None, ge=1)
    steps: int | None = Field(None, ge=1)  # training steps per trial
    eval_every: int | None = Field(None, ge=1)  # steps between validation evaluations (early stopping reads them)
    crop: int | None = Field(None, ge=8)  # the side of the training crops, in pixels
    eval_crop: int | None = Field(None, ge=8)  # the side of the validation and test crops (test_protocol: crops)
    batch_size: int | None = Field(None, ge=1)  # training crops per step
    train_images: int | None = Field(None, ge=1)  # training images kept (the first N; all if unset)
    val_images: int | None = Field(None, ge=1)  # validation crops scored at each evaluation
    test_images: int | None = Field(None, ge=1)  # test crops scored by the confirm runs (test_protocol: crops)
    max_concurrent: int | None = Field(None, ge=1)  # trials at once at most (default: what the cluster's resources fit)
    # a cell's tuning trials run in waves of this many, each wave sampled from the waves before it (1: sequential
    # TPE); None: TUNE_PARALLEL_DEFAULT for the budget (full: fills a typical GPU cluster; smoke and quick: 1)
    tune_parallel: int | None = Field(None, ge=1)
    cpus_per_trial: float = Field(1.0, gt=0)  # CPUs a trial reserves (also its intra-op threads)
    gpus_per_trial: float | None = Field(None, ge=0)  # None: studies.packing's default when there are GPUs
    max_failures: int = Field(1, ge=0)  # FailureConfig retries per trial
    tune: dict[str, Param] = Field(default_factory=dict)  # this budget's ranges, replacing the study's per key
    grace_evals: int = Field(2, ge=1)  # early stopping never stops a trial before this many evaluations
    fixed: dict[str, Any] = Field(default_factory=dict)  # any other trial keys for this budget

    def overrides(self) -> dict[str, Any]:
        keys = ("steps", "eval_every", "crop", "eval_crop", "batch_size", "train_images", "val_images", "test_images")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None} | self.fixed


def _names_level(text: str, level: str) -> str | None:
    """The word of `text` that names a compared level: the level itself, or, for a noise, its level parameter
    ('sigma' names Gaussian noise); None if none does.

    >>> _names_level("Krull et al. 2019, table 1 (BSD68, sigma 25)", "gaussian")
    'sigma'
    >>> _names_level("Huang et al. 2021 (Gaussian sigma 25 and Poisson lambda 30)", "poisson")
    'Poisson'
    >>> _names_level("Lehtinen et al. 2018, section 3.1", "gaussian") is None
    True
    """
    import re

    from denoise_core.noise import NOISES

    words = [level] + ([NOISES.get(level).param] if level in NOISES and NOISES.get(level).param else [])
    for w in words:
        if m := re.search(rf"\b{re.escape(w)}\b", text, re.IGNORECASE):
            return m.group(0)
    return None


class Claim(BaseModel):
    """A finding from the literature that the study can reproduce or contradict: level `a` of the
    question factor against level `b`, within the slice `where` of the other factors (factors left out
    are pooled). `better`: a scores better than b (by the study's metric and mode); `same`: the two
    differ by less than `margin` (in the metric's units)."""

    model_config = ConfigDict(extra="forbid")
    claim: str  # the finding in words, as the report's verdict table states it
    source: str  # where it is published (paper, table; its setting, e.g. 'BSD68, sigma 25')
    # the slice it is judged on: {factor: level} of the other factors (left out: pooled)
    where: dict[str, str] = Field(default_factory=dict)
    a: str  # the level of the question factor claimed better (or the same)
    b: str  # the level it is compared with
    relation: Literal["better", "same"] = "better"  # better: a scores better than b; same: they differ by less than margin
    # the largest difference that counts as none, in the metric's units: a `same` claim holds when its interval lies
    # inside +-margin (0.5 unless given); a `better` claim whose interval does is decided "no meaningful difference"
    margin: float | None = Field(None, gt=0)
    source_steps: int | None = Field(None, ge=1)  # training steps behind the source's result, where known

    @property
    def within(self) -> float | None:
        """The margin its verdict reads: the given one, 0.5 for a `same` claim without one, else None."""
        return self.margin if self.margin is not None else (0.5 if self.relation == "same" else None)


class Reference(BaseModel):
    """A published result: `method` scored `value` (`metric`) on `test_set` under `noise` at `level` (the noise's
    level parameter in its own units: sigma on the 0-255 scale, lam ...), in `source`. The report shows it only
    where the study's test set, noise, level and metric are the same; `baseline` names our classical baseline
    that implements the same method (bm3d), whose row then sits beside it as the check of the protocol. A network's
    row sits beside the best of the cells of the same test set, noise and level, or of those `where` names (the
    published N2V beside our N2V cell: `where: {scheme: N2V}`)."""

    model_config = ConfigDict(extra="forbid")
    method: str  # the published method's name (BM3D, DnCNN-S, N2V ...)
    test_set: str  # the test set it was scored on, by its usual name (BSD68, Set12, Kodak24 ...)
    noise: str  # the noise model it was scored under (a noise name: gaussian, poisson ...)
    level: float  # the noise level in the noise's own units (sigma on the 0-255 scale, lam ...)
    metric: Literal["psnr", "ssim"] = "psnr"  # the published metric: psnr or ssim
    value: float  # the published number
    source: str  # where it is published (paper, table; its setting, e.g. 'BSD68, sigma 25')
    baseline: str | None = None  # our classical baseline implementing the same method (bm3d): its row sits beside it
    protocol: str = "same"  # "same": scored as denoise_core.protocol scores; otherwise what differs, said beside it
    where: dict[str, str] = Field(default_factory=dict)  # compared levels of the cells it is set beside


# a factor is a list of scalar values for one trial key, or a mapping label -> trial overrides
Factor = Union[list[Union[str, int, float, bool]], dict[str, dict[str, Any]]]


class StudySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str  # a folder under the storage root: see check_study_name
    description: str  # what the study asks, in a sentence or two (the report's first paragraph)
    task: str = "denoise"  # a module of denoise_core.tasks, or a module path that registers a task
    metric: str = "psnr"  # the score the study compares (psnr, ssim; a task's own metrics)
    mode: Literal["max", "min"] = "max"  # max: higher is better; min: lower is better
    fixed: dict[str, Any] = Field(default_factory=dict)  # trial keys every cell shares (see `spec trial`)
    # factors whose every combination is a cell: {factor: [levels]} or {factor: {label: trial keys}}
    compare: dict[str, Factor]
    # the nuisance hyperparameters Optuna tunes inside each cell: {trial key: range}
    tune: dict[str, Param] = Field(default_factory=dict)
    seeds: int = Field(3, ge=1)  # confirm runs of each cell's best configuration (a budget may set its own)
    # the largest difference between two levels (in the metric's units) that counts as none: a level comparison
    # whose interval lies inside +-margin is decided, "no meaningful difference" (unset: only a significant one is)
    margin: float | None = Field(None, gt=0)
    budgets: dict[str, Budget]  # smoke, quick and full: how much a run spends (see `spec budget`)
    # the report's comparison figure beside the bars: a heatmap of two factors, the gap between the
    # question factor's two levels per level of the other factor, the levels grid (train level x
    # each eval level), or quality against parameters; default: heatmap with two factors, else bars only
    figure: str | None = None  # a name in reports.figures.FIGURES (checked by `run` before anything starts)
    also: list[str] = Field(default_factory=list)  # metrics the report shows beside `metric` (never compared)
    question: str | None = None  # the factor the findings compare; default: the last one with several levels
    expect: list[Claim] = Field(default_factory=list)  # claims from the literature: the report's verdicts
    references: list[Reference] = Field(default_factory=list)  # published rows shown beside ours where they match
    exclude: list[dict[str, Union[str, int, float, bool]]] = Field(default_factory=list)  # cells not run: each {factor: level, ...} leaves out every cell it matches

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v):
        check_study_name(v)
        return v

    @field_validator("task")
    @classmethod
    def _known_task(cls, v):
        from denoise_core.tasks import check_task_name

        check_task_name(v)
        return v

    @field_validator("compare")
    @classmethod
    def _compare(cls, v):
        if not v:
            raise ValueError("compare needs at least one factor; a study compares something")
        for name, values in v.items():
            if len(values) == 0:
                raise ValueError(f"factor {name!r} has no values")
        return v

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, v):
        missing = [b for b in BUDGETS if b not in v]
        if missing:
            raise ValueError(f"budgets {', '.join(missing)} missing; every study defines {', '.join(BUDGETS)}")
        unknown = [b for b in v if b not in BUDGETS]
        if unknown:
            raise ValueError(f"unknown budget {unknown[0]!r}; allowed: {', '.join(BUDGETS)}")
        return v

    @model_validator(mode="after")
    def _question_is_a_factor(self):
        if self.question is not None and self.question not in self.compare:
            raise ValueError(f"question {self.question!r} is not a compared factor; factors: {', '.join(self.compare)}")
        return self

    @model_validator(mode="after")
    def _claims_name_levels(self):
        q = self.question_factor()
        for i, c in enumerate(self.expect):
            for side in (c.a, c.b):
                if side not in self.labels(q):
                    raise ValueError(f"expect[{i}]: {side!r} is not a level of the question factor {q!r}; "
                                     f"levels: {', '.join(self.labels(q))}")
            for factor, level in c.where.items():
                if factor == q or factor not in self.compare:
                    raise ValueError(f"expect[{i}].where: {factor!r} is not one of the other compared factors")
                if level not in self.labels(factor):
                    raise ValueError(f"expect[{i}].where: {level!r} is not a level of {factor!r}")
        return self

    @model_validator(mode="after")
    def _labels_unique(self):
        for name in self.compare:
            labels = self.labels(name)
            dup = next((lab for lab in labels if labels.count(lab) > 1), None)
            if dup is not None:
                raise ValueError(f"compare.{name}: level {dup!r} appears twice (as text, every level must differ)")
        return self

    @model_validator(mode="after")
    def _exclusions_name_levels(self):
        """Each exclusion names compared factors and their levels, matches a cell, and leaves cells to run."""
        for i, ex in enumerate(self.exclude):
            if not ex:
                raise ValueError(f"exclude[{i}] is empty: it would leave out every cell")
            self._check_levels(ex, f"exclude[{i}]")
        kept = self.cells()
        if self.exclude and not kept:
            raise ValueError("exclude leaves no cell to run")
        for i, r in enumerate(self.references):
            self._check_levels(r.where, f"references[{i}].where")
            if r.where and not any(in_slice(cell, r.where) for cell in kept):
                raise ValueError(f"references[{i}].where: every cell where {cell_label(r.where)} is excluded")
        q = self.question_factor()
        for i, c in enumerate(self.expect):
            for side in (c.a, c.b):
                if not any(cell[q] == side and in_slice(cell, c.where) for cell in kept):
                    raise ValueError(f"expect[{i}]: every cell of {q}={side}"
                                     + (f" where {cell_label(c.where)}" if c.where else "") + " is excluded")
        return self

    @model_validator(mode="after")
    def _claims_judged_where_their_source_is(self):
        """A claim whose source names some levels of a factor it pools ("BSD68, sigma 25": Gaussian noise) is judged
        on those levels: pooled over the others it would rest on results the source never had."""
        q = self.question_factor()
        for i, c in enumerate(self.expect):
            for factor in self.compare:
                if factor == q or factor in c.where or len(self.labels(factor)) < 2:
                    continue
                named = {lv: w for lv in self.labels(factor) if (w := _names_level(c.source, lv))}
                if named and len(named) < len(self.labels(factor)):
                    lv, word = next(iter(named.items()))
                    raise ValueError(f"expect[{i}] ({c.claim!r}): its source names {factor}={lv} ({word!r} in "
                                     f"{c.source!r}), but it would be judged pooled over {factor}="
                                     f"{', '.join(self.labels(factor))}; add where: {{{factor}: {lv}}}")
        return self

    def _check_levels(self, where: dict, key: str) -> None:
        """Every factor `where` names is compared, at one of its levels (a ValueError naming `key`)."""
        for factor, level in where.items():
            if factor not in self.compare:
                raise ValueError(f"{key}: {factor!r} is not a compared factor; factors: {', '.join(self.compare)}")
            if str(level) not in self.labels(factor):
                raise ValueError(f"{key}: {level!r} is not a level of {factor!r}; "
                                 f"levels: {', '.join(self.labels(factor))}")

    def excluded(self, cell: dict[str, str]) -> bool:
        """Whether `exclude` leaves this cell out."""
        return any(in_slice(cell, ex) for ex in self.exclude)

    def why_excluded(self, cell: dict[str, str], budget: str = "quick") -> str:
        """Why an excluded cell was left out, in a few words for a table or a tile: what its own components refuse
        of it ("target 'r2r' needs one known Gaussian sigma"), else that the study's `exclude:` leaves it out."""
        from denoise_core.tasks import validate_config

        try:
            validate_config(self.cell_config(cell, budget))
        except ValueError as e:
            return str(e).splitlines()[0].split(", and ")[0].split("; ")[0]
        return "left out by the study's exclude:"

    def question_factor(self) -> str:
        """The factor the study asks about: `question`, else the last factor with two or more levels."""
        factors = list(self.compare)
        return self.question or next((f for f in reversed(factors) if len(self.compare[f]) > 1), factors[-1])

    @model_validator(mode="after")
    def _tuned_is_not_fixed(self):
        """A tuned key that a budget or `fixed` also sets: one of them would silently win."""
        for bname, b in self.budgets.items():
            set_here = {**{f"fixed.{k}": k for k in _dotted(self.fixed)},
                        **{f"budgets.{bname}.{k}": k for k in _dotted(b.overrides())}}
            for key in {**self.tune, **b.tune}:
                clash = [where for where, k in set_here.items() if k == key or k.startswith(key + ".")]
                if clash:
                    raise ValueError(f"{key!r} is tuned and also set by {clash[0]}; a tuned key must not be fixed "
                                     f"(remove one of the two)")
        return self

    @model_validator(mode="after")
    def _max_seeds_not_below_seeds(self):
        for name, b in self.budgets.items():
            if b.max_seeds is not None and b.max_seeds < self.seeds_for(name):
                raise ValueError(f"budgets.{name}.max_seeds is {b.max_seeds}, below the {self.seeds_for(name)} seeds "
                                 f"of its first look; give max_seeds >= seeds (or leave it out for one look)")
        return self

    @model_validator(mode="after")
    def _no_tuning_of_factors(self):
        clash = {k for b in self.budgets.values() for k in {*self.tune, *b.tune}} & set(self.compare)
        if clash:
            raise ValueError(f"{sorted(clash)[0]!r} is both compared and tuned; the optimiser must never choose a factor")
        return self

    # -- the plan -----------------------------------------------------------------------------
    def factor_levels(self, name: str) -> list[tuple[str, dict[str, Any]]]:
        """[(label, trial overrides)] for one factor."""
        values = self.compare[name]
        if isinstance(values, dict):
            return [(str(label), dict(over)) for label, over in values.items()]
        return [(str(v), {name: v}) for v in values]

    def labels(self, name: str) -> list[str]:
        """The levels of one factor, in the spec's order."""
        return [lab for lab, _ in self.factor_levels(name)]

    def level_index(self, name: str, label: str) -> int:
        """Where `label` stands among the factor's levels (for sorting in the spec's order); unknown last."""
        labels = self.labels(name)
        return labels.index(label) if label in labels else len(labels)

    @property
    def sign(self) -> int:
        """+1 when higher is better (mode max), -1 when lower is better: sign * value is 'goodness'."""
        return 1 if self.mode == "max" else -1

    def other_factors(self) -> list[str]:
        """The compared factors other than the question factor: each combination of them is a slice."""
        q = self.question_factor()
        return [f for f in self.compare if f != q]

    def cells(self) -> list[dict[str, str]]:
        """Every combination of factor labels that `exclude` does not leave out, in a stable order."""
        return [cell for cell in self.all_cells() if not self.excluded(cell)]

    def all_cells(self) -> list[dict[str, str]]:
        """Every combination of factor labels, the excluded ones too, in a stable order."""
        names = list(self.compare)
        return [dict(zip(names, combo)) for combo in itertools.product(*[self.labels(n) for n in names])]

    def cell_keys(self) -> list[str]:
        return [cell_key(c) for c in self.cells()]

    def key_of(self, levels: dict[str, str]) -> str:
        """The key of the cell with these levels (any order given; the key lists factors in the spec's order)."""
        return cell_key({f: levels[f] for f in self.compare})

    def cell_config(self, cell: dict[str, str], budget: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The full trial config of a cell, before tuning: fixed, then budget, then the cell's values."""
        cfg = {"task": self.task, **_deep_copy(self.fixed)}
        _merge(cfg, self.budgets[budget].overrides())
        for name, label in cell.items():
            _merge(cfg, dict(self.factor_levels(name))[label])
        _merge(cfg, extra or {})
        return cfg

    def tune_for(self, budget: str) -> dict[str, Param]:
        """The search space at this budget: the study's, with the budget's ranges in place of its own."""
        return {**self.tune, **self.budgets[budget].tune}

    def comparison_figure(self) -> str:
        """The report's comparison figure: the spec's, else a heatmap (one per level of any further factor) when two
        or more factors are compared, else bars only."""
        return self.figure or ("heatmap" if len(self.compare) >= 2 else "bars")

    def tune_parallel(self, budget: str) -> int:
        """q: how many of a cell's tuning trials run at once (the budget's `tune_parallel`, else its default)."""
        q = self.budgets[budget].tune_parallel
        return q if q is not None else TUNE_PARALLEL_DEFAULT.get(budget, 1)

    def seeds_for(self, budget: str) -> int:
        return self.budgets[budget].seeds or self.seeds

    def looks(self, budget: str) -> list[int]:
        """Confirm runs a cell has at each look: `seeds`, then waves of `seeds` more, to `max_seeds` (one look without).

        >>> spec = StudySpec.model_validate({"name": "x", "description": "x", "compare": {"loss": ["l1", "l2"]}, "seeds": 3,
        ...     "budgets": {b: {"trials_per_cell": 1, "max_seeds": m} for b, m in (("smoke", None), ("quick", 9), ("full", 8))}})
        >>> spec.looks("smoke"), spec.looks("quick"), spec.looks("full")
        ([3], [3, 6, 9], [3, 6, 8])
        """
        first = self.seeds_for(budget)
        most = self.budgets[budget].max_seeds or first
        return list(range(first, most, first)) + [most]


def _dotted(cfg: dict, prefix: str = "") -> list[str]:
    """{'model_params': {'width': 8}, 'lr': 1} -> ['model_params.width', 'lr']"""
    out = []
    for k, v in cfg.items():
        out += _dotted(v, f"{prefix}{k}.") if isinstance(v, dict) and v else [f"{prefix}{k}"]
    return out


def set_path(cfg: dict, dotted: str, value: Any) -> None:
    """Set 'model_params.width' style keys in a nested dict."""
    *parents, leaf = dotted.split(".")
    for p in parents:
        cfg = cfg.setdefault(p, {})
    cfg[leaf] = value


def _merge(cfg: dict, over: dict) -> None:
    for k, v in over.items():
        if "." in k:
            set_path(cfg, k, v)
        elif isinstance(v, dict) and isinstance(cfg.get(k), dict):
            _merge(cfg[k], v)
        else:
            cfg[k] = _deep_copy(v)


def _deep_copy(v):
    import copy

    return copy.deepcopy(v)


# -- loading --------------------------------------------------------------------------------------
def catalog_names() -> list[str]:
    return sorted(p.stem for p in CATALOG.glob("*.yaml"))


def resolve(name_or_path: str) -> Path:
    p = Path(name_or_path).expanduser()
    if p.suffix in (".yaml", ".yml") or p.exists() or "/" in name_or_path:
        if not p.is_file():
            raise SpecError(f"study file {str(p)!r} does not exist")
        return p
    if (CATALOG / f"{name_or_path}.yaml").is_file():
        return CATALOG / f"{name_or_path}.yaml"
    raise SpecError(f"unknown study {name_or_path!r}; catalog: {', '.join(catalog_names())}, or a path to a YAML file")


def load_spec(name_or_path: str, check: bool = True) -> StudySpec:
    path = resolve(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SpecError(f"{path.name}:{where} is not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path.name}: a study is a YAML mapping with name, description, compare, budgets ...")
    return parse_spec(raw, source=path.name, check=check)


def parse_spec(raw: dict, source: str = "study", check: bool = True) -> StudySpec:
    from denoise_core.errors import one_line_error

    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as e:
        raise SpecError(f"{source}: {one_line_error(e, model=StudySpec)}") from None
    if check:  # validating every cell's trial config imports torch: skipped where only the text is needed
        check_trial_configs(spec, source)
    return spec


def check_trial_configs(spec: StudySpec, source: str, budgets=BUDGETS, extra: dict | None = None) -> None:
    """Build every cell's trial config and validate it as the trial would, with each tuned parameter
    at each of its probe values (the others at their middle), so a bad model, noise, loss, dataset,
    model parameter or crop fails now, naming the spec field, not hours later in a trial. The study's
    `metric` and `also` must be metrics every cell's trials report."""
    from denoise_core.tasks import get_task, validate_config

    task = get_task(spec.task)
    for cell in spec.cells():
        try:
            reported = task.metrics(validate_config(spec.cell_config(cell, "smoke", extra)))
        except ValueError:
            continue  # the loop below names the bad value
        for where, name in [("metric", spec.metric), *((f"also[{i}]", m) for i, m in enumerate(spec.also))]:
            if name not in reported:
                raise SpecError(f"{source}: {where}: task {spec.task} does not report {name!r} "
                                f"(cell {cell_label(cell)}); it reports: {', '.join(reported)}")
    for budget in budgets:
        space = spec.tune_for(budget)
        middle = {key: p.middle() for key, p in space.items()}
        probes = [middle] + [{**middle, key: v} for key, p in space.items() for v in p.probes()]
        for cell in spec.cells():
            base = spec.cell_config(cell, budget, extra)
            for values in probes:
                cfg = _deep_copy(base)
                for key, value in values.items():
                    set_path(cfg, key, value)
                try:
                    validate_config(cfg)
                except ValueError as e:
                    tuned = ", ".join(f"{k}={v}" for k, v in values.items() if v != middle[k])
                    where = f"cell {cell_label(cell)}, budget {budget}" + (f", tuned {tuned}" if tuned else "")
                    raise SpecError(f"{source}: {where}: {e}") from None


def check_data(spec: StudySpec, budget: str, extra: dict | None = None) -> None:
    """Every data source the study's cells name at this budget exists and holds readable images in each
    split, checked once per distinct source before Ray starts: bad data is a SpecError (exit 2), never a
    run whose every trial fails."""
    from denoise_core.data import SPLITS, check_source, split_source
    from denoise_core.tasks import get_task, validate_config

    sides = {}  # each source read: the largest crop side its part allows
    for cell in spec.cells():
        cfg = validate_config(spec.cell_config(cell, budget, extra))
        check = get_task(cfg.task).check_data
        try:
            if check is not None:
                check(cfg)
        except (ValueError, OSError) as e:
            raise SpecError(f"{spec.name}, budget {budget}, cell {cell_label(cell)}: {e}") from None
        for split in SPLITS:
            name, part = split_source(cfg.dataset, split)
            source = (name, cfg.data_root, cfg.channels, cfg.download, part)
            if "://" in f"{name} {cfg.data_root}":  # object-store data: the trials read it
                continue
            if source not in sides:
                try:
                    sides[source] = check_source(*source[:4], parts=(part,))[part]
                except ValueError as e:
                    raise SpecError(f"{spec.name}, budget {budget}: {e}") from None
            if split == "train" and cfg.train_side > sides[source]:
                raise SpecError(f"{spec.name}, budget {budget}, cell {cell_label(cell)}: training crops of "
                                f"{cfg.train_side}x{cfg.train_side}" + (f" (crop {cfg.crop} x{cfg.train_side // cfg.crop})"
                                                                         if cfg.train_side != cfg.crop else "")
                                + f" do not fit dataset {name!r}'s {sides[source]}-pixel training images; "
                                f"use crop {cfg.crop * sides[source] // cfg.train_side} or less")


# the keys of a spec that change no trial, only what the report says: an edit of these is taken by a rerun
REPORT_KEYS = ("description", "references", "expect", "figure", "also", "question")
_ABSENT = object()


def spec_edits(stored: dict, spec: StudySpec, budget: str) -> tuple[list[str], list[str]]:
    """(keys that change no trial, keys that change trials), dotted, where `spec` differs from a study's stored spec
    run at `budget`. Both are validated and dumped the same way, so defaults added since compare equal; another
    budget's edits change none of this budget's trials."""
    old, new = StudySpec.model_validate(stored).model_dump(mode="json"), spec.model_dump(mode="json")
    report, trials = [], []
    for key in dict.fromkeys([*old, *new]):
        if key == "budgets":
            for b in dict.fromkeys([*old[key], *new[key]]):
                (trials if b == budget else report).extend(_diff(old[key].get(b, _ABSENT), new[key].get(b, _ABSENT),
                                                                 f"budgets.{b}"))
        elif key == "seeds" and old["budgets"].get(budget, {}).get("seeds") and new["budgets"].get(budget, {}).get("seeds"):
            report.extend(_diff(old[key], new[key], key))  # this budget runs its own seeds: the study's change none
        else:
            (report if key in REPORT_KEYS else trials).extend(_diff(old.get(key, _ABSENT), new.get(key, _ABSENT), key))
    return report, trials


def _diff(a, b, path: str) -> list[str]:
    """The dotted paths where two JSON values differ (a list is one value)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in dict.fromkeys([*a, *b]) for d in _diff(a.get(k, _ABSENT), b.get(k, _ABSENT), f"{path}.{k}")]
    return [path] if a != b else []


def shared_split_warnings(spec: StudySpec, budget: str, extra: dict | None = None) -> list[str]:
    """One line per two splits that read the same images (one source named for both) in any cell at this budget."""
    from denoise_core.sources import shared_splits
    from denoise_core.tasks import validate_config

    names = {"train": "training", "val": "validation", "test": "test"}
    shared = dict.fromkeys(s for cell in spec.cells()
                           for s in shared_splits(getattr(validate_config(spec.cell_config(cell, budget, extra)),
                                                          "dataset", None) or ""))
    return [f"{names[a]} and {names[b]} are the same images ({source})"
            + (": test scores are not held out; the report says so" if b == "test" else "") for a, b, source in shared]


def published_rows() -> list[Reference]:
    """Every published row the catalog carries, once (what `evaluate` shows beside its own numbers)."""
    rows: dict[tuple, Reference] = {}
    for name in catalog_names():
        for r in load_spec(name, check=False).references:
            rows.setdefault((r.method, r.test_set, r.noise, r.level, r.metric), r)
    return list(rows.values())
