"""What a study found, computed once from its stored results: the family of comparisons (see
`studies.stats`), per-cell statistics at the family's level, the classical baselines per slice,
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
from studies.stats import ALPHA, CellStat, Comparison, Family, cell_stat, compare, correct, spending
from studies.cells import cell_label, confirm_index, in_slice, parse_cell
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
    looks: list = field(default_factory=list)  # the Looks the comparisons were made at (one without max_seeds)

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

    @cached_property
    def zero_shot_cells(self) -> set[str]:
        """The cells whose method trains nothing and fits each image it denoises (ZS-N2N, Noise2Fast)."""
        from denoise_core.schemes import build_scheme

        if self.results.spec.task != "denoise":
            return set()
        return {k for k, c in self.configs.items() if build_scheme(c.target, **c.target_params).zero_shot}


def analyse(results: StudyResults) -> Analysis:
    """Everything the page states. With one look (no `max_seeds`), one family of every comparison at 5%; with
    several, each look's family at its share of 5% (`studies.stats.spending`), and each comparison as the first look
    that decided it made it (else as its last look)."""
    spec, score = results.spec, results.score
    a = Analysis(results, score, get_task(spec.task).unit(spec.metric), Family())
    data = _long(results, score)
    if data.empty:
        return a
    q = spec.question_factor()
    ranked = _ranked_slices(results, data, q)
    winners = {_wkey(w): levels[0] for w, levels, _, _ in ranked if levels}
    made, a.looks = sequential(results, data, winners)
    for where, levels, g, means in ranked:
        pairs = [_oriented(made[k], means) for k in (_pair_id(where, x, y) for x, y in
                                                     itertools.combinations(levels, 2)) if k in made]
        s = Slice(where, levels, pairs)
        b = made.get(("baseline", _wkey(where)))
        s.baseline = _baseline(results, score, spec, s, g, q, b) if b else None
        a.slices.append(s)
        a.family.comparisons += pairs + ([s.baseline.comparison] if s.baseline else [])
    claims = {c.claim: c for c in made.values() if c.kind == "claim"}
    a.family.comparisons += list(claims.values())
    last = a.looks[-1]
    a.family.confidence, a.family.discoveries = last.confidence, sum(c.significant for c in a.family.comparisons)
    for i, claim in enumerate(spec.expect):
        c = claims.get(i) or a.family.find(q, claim.a, claim.b, dict(claim.where))
        a.verdicts.append(Verdict(claim, c, ""))
        a.verdicts[-1].verdict = judge(a.verdicts[-1])
    a.cells = _cell_stats(results, a.confidence)
    a.collapses = _collapses(results, a.unit)
    return a


@dataclass
class Look:
    """One look at the confirm runs: `seeds` a side at most, its share `alpha` of the error rate, the `m` comparisons
    it tested, of which `discoveries` were significant, and the level of its intervals."""

    seeds: int
    alpha: float
    m: int
    discoveries: int
    confidence: float
    cells: int  # cells still confirmed at this look


def sequential(results: StudyResults, data: pd.DataFrame, winners: dict, upto: int | None = None,
               baselines: bool = True) -> tuple[dict, list[Look]]:
    """The comparisons the looks made ({id: Comparison}, each from the first look that decided it, else its last),
    and the looks, up to look index `upto` (all that have runs: default). A look compares the cells that got its wave
    of runs (every cell at the first), on their first `seeds` runs, corrected at its share of 5%. `winners`
    ({slice: level}) names the cell each slice sets against its best baseline (left out with `baselines=False`)."""
    spec = results.spec
    looks = planned_looks(results)
    shares = spending(looks)
    made, out = {}, []
    index = data.seed.map(confirm_index)
    for k, (n, alpha) in enumerate(zip(looks, shares)):
        if upto is not None and k > upto:
            break
        cells = _given_wave(results, looks, k)
        rows = data[(index < n) & data.cell.isin(cells)]
        if rows.empty:
            break
        fam = _family(results, rows, alpha, winners if baselines else {}, n if len(looks) > 1 else 0, set(data.cell))
        out.append(Look(n, alpha, fam.m, fam.discoveries, fam.confidence, len(set(rows.cell))))
        for c in fam.comparisons:
            key = _id(c)
            if key not in made or not made[key].decided(margin_of(spec, made[key])):
                made[key] = c
    return made, out


def continuing(results: StudyResults, look: int) -> set[str]:
    """The cells that get another wave after look index `look`: those with a claim or a level comparison the looks so
    far have not decided (the baseline comparisons, scored beside the trials, hold no cell back)."""
    spec = results.spec
    data = _long(results, results.score)
    if data.empty:
        return set()
    made, _ = sequential(results, data, {}, upto=look, baselines=False)
    active = set(_given_wave(results, planned_looks(results), look))
    q, out = spec.question_factor(), set()
    for c in made.values():  # a claim's `where` is the slice it pools
        if not c.decided(margin_of(spec, c)):
            out |= {k for k in active if in_slice(parse_cell(k), c.where) and parse_cell(k).get(q) in (c.a, c.b)}
    return out


def planned_looks(results: StudyResults) -> list[int]:
    """The confirm runs a cell has at each look the study's budget plans (`StudySpec.looks`)."""
    return results.spec.looks(results.info.budget or "quick")


