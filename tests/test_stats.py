"""The report's statistics: Welch's test against scipy, and findings in both directions of 'better'."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from reports.stats import correct, findings, headlines, pairwise, question_factor, welch
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
    lo, hi = (float(x) for x in text.split("95.0% CI ")[1].split(",")[0].split(" to "))  # one comparison: 95%
    assert lo < 0 < hi and np.isclose(lo + hi, 2 * (4.0 - 11 / 3), atol=0.02)


def test_question_must_be_a_factor():
    with pytest.raises(ValueError, match="question 'loss' is not a compared factor"):
        _spec("min", question="loss")


def _loss_table(values, metric="psnr", test=True):
    """values: {noise: {loss: [scores]}} as confirm runs, scored on the test split, input PSNR 20."""
    col = f"final.test_{metric}" if test else f"final.{metric}"
    rows = [{"phase": "confirm", "status": "completed", "cell": f"noise={n},loss={l}", "factor.noise": n,
             "factor.loss": l, col: v, "final.test_input_psnr": 20.0, "final.step": 400}
            for n, by_loss in values.items() for l, vs in by_loss.items() for v in vs]
    return pd.DataFrame(rows)


def _loss_spec(expect=()):
    return StudySpec.model_validate({
        "name": "s", "description": "d", "metric": "psnr", "mode": "max", "expect": list(expect),
        "compare": {"noise": ["gaussian", "impulse"], "loss": ["l1", "l2", "l0"]},
        "budgets": {b: {"trials_per_cell": 1} for b in ("smoke", "quick", "full")}})


def test_benjamini_hochberg_over_the_family_matches_scipy_and_widens_intervals():
    rng = np.random.default_rng(0)
    values = {n: {"l1": list(28 + rng.normal(0, .3, 3)), "l2": list(27.8 + rng.normal(0, .3, 3)),
                  "l0": list(25 + rng.normal(0, .3, 3))} for n in ("gaussian", "impulse")}
    family = pairwise(_loss_table(values), _loss_spec())
    assert len(family) == 4  # best vs the two others, in each of two slices
    ps = [c.raw.p for c in family]
    assert [c.q for c in family] == pytest.approx(list(stats.false_discovery_control(ps, method="bh")))
    r = sum(c.q <= 0.05 for c in family)
    assert all(c.level == pytest.approx(1 - max(r, 1) * 0.05 / 4) for c in family)
    for c in family:  # the adjusted interval contains the raw one and excludes 0 exactly when significant
        assert c.adjusted.lo <= c.raw.lo and c.adjusted.hi >= c.raw.hi
        assert c.significant == (c.q <= 0.05)
    by = {(c.where["noise"], c.b): c for c in family}
    assert by[("gaussian", "l0")].significant and not by[("gaussian", "l2")].significant


def test_correction_turns_a_marginal_single_test_into_no_finding():
    """p = 0.03 alone is significant; among five comparisons with large p it is not."""
    from reports.stats import Comparison

    def comp(a, b):
        a, b = np.asarray(a, float), np.asarray(b, float)
        return Comparison("loss", "x", "y", {}, a, b, welch(a, b))

    marginal = comp([1.0, 1.1, 1.2, 1.05], [0.9, 0.95, 1.0, 0.92])
    assert 0.01 < marginal.raw.p < 0.05 and marginal.raw.significant
    nulls = [comp([1.0, 1.2, 0.9], [1.05, 1.1, 0.95]) for _ in range(4)]
    correct([marginal, *nulls])
    assert not marginal.significant and marginal.q > 0.05


def test_headline_names_winner_or_tie_and_the_gain_over_the_input():
    values = {"gaussian": {"l1": [28.0, 28.2, 28.1], "l2": [28.1, 27.9, 28.05], "l0": [25.0, 25.1, 24.9]},
              "impulse": {"l1": [21.0, 21.1, 20.9], "l2": [16.0, 16.2, 16.1], "l0": [24.0, 24.1, 23.9]}}
    heads = headlines(_loss_table(values), _loss_spec(), "dB")
    assert heads[1] == "With noise=impulse, loss=l0 wins: psnr 24.00 dB; it gains +4.00 dB over the noisy input."
    assert heads[0].startswith("With noise=gaussian, loss=l1 ties with loss=l2 (no significant difference): psnr 28.10")


def test_verdicts_reproduce_contradict_or_stay_inconclusive():
    from reports.verdicts import verdicts

    claims = [{"claim": "l0 beats l1 on impulse", "source": "N2N", "where": {"noise": "impulse"}, "a": "l0", "b": "l1"},
              {"claim": "l2 beats l1 on impulse", "source": "made up", "where": {"noise": "impulse"}, "a": "l2", "b": "l1"},
              {"claim": "l1 same as l2 on gaussian", "source": "x", "where": {"noise": "gaussian"}, "a": "l1", "b": "l2",
               "relation": "same", "margin": 0.5},
              {"claim": "l1 same as l0 on gaussian", "source": "x", "where": {"noise": "gaussian"}, "a": "l1", "b": "l0",
               "relation": "same", "margin": 0.5},
              {"claim": "noisy l0 vs l2", "source": "x", "where": {"noise": "gaussian"}, "a": "l0", "b": "l2"}]
    values = {"gaussian": {"l1": [28.0, 28.2, 28.1, 28.1], "l2": [28.1, 27.9, 28.05, 28.0], "l0": [25.0, 29.0, 22.0, 27]},
              "impulse": {"l1": [21.0, 21.1, 20.9], "l2": [16.0, 16.2, 16.1], "l0": [24.0, 24.1, 23.9]}}
    got = [v.verdict for v in verdicts(_loss_table(values), _loss_spec(claims), "dB")]
    assert got == ["reproduced", "contradicted", "reproduced", "inconclusive", "inconclusive"]


def test_a_claim_must_name_levels_of_the_question_factor():
    with pytest.raises(ValueError, match="expect\\[0\\]: 'l3' is not a level of the question factor 'loss'"):
        _loss_spec([{"claim": "c", "source": "s", "a": "l3", "b": "l1"}])
    with pytest.raises(ValueError, match="expect\\[0\\].where: 'poisson' is not a level of 'noise'"):
        _loss_spec([{"claim": "c", "source": "s", "a": "l0", "b": "l1", "where": {"noise": "poisson"}}])
