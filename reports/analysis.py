"""What a study found, computed once from its stored results: the family of comparisons (see
`reports.stats`), per-cell statistics at the family's level, the classical baselines per slice,
the literature claims' verdicts, and late collapses. Every section of the report reads this.

    a = analyse(StudyResults.load(sdir))
    a.confidence, a.slices[0].winner, a.verdicts[0].verdict
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from denoise_core.results import Score
from denoise_core.tasks import get_task
from reports.stats import ALPHA, CellStat, Comparison, Family, cell_stat, compare, correct
from studies.cells import cell_label, parse_cell
from studies.documents import BaselineEntry
from studies.store import StudyResults, column, factor_column

BASELINE_NAMES = {"bm3d": "BM3D", "tv": "TV (Chambolle)", "nlm": "non-local means", "median": "median filter",
                  "noisy": "the noisy input"}


def baseline_label(name: str, channels: int | None = None) -> str:
    """A baseline's name as the literature writes it: BM3D on colour images is CBM3D."""
    return "CBM3D" if name == "bm3d" and channels == 3 else BASELINE_NAMES.get(name, name)


@dataclass
class BestBaseline:
    """A slice's best classical baseline (chosen on validation), its test mean and its comparison with the slice's best
    cell; `entry` is its stored setting (the showcase images and their PSNRs)."""

    name: str
    param: object
    mean: float
    comparison: Comparison
    input_mean: float | None  # the noisy input's test mean
    entry: BaselineEntry

    @property
    def image(self) -> str | None:
        """Its showcase PNG (relative to the study folder), if stored."""
        return self.entry.images.get(self.name)

    @property
    def image_psnr(self) -> float | None:
        return self.entry.showcase_psnr.get(self.name)

    @property
    def label(self) -> str:
        return baseline_label(self.name, self.entry.channels)


@dataclass
class Slice:
    where: dict  # the other factors' levels
    levels: list[str]  # the question factor's levels with confirm runs, best first (a diverged cell never first)
    comparisons: list[Comparison]  # every pair of levels, a = the better mean
    baseline: "BestBaseline | None" = None

    @property
    def winner(self) -> str | None:
        return self.levels[0] if self.levels else None

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.where.items())


@dataclass
class Verdict:
    claim: object  # studies.spec.Claim
    comparison: Comparison | None  # the family's comparison it rests on, read as a against b
    verdict: str  # reproduced | contradicted | inconclusive | not run


@dataclass
class Analysis:
    results: StudyResults
    score: Score
    unit: str
    family: Family
    cells: dict[str, CellStat] = field(default_factory=dict)
    slices: list[Slice] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    collapses: list[str] = field(default_factory=list)

    @property
    def confidence(self) -> float:
        return self.family.confidence

    @cached_property
    def configs(self) -> dict:
        """{cell key: the cell's validated trial config} at the study's budget, with the run's data flags."""
        from denoise_core.tasks import validate_config

        r = self.results
        budget, extra = r.info.budget or "quick", r.info.extra or {}
        return {r.spec.key_of(c): validate_config(r.spec.cell_config(c, budget, extra)) for c in r.spec.cells()}


def analyse(results: StudyResults) -> Analysis:
    spec, score = results.spec, results.score
    a = Analysis(results, score, get_task(spec.task).unit(spec.metric), Family())
    data = _long(results, score)
    if data.empty:
        return a
    q = spec.question_factor()
    diverged = results.diverged_confirms()
    for where, g in _slices(data, spec):
        means = g.groupby(factor_column(q)).value.mean() * spec.sign
        order = [lv for lv in spec.labels(q) if lv in means.index]
        unstable = {lv for lv in order if spec.key_of({**where, q: lv}) in diverged}
        ranked = sorted(order, key=lambda lv: (lv in unstable, -means[lv]))
        pairs = []
        for x, y in itertools.combinations(order, 2):
            if means[x] < means[y]:
                x, y = y, x
            est = compare(_side(g, q, x), _side(g, q, y), spec.sign)
            pairs.append(Comparison("levels", q, x, y, where, **est))
        s = Slice(where, ranked, pairs)
        s.baseline = _baseline(results, score, spec, s, g, q)
        a.slices.append(s)
        a.family.comparisons += pairs + ([s.baseline.comparison] if s.baseline else [])
    pooled = _pooled_claims(a, data, q)
    correct(a.family)
    for i, claim in enumerate(spec.expect):
        c = pooled.get(i) or a.family.find(q, claim.a, claim.b, dict(claim.where))
        a.verdicts.append(Verdict(claim, c, ""))
        a.verdicts[-1].verdict = judge(a.verdicts[-1])
    a.cells = _cell_stats(results, a.confidence)
    a.collapses = _collapses(results, a.unit)
    return a


def _long(results: StudyResults, score: Score) -> pd.DataFrame:
    """Per-image scores of the completed confirm runs (run = trial), or per-run means with image NaN."""
    data = results.per_image(score)
    if data.empty:
        conf = results.confirm_runs()
        if conf.empty:
            return pd.DataFrame()
        data = conf.assign(value=conf[column(score)], image=float("nan"))
    # a score that is not a number (stored by an older version, from a scene with no clean image) is no evidence
    data = data[np.isfinite(data.value.astype(float))]
    return data.rename(columns={"trial_id": "run"})


def _slices(data: pd.DataFrame, spec):
    """(where, rows) per combination of the other factors, in the spec's order of levels."""
    others = spec.other_factors()
    if not others:
        yield {}, data.assign(image=data.image.astype(str))
        return
    groups = []
    for key, g in data.groupby([factor_column(o) for o in others], sort=False):
        where = dict(zip(others, map(str, key if isinstance(key, tuple) else (key,))))
        groups.append((where, g.assign(image=g.image.astype(str))))
    groups.sort(key=lambda wg: [spec.level_index(o, v) for o, v in wg[0].items()])
    yield from groups