def _given_wave(results: StudyResults, looks: list[int], k: int) -> list[str]:
    """The cells confirmed at look k: every cell at the first; later, those given runs past the look before."""
    if k == 0:
        return results.spec.cell_keys()
    return sorted({r.cell for r in results.records if r.phase == "confirm" and r.seed is not None
                   and confirm_index(r.seed) >= looks[k - 1]})


def _family(results: StudyResults, data: pd.DataFrame, alpha: float, winners: dict, look: int,
            every: set[str]) -> Family:
    """One look's family: every pair of levels per slice, each slice's winner against its best baseline (where
    `winners` names it and it has runs here), the claims that pool slices; corrected at `alpha`."""
    spec, score = results.spec, results.score
    q = spec.question_factor()
    fam = Family()
    for where, g in _slices(data, spec):
        means, order = _level_means(g, q, spec)
        for x, y in itertools.combinations(order, 2):
            if means[x] < means[y]:
                x, y = y, x
            fam.comparisons.append(Comparison("levels", q, x, y, where, **compare(_side(g, q, x), _side(g, q, y), spec.sign)))
        if (w := winners.get(_wkey(where))) in order:
            if (c := _baseline_comparison(results, score, spec, where, w, g, q)) is not None:
                fam.comparisons.append(c)
    fam.comparisons += _pooled_claims(spec, data, q, every)
    for c in fam.comparisons:
        c.look, c.alpha = look, alpha
    return correct(fam, alpha)


def _ranked_slices(results: StudyResults, data: pd.DataFrame, q: str) -> list[tuple]:
    """(where, the question's levels best first by their mean over every run, rows, those means) per slice; a cell with
    a diverged confirm run is never first."""
    spec, diverged = results.spec, results.diverged_confirms()
    out = []
    for where, g in _slices(data, spec):
        means, order = _level_means(g, q, spec)
        unstable = {lv for lv in order if spec.key_of({**where, q: lv}) in diverged}
        out.append((where, sorted(order, key=lambda lv: (lv in unstable, -means[lv])), g, means))
    return out


def _level_means(g: pd.DataFrame, q: str, spec) -> tuple[pd.Series, list[str]]:
    """The slice's mean per level of `q` (signed: higher is better) and its levels with runs, in the spec's order."""
    means = g.groupby(factor_column(q)).value.mean() * spec.sign
    return means, [lv for lv in spec.labels(q) if lv in means.index]


def _wkey(where: dict) -> tuple:
    return tuple(sorted(where.items()))


def _pair_id(where: dict, x: str, y: str) -> tuple:
    return ("levels", _wkey(where), frozenset((x, y)))


def _id(c: Comparison) -> tuple:
    if c.kind == "levels":
        return _pair_id(c.where, c.a, c.b)
    return ("claim", c.claim) if c.kind == "claim" else ("baseline", _wkey(c.where))


def margin_of(spec, c: Comparison) -> float | None:
    """The difference below which a comparison is decided 'no meaningful difference': its claim's margin (a claim
    pooling slices, or one resting on this slice's pair), else the study's `margin`."""
    if c.kind == "claim":
        return spec.expect[c.claim].within
    if c.kind == "levels":
        for claim in spec.expect:
            if dict(claim.where) == c.where and {claim.a, claim.b} == {c.a, c.b}:
                return claim.within
    return spec.margin


def _oriented(c: Comparison, means: pd.Series) -> Comparison:
    """A pair read with the better of the slice's `means` over all runs first (a look may have seen them the other
    way)."""
    return c.flipped() if means[c.a] < means[c.b] else c


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


