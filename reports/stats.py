"""Confirm-phase statistics: per-cell mean with a t-interval, Welch's t-test between cells, and the
correction for testing many comparisons at once.

Every comparison a report states belongs to a family (the pairwise findings; the literature
claims). Within a family, significance is Benjamini-Hochberg at FDR 5% (scipy's
`false_discovery_control`), and every interval is the false-coverage-rate adjusted interval of
Benjamini & Yekutieli (2005): level 1 - R * 0.05 / m for R discoveries among m comparisons (R = 1
when there is none). A comparison is then significant exactly when its interval excludes zero.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from studies.store import COMPLETED, DIVERGED


@dataclass
class CellStat:
    cell: str
    mean: float
    lo: float  # 95% CI
    hi: float
    n: int


@dataclass
class Difference:
    diff: float  # a - b
    lo: float
    hi: float
    p: float
    n_a: int
    n_b: int

    @property
    def significant(self) -> bool:
        return self.lo > 0 or self.hi < 0


def cell_stat(cell: str, values) -> CellStat:
    v = np.asarray(values, dtype=float)
    n = len(v)
    m = float(v.mean()) if n else float("nan")
    if n < 2:
        return CellStat(cell, m, float("nan"), float("nan"), n)
    half = stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n)
    return CellStat(cell, m, m - half, m + half, n)


ALPHA = 0.05


def welch(a, b, level: float = 0.95) -> Difference:
    """Welch's t-test and 95% CI for mean(a) - mean(b) (scipy's, Welch-Satterthwaite degrees of freedom).

    >>> d = welch([30.1, 30.3, 30.2], [29.0, 29.4, 29.2])
    >>> round(d.diff, 2), d.significant
    (1.0, True)
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return Difference(d, float("nan"), float("nan"), float("nan"), len(a), len(b))
    if a.var(ddof=1) + b.var(ddof=1) == 0:  # no spread at all: scipy's statistic is undefined
        return Difference(d, d, d, 0.0 if d else 1.0, len(a), len(b))
    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(level)
    return Difference(d, float(ci.low), float(ci.high), float(res.pvalue), len(a), len(b))


def score_column(table: pd.DataFrame, metric: str) -> str:
    """The column findings compare: the held-out test score of the confirm runs (`final.test_<metric>`,
    at each run's best validation evaluation) where the study has one, else the last validation score
    (studies stored before test scores existed)."""
    test = f"final.test_{metric}"
    return test if test in table and table[test].notna().any() else f"final.{metric}"