def _side(g: pd.DataFrame, q: str, level: str) -> pd.DataFrame:
    return g[g[factor_column(q)].astype(str) == level][[c for c in ("run", "image", "source", "value") if c in g]]


def _baseline(results: StudyResults, score: Score, spec, s: Slice, g: pd.DataFrame, q: str) -> BestBaseline | None:
    """The slice's best classical baseline (chosen on validation) against its best cell, on the test images."""
    if score.split != "test" or s.winner is None or spec.mode != "max":
        return None
    entry = results.baselines.of(spec.key_of({**s.where, q: s.winner}))
    real = {n: m for n, m in (entry.metrics if entry else {}).items()
            if n != "noisy" and math.isfinite(m.val.get(score.metric, math.nan))}
    if not real:
        return None
    name = max(real, key=lambda n: real[n].val[score.metric])
    values = real[name].test_per_image.get(score.metric)
    if not values:
        return None
    base = pd.DataFrame({"run": name, "image": [str(i) for i in range(len(values))], "value": values})
    base = base[np.isfinite(base.value.astype(float))]  # an image it could not be scored on is no evidence
    comparison = Comparison("baseline", q, s.winner, name, s.where, **compare(_side(g, q, s.winner), base, spec.sign))
    noisy = entry.metrics.get("noisy")
    return BestBaseline(name, real[name].param, real[name].test[score.metric], comparison,
                        noisy.test.get(score.metric) if noisy else None, entry)


def _pooled_claims(a: Analysis, data: pd.DataFrame, q: str) -> dict[int, Comparison]:
    """A claim within one slice rests on that slice's comparison; a claim that pools slices adds its own
    comparison to the family (returned by the claim's index)."""
    spec, out = a.results.spec, {}
    full = set(spec.other_factors())
    for i, claim in enumerate(spec.expect):
        if set(claim.where) != full:
            keep = pd.Series(True, index=data.index)
            for f, v in claim.where.items():
                keep &= data[factor_column(f)].astype(str) == v
            rows = data[keep]
            # an image is itself only within its slice (another noise makes another noisy image)
            rows = rows.assign(image=rows.image.astype(str) + "@" + rows[[factor_column(o) for o in spec.other_factors()]]
                               .astype(str).agg("|".join, axis=1)) if spec.other_factors() else rows
            sa, sb = _side(rows, q, claim.a), _side(rows, q, claim.b)
            if len(sa) and len(sb):
                out[i] = Comparison("claim", q, claim.a, claim.b, dict(claim.where), **compare(sa, sb, spec.sign))
                paired = set(sa.image.astype(str)) & set(sb.image.astype(str))
                out[i].n_slices = max(1, len({im.split("@", 1)[1] for im in paired if "@" in im}))
                a.family.comparisons.append(out[i])
    return out


TOO_FEW = "too few runs or images"


def judge(v: Verdict) -> str:
    """A claim's verdict from its comparison's (corrected) interval of a's advantage over b."""
    c, claim = v.comparison, v.claim
    if c is None:
        return "not run"
    if not c.estimable:
        return TOO_FEW
    if math.isnan(c.lo):
        return "inconclusive"
    if claim.relation == "better":
        return "reproduced" if c.lo > 0 else "contradicted" if c.hi < 0 else "inconclusive"
    m = claim.margin
    return "reproduced" if -m < c.lo and c.hi < m else "contradicted" if c.lo >= m or c.hi <= -m else "inconclusive"


def _cell_stats(results: StudyResults, confidence: float) -> dict[str, CellStat]:
    conf = results.confirm_runs()
    col = column(results.score)
    return {cell: cell_stat(cell, v[np.isfinite(v)], confidence)  # a score that is not a number is no run's result
            for cell, g in conf.groupby("cell", sort=False) if len(v := g[col].astype(float))}


def _collapses(results: StudyResults, unit: str) -> list[str]:
    """Cells whose confirm runs ended far below their best validation score (a collapse late in training)."""
    spec = results.spec
    out = []
    by_cell: dict[str, list[tuple[float, float, int]]] = {}
    for r in results.records:
        curve = r.curve(spec.metric)
        if r.phase != "confirm" or len(curve) < 2:
            continue
        step, best = max(curve, key=lambda sv: spec.sign * sv[1])
        last = curve[-1][1]
        drop = spec.sign * (best - last)
        threshold = 1.0 if unit == "dB" else 0.1 * abs(best)
        if drop > threshold:
            by_cell.setdefault(r.cell, []).append((best, last, step))
    n_runs = results.confirm_runs().groupby("cell").size().to_dict() if len(results.table) else {}
    for cell in spec.cell_keys():
        if cell in by_cell:
            hits = by_cell[cell]
            peak, end, step = max(hits, key=lambda h: spec.sign * (h[0] - h[1]))
            out.append(f"{cell_label(parse_cell(cell))} collapsed late in training in "
                       f"{len(hits)} of {n_runs.get(cell, len(hits))} confirm runs: validation {spec.metric} peaked at "
                       f"{peak:.2f} {unit} (step {step}) and ended at {end:.2f} {unit}. Its test scores use each run's "
                       f"best validation weights, so the collapse does not count against it; its final weights "
                       f"would score lower.")
    return out


__all__ = ["ALPHA", "Analysis", "Slice", "Verdict", "analyse", "judge", "BASELINE_NAMES", "baseline_label"]
