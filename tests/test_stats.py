"""The report's statistics: Welch's test against scipy, and findings in both directions of 'better'."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from reports.stats import findings, question_factor, welch
from studies.spec import StudySpec


def test_welch_matches_scipy():
    a, b = [1.0, 1.2, 0.9, 1.1], [0.5, 0.8, 0.7]
    d = welch(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert d.p == pytest.approx(ref.pvalue, rel=1e-9)
    ci = ref.confidence_interval(0.95)
    assert (d.lo, d.hi) == pytest.approx((ci.low, ci.high), rel=1e-9)


def _spec(mode, question=None):
    return StudySpec.model_validate({
        "name": "s", "description": "d", "metric": "bits_per_dim", "mode": mode, "question": question,
        "compare": {"schedule": ["linear", "cosine"], "T": [100]},
        "budgets": {b: {"trials_per_cell": 1} for b in ("smoke", "quick", "full")}})


def _table(values):
    rows = [{"phase": "confirm", "status": "completed", "cell": f"schedule={s}", "factor.schedule": s,
             "factor.T": "100", "final.bits_per_dim": v} for s, vs in values.items() for v in vs]
    return pd.DataFrame(rows)


def test_lower_is_better_finding_names_the_lower_cell_with_an_ordered_interval():
    spec = _spec("min")
    assert question_factor(spec) == "schedule"  # T has one level: nothing to ask about it
    out = findings(_table({"linear": [4.0, 4.1, 3.9], "cosine": [3.0, 3.1, 2.9]}), spec, "bits/dim")
    assert len(out) == 1 and out[0].startswith("With T=100, schedule=cosine beats (lower is better) schedule=linear by 1.00")
    noisy = findings(_table({"linear": [3.0, 5.0, 4.0], "cosine": [3.5, 4.5, 3.0]}), spec, "bits/dim")
    text = noisy[0]
    assert "not significantly different" in text
    lo, hi = (float(x) for x in text.split("95% CI ")[1].split(",")[0].split(" to "))
    assert lo < 0 < hi and np.isclose(lo + hi, 2 * (4.0 - 11 / 3), atol=0.02)


def test_question_must_be_a_factor():
    with pytest.raises(ValueError, match="question 'loss' is not a compared factor"):
        _spec("min", question="loss")