def confirm_values(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Completed confirm runs that have a score (see `score_column`)."""
    if table.empty:
        return table
    col = score_column(table, metric)
    if col not in table:
        return table.iloc[0:0]
    return table[(table.phase == "confirm") & (table.status == COMPLETED) & table[col].notna()]


def diverged_confirms(table: pd.DataFrame) -> dict[str, int]:
    """Diverged confirm runs per cell: they count against their cell (it cannot win a comparison)."""
    if table.empty:
        return {}
    d = table[(table.phase == "confirm") & (table.status == DIVERGED)]
    return d.groupby("cell").size().to_dict()


def question_factor(spec) -> str:
    """The factor the study asks about: `question` in the spec, else the last factor with two or more levels."""
    return spec.question_factor()


@dataclass
class Comparison:
    """Level `a` of `factor` against level `b`, within the slice `where` of the other factors."""

    factor: str
    a: str
    b: str
    where: dict
    values_a: np.ndarray
    values_b: np.ndarray
    raw: Difference  # uncorrected, 95%
    q: float = float("nan")  # Benjamini-Hochberg adjusted p
    adjusted: Difference | None = None  # the interval at the family's adjusted level
    level: float = 0.95

    @property
    def significant(self) -> bool:
        return self.adjusted is not None and self.adjusted.significant


def correct(family: list[Comparison], alpha: float = ALPHA) -> list[Comparison]:
    """Benjamini-Hochberg over the family, and FCR-adjusted intervals at level 1 - R alpha / m."""
    testable = [c for c in family if not math.isnan(c.raw.p)]
    if not testable:
        return family
    q = stats.false_discovery_control([c.raw.p for c in testable], method="bh")
    discoveries = int((q <= alpha).sum())
    level = 1 - max(discoveries, 1) * alpha / len(testable)
    for c, qi in zip(testable, q):
        c.q, c.level = float(qi), level
        c.adjusted = welch(c.values_a, c.values_b, level)
    return family


def slices(conf: pd.DataFrame, spec):
    """(where, rows) for each combination of the factors other than the question factor."""
    f = question_factor(spec)
    others = [o for o in spec.compare if o != f]
    if not others:
        yield {}, conf
        return
    order = {o: [lab for lab, _ in spec.factor_levels(o)] for o in others}
    groups = []
    for key, g in conf.groupby([f"factor.{o}" for o in others], sort=False):
        key = tuple(map(str, key if isinstance(key, tuple) else (key,)))
        groups.append((dict(zip(others, key)), g))
    # in the spec's order of levels, not the order the runs finished in
    groups.sort(key=lambda wg: [order[o].index(v) if v in order[o] else len(order[o]) for o, v in wg[0].items()])
    yield from groups


def ranked(g: pd.DataFrame, f: str, col: str, sign: int, diverged: dict) -> list[str]:
    """The question factor's levels in this slice, best first; a level with a diverged confirm run never first."""
    means = g.groupby(f"factor.{f}")[col].mean() * sign
    unstable = {lvl for lvl in means.index if any(c in diverged for c in g[g[f"factor.{f}"] == lvl].cell.unique())}
    order = list(means.sort_values(ascending=False).index)
    return [lvl for lvl in order if lvl not in unstable] + [lvl for lvl in order if lvl in unstable]


def pairwise(table: pd.DataFrame, spec) -> list[Comparison]:
    """The findings' family: in each slice, the best level of the question factor against every other."""
    conf = confirm_values(table, spec.metric)
    if conf.empty:
        return []
    col, sign, f = score_column(conf, spec.metric), (1 if spec.mode == "max" else -1), question_factor(spec)
    diverged = diverged_confirms(table)
    family = []
    for where, g in slices(conf, spec):
        order = ranked(g, f, col, sign, diverged)
        best = order[0] if order else None
        for level in order[1:]:
            a = g[g[f"factor.{f}"] == best][col].to_numpy(float)
            b = g[g[f"factor.{f}"] == level][col].to_numpy(float)
            family.append(Comparison(f, str(best), str(level), where, a, b, welch(a, b)))
    return correct(family)


def _where(c: Comparison) -> str:
    return "With " + ", ".join(f"{k}={v}" for k, v in c.where.items()) + ", " if c.where else ""


def sentence(c: Comparison, spec, unit: str) -> str:
    sign = 1 if spec.mode == "max" else -1
    f, d = c.factor, c.raw
    seeds = f"{d.n_a} and {d.n_b} seeds" if d.n_a != d.n_b else f"{d.n_a} seeds each"
    if c.adjusted is None:
        return (f"{_where(c)}{f}={c.a} scores {abs(d.diff):.2f} {unit} {'above' if d.diff * sign > 0 else 'below'} "
                f"{f}={c.b} ({seeds}: too few for a confidence interval).")
    lo, hi = sorted((c.adjusted.lo * sign, c.adjusted.hi * sign))  # in the direction of "better": low to high
    ci = f"{c.level:.1%} CI {lo:+.2f} to {hi:+.2f}, BH-adjusted p={c.q:.3g}, {seeds}"
    if c.significant:
        better = "beats" if spec.mode == "max" else "beats (lower is better)"
        return f"{_where(c)}{f}={c.a} {better} {f}={c.b} by {abs(d.diff):.2f} {unit} ({ci})."
    return (f"{_where(c)}{f}={c.a} and {f}={c.b} are not significantly different (difference {d.diff * sign:+.2f} "
            f"{unit} in {f}={c.a}'s favour, {ci}).")


def findings(table: pd.DataFrame, spec, unit: str) -> list[str]:
    """Plain sentences: within each slice of the other factors, the best level of the study's question
    factor (`question_factor`: loss, target, schedule ...) against every other level, with the difference,
    its corrected interval and adjusted p, and the seeds behind it. Diverged cells come first."""
    diverged = diverged_confirms(table)
    out = [f"{cell} diverged in {k} confirm seed(s): it counts against the cell, which is never ranked first."
           for cell, k in diverged.items()]
    family = pairwise(table, spec)
    if not family and confirm_values(table, spec.metric).empty:
        return out + ["No confirm run has completed yet, so there is nothing to compare."]
    return out + [sentence(c, spec, unit) for c in family]


def headlines(table: pd.DataFrame, spec, unit: str) -> list[str]:
    """The answer per slice: the winner, or the levels tied with the best, and the gain over the noisy input."""
    family = pairwise(table, spec)
    conf = confirm_values(table, spec.metric)
    if conf.empty:
        return []
    col, f = score_column(conf, spec.metric), question_factor(spec)
    input_col = col.replace(spec.metric, f"input_{spec.metric}", 1) if spec.metric.startswith("psnr") else None
    out = []
    for where, g in slices(conf, spec):
        mine = [c for c in family if c.where == where]
        if not mine:
            continue
        best = mine[0].a
        tied = [c.b for c in mine if not c.significant]
        prefix = _where(mine[0])
        answer = (f"{f}={best} wins" if not tied else f"{f}={best} ties with {', '.join(f'{f}={t}' for t in tied)}"
                  + " (no significant difference)")
        mean = g[g[f"factor.{f}"] == best][col].mean()
        gain = ""
        if input_col and input_col in g:
            gain = f"; it gains {mean - g[input_col].mean():+.2f} {unit} over the noisy input"
        out.append(f"{prefix}{answer}: {spec.metric} {mean:.2f} {unit}{gain}.")
    return out


