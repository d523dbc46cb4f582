"""Confirm-phase statistics: per-cell mean with a t-interval, and Welch's t-test between cells."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats


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


def welch(a, b) -> Difference:
    """Welch's t-test and 95% CI for mean(a) - mean(b), Welch-Satterthwaite degrees of freedom."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return Difference(d, float("nan"), float("nan"), float("nan"), len(a), len(b))
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return Difference(d, d, d, 0.0 if d else 1.0, len(a), len(b))
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = stats.t.ppf(0.975, df) * se
    p = float(2 * stats.t.sf(abs(d) / se, df))
    return Difference(d, d - half, d + half, p, len(a), len(b))


def confirm_values(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Final metric of every completed confirm run."""
    col = f"final.{metric}"
    if table.empty or col not in table:
        return table.iloc[0:0]
    return table[(table.phase == "confirm") & (table.status == "completed") & table[col].notna()]


def question_factor(spec) -> str:
    """The factor the study asks about: `question` in the spec, else the last factor with two or more levels."""
    factors = list(spec.compare)
    return spec.question or next((f for f in reversed(factors) if len(spec.compare[f]) > 1), factors[-1])


def findings(table: pd.DataFrame, spec, unit: str) -> list[str]:
    """Plain sentences: within each slice of the other factors, the best level of the study's question
    factor (`question_factor`: loss, target, schedule ...) against every other level, with the difference,
    its 95% CI (Welch) and the seeds behind it. The other factors (noise ...) define the slices."""
    metric, sign = spec.metric, (1 if spec.mode == "max" else -1)
    conf = confirm_values(table, metric)
    if conf.empty:
        return ["No confirm run has finished yet, so there is nothing to compare."]
    col = f"final.{metric}"
    factors = list(spec.compare)
    out = []
    better = "beats" if spec.mode == "max" else "beats (lower is better)"
    f = question_factor(spec)
    others = [o for o in factors if o != f]
    groups = conf.groupby([f"factor.{o}" for o in others]) if others else [((), conf)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        where = ", ".join(f"{o}={k}" for o, k in zip(others, key))
        prefix = f"With {where}, " if where else ""
        means = g.groupby(f"factor.{f}")[col].mean()
        if len(means) < 2:
            continue
        best = (means * sign).idxmax()
        a = g[g[f"factor.{f}"] == best][col]
        for level in means.index:
            if level == best:
                continue
            d = welch(a, g[g[f"factor.{f}"] == level][col])
            seeds = f"{d.n_a} and {d.n_b} seeds" if d.n_a != d.n_b else f"{d.n_a} seeds each"
            if math.isnan(d.lo):
                out.append(f"{prefix}{f}={best} scores {abs(d.diff):.2f} {unit} {'above' if d.diff * sign > 0 else 'below'} "
                           f"{f}={level} ({seeds}: too few for a confidence interval).")
            elif d.significant:
                out.append(f"{prefix}{f}={best} {better} {f}={level} by {abs(d.diff):.2f} {unit} "
                           f"(95% CI {min(abs(d.lo), abs(d.hi)):.2f} to {max(abs(d.lo), abs(d.hi)):.2f}, "
                           f"Welch's t-test p={d.p:.3g}, {seeds}).")
            else:  # the difference in the direction of "better", so its CI reads low to high
                lo, hi = sorted((d.lo * sign, d.hi * sign))
                out.append(f"{prefix}{f}={best} and {f}={level} are not significantly different "
                           f"(difference {d.diff * sign:+.2f} {unit} in {f}={best}'s favour, 95% CI {lo:+.2f} to {hi:+.2f}, "
                           f"p={d.p:.3g}, {seeds}).")
    return out