def _baseline_comparison(results: StudyResults, score: Score, spec, where: dict, winner: str, g: pd.DataFrame,
                         q: str) -> Comparison | None:
    """The slice's best classical baseline (chosen on validation) against its cell `winner`, on the test images."""
    name, metrics = _best_baseline(results, score, spec, where, winner)
    values = metrics.test_per_image.get(score.metric) if metrics else None
    if not values:
        return None
    base = pd.DataFrame({"run": name, "image": [str(i) for i in range(len(values))], "value": values})
    base = base[np.isfinite(base.value.astype(float))]  # an image it could not be scored on is no evidence
    return Comparison("baseline", q, winner, name, where, **compare(_side(g, q, winner), base, spec.sign))


def _best_baseline(results: StudyResults, score: Score, spec, where: dict, winner: str):
    """(name, metrics) of the best classical baseline on validation for the slice's cell `winner`; (None, None)."""
    if score.split != "test" or spec.mode != "max":
        return None, None
    entry = results.baselines.of(spec.key_of({**where, spec.question_factor(): winner}))
    real = {n: m for n, m in (entry.metrics if entry else {}).items()
            if n != "noisy" and math.isfinite(m.val.get(score.metric, math.nan))}
    if not real:
        return None, None
    name = max(real, key=lambda n: real[n].val[score.metric])
    return name, real[name]


def _baseline(results: StudyResults, score: Score, spec, s: Slice, g: pd.DataFrame, q: str,
              comparison: Comparison) -> BestBaseline | None:
    """The slice's best baseline as the page shows it, with the comparison the looks made of it."""
    entry = results.baselines.of(spec.key_of({**s.where, q: s.winner}))
    name, metrics = _best_baseline(results, score, spec, s.where, s.winner)
    if name is None or comparison.a != s.winner:
        return None
    noisy = entry.metrics.get("noisy")
    return BestBaseline(name, metrics.param, metrics.test[score.metric], comparison,
                        noisy.test.get(score.metric) if noisy else None, entry)


def _pooled_claims(spec, data: pd.DataFrame, q: str, every: set[str]) -> list[Comparison]:
    """A claim within one slice rests on that slice's comparison; a claim that pools slices is a comparison of its
    own, made where `data` holds every cell of its pool that has runs at all (`every`): a look that confirmed only
    some of them would judge another pool."""
    out = []
    full = set(spec.other_factors())
    for i, claim in enumerate(spec.expect):
        if set(claim.where) == full:
            continue
        keep = pd.Series(True, index=data.index)
        for f, v in claim.where.items():
            keep &= data[factor_column(f)].astype(str) == v
        rows = data[keep & data[factor_column(q)].astype(str).isin((claim.a, claim.b))]
        pool = {k for k in every if in_slice(parse_cell(k), claim.where) and parse_cell(k).get(q) in (claim.a, claim.b)}
        if not pool <= set(rows.cell):
            continue
        # an image is itself only within its slice (another noise makes another noisy image)
        rows = rows.assign(image=rows.image.astype(str) + "@" + rows[[factor_column(o) for o in spec.other_factors()]]
                           .astype(str).agg("|".join, axis=1)) if spec.other_factors() else rows
        sa, sb = _side(rows, q, claim.a), _side(rows, q, claim.b)
        if len(sa) and len(sb):
            c = Comparison("claim", q, claim.a, claim.b, dict(claim.where), **compare(sa, sb, spec.sign), claim=i)
            paired = set(sa.image.astype(str)) & set(sb.image.astype(str))
            c.n_slices = max(1, len({im.split("@", 1)[1] for im in paired if "@" in im}))
            out.append(c)
    return out


TOO_FEW = "too few runs or images"
NO_DIFFERENCE = "no meaningful difference"  # a better claim whose interval lies inside +-its margin


def judge(v: Verdict) -> str:
    """A claim's verdict from its comparison's (corrected) interval of a's advantage over b."""
    c, claim = v.comparison, v.claim
    if c is None:
        return "not run"
    if not c.estimable:
        return TOO_FEW
    if math.isnan(c.lo):
        return "inconclusive"
    m = claim.within
    inside = m is not None and -m < c.lo and c.hi < m
    if claim.relation == "better":
        return "reproduced" if c.lo > 0 else "contradicted" if c.hi < 0 else NO_DIFFERENCE if inside else "inconclusive"
    return "reproduced" if inside else "contradicted" if c.lo >= m or c.hi <= -m else "inconclusive"


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


__all__ = ["ALPHA", "Analysis", "Slice", "Verdict", "analyse", "judge", "margin_of", "continuing", "sequential",
           "planned_looks", "BASELINE_NAMES", "baseline_label"]
