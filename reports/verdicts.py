"""Verdicts: does this run reproduce the literature's claims (a spec's `expect:`)?

Each claim compares two levels of the question factor on the confirm runs' test scores. The claims
of a study form one family, corrected as the findings are (`reports.stats.correct`). A `better`
claim is reproduced when a beats b significantly, contradicted when b beats a significantly, and
inconclusive otherwise. A `same` claim is reproduced when the whole corrected interval lies within
+-margin, contradicted when it lies wholly outside, and inconclusive otherwise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from reports.stats import Comparison, confirm_values, correct, score_column, welch


@dataclass
class Verdict:
    claim: object  # studies.spec.Claim
    comparison: Comparison | None
    verdict: str  # reproduced | contradicted | inconclusive | not run
    effect: str  # "+1.23 dB (97.5% CI +0.40 to +2.05)"


def _rows(conf: pd.DataFrame, factor: str, level: str, where: dict) -> pd.DataFrame:
    keep = conf[f"factor.{factor}"].astype(str) == level
    for f, v in where.items():
        keep &= conf[f"factor.{f}"].astype(str) == v
    return conf[keep]


def verdicts(table: pd.DataFrame, spec, unit: str) -> list[Verdict]:
    if not spec.expect:
        return []
    conf = confirm_values(table, spec.metric)
    col = score_column(conf, spec.metric) if not conf.empty else None
    f, sign = spec.question_factor(), (1 if spec.mode == "max" else -1)
    family, pending = [], []
    for claim in spec.expect:
        if col is None:
            pending.append((claim, None))
            continue
        a = _rows(conf, f, claim.a, claim.where)[col].to_numpy(float)
        b = _rows(conf, f, claim.b, claim.where)[col].to_numpy(float)
        if len(a) == 0 or len(b) == 0:
            pending.append((claim, None))
            continue
        c = Comparison(f, claim.a, claim.b, claim.where, a, b, welch(a, b))
        family.append(c)
        pending.append((claim, c))
    correct(family)
    return [_judge(claim, c, sign, unit) for claim, c in pending]


def _judge(claim, c: Comparison | None, sign: int, unit: str) -> Verdict:
    if c is None:
        return Verdict(claim, None, "not run", "no completed confirm runs of both levels")
    if c.adjusted is None:
        return Verdict(claim, c, "inconclusive", f"{sign * c.raw.diff:+.2f} {unit} (too few seeds for an interval)")
    lo, hi = sorted((sign * c.adjusted.lo, sign * c.adjusted.hi))  # a's advantage, in the better direction
    effect = f"{sign * c.raw.diff:+.2f} {unit} ({c.level:.1%} CI {lo:+.2f} to {hi:+.2f})"
    if claim.relation == "better":
        verdict = "reproduced" if lo > 0 else "contradicted" if hi < 0 else "inconclusive"
    else:
        m = claim.margin
        verdict = ("reproduced" if -m < lo and hi < m else
                   "contradicted" if lo >= m or hi <= -m else "inconclusive")
    if math.isnan(lo):
        verdict = "inconclusive"
    return Verdict(claim, c, verdict, effect)
