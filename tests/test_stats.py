"""The report's statistics: comparisons image by image and run by run, one corrected family, and the
page's statements read from it (a verdict can never disagree with its comparison row)."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from denoise_core.results import Score
from studies.analysis import analyse, judge
from reports.build import headline
from studies.stats import Comparison, Family, compare, correct
from studies.cells import cell_key
from studies.documents import StudyInfo, TrialRecord
from studies.spec import StudySpec
from studies.store import StudyResults, trials_table


def _long(values: np.ndarray, prefix: str) -> pd.DataFrame:
    """[runs, images] -> long table (run, image, value)."""
    runs, images = values.shape
    return pd.DataFrame([{"run": f"{prefix}{r}", "image": str(i), "value": values[r, i]}
                         for r in range(runs) for i in range(images)])


def _pair(effect: float, n_runs=3, n_img=32, img_sd=2.0, run_sd=0.3, slope_sd=0.3, noise_sd=0.2, seed=0):
    rng = np.random.default_rng(seed)
    img, slope = rng.normal(28, img_sd, n_img), rng.normal(effect, slope_sd, n_img)
    a = img + slope + rng.normal(0, run_sd, (n_runs, 1)) + rng.normal(0, noise_sd, (n_runs, n_img))
    b = img + rng.normal(0, run_sd, (n_runs, 1)) + rng.normal(0, noise_sd, (n_runs, n_img))
    return _long(a, "a"), _long(b, "b")


def test_mixed_model_pairs_images_and_covers_the_true_effect():
    a, b = _pair(1.0)
    est = compare(a, b, sign=1)
    assert est["method"] == "mixed model over images and runs" and est["n_images"] == 32 and est["n_runs"] == (3, 3)
    assert abs(est["gain"] - 1.0) < 3 * est["se"]
    # run-to-run variation counts: with 3 runs a side, the degrees of freedom are far below the 192 values
    assert 2 < est["df"] < 40


def _crops_of_photos(effect: float, seed: int, n_src=8, per=4, n_runs=3, photo_slope_sd=1.0):
    """Test images that are `per` crops of each of `n_src` photographs: the effect varies by photograph
    (sd `photo_slope_sd`), hardly among one photograph's crops."""
    rng = np.random.default_rng(seed)
    n = n_src * per
    level = rng.normal(28, 2, n_src).repeat(per) + rng.normal(0, 1, n)
    slope = rng.normal(effect, photo_slope_sd, n_src).repeat(per) + rng.normal(0, 0.1, n)
    a = level + slope + rng.normal(0, 0.3, (n_runs, 1)) + rng.normal(0, 0.2, (n_runs, n))
    b = level + rng.normal(0, 0.3, (n_runs, 1)) + rng.normal(0, 0.2, (n_runs, n))
    source = {str(i): f"photo{i // per}" for i in range(n)}
    return (_long(a, "a").assign(source=lambda d: d.image.map(source)),
            _long(b, "b").assign(source=lambda d: d.image.map(source)))


def test_crops_of_one_photograph_are_not_independent_images():
    covered, wider = {True: 0, False: 0}, 0
    for seed in range(12):
        a, b = _crops_of_photos(1.0, seed)
        for aware in (True, False):
            est = compare(a, b, 1) if aware else compare(a.drop(columns="source"), b.drop(columns="source"), 1)
            c = Comparison("levels", "f", "a", "b", {}, **est)
            c.set_confidence(0.95)
            covered[aware] += c.lo < 1.0 < c.hi
            wider += (c.hi - c.lo) * (1 if aware else -1)  # aware minus unaware width, summed below per seed
            if aware:
                assert est["method"] == "mixed model over source images, their crops and runs"
                assert (est["n_images"], est["n_sources"]) == (32, 8) and est["df"] < 12  # 8 photographs, not 32
    # the effect varies by photograph: treating 32 crops as 32 images makes intervals narrower than the photographs
    # allow (with few runs the runs' degrees of freedom keep both wide enough to cover here: 12 and 11 of 12); a level
    # per photograph keeps the 95%
    assert covered[True] >= 11 and wider > 12 * 0.3, (covered, wider)


def test_the_fit_is_the_reml_optimum_not_where_lbfgs_stops():
    """statsmodels' default optimiser (L-BFGS) stops here at a lower REML likelihood, says it converged,
    and gives an interval a third too narrow: the comparison must rest on the optimum."""
    import warnings

    import statsmodels.formula.api as smf

    a, b = _crops_of_photos(1.0, 0)
    df = pd.concat([a.assign(side=1.0), b.assign(side=0.0)], ignore_index=True)
    vc = {"image": "0 + C(image)", "image_side": "0 + C(image):side", "run": "0 + C(run)",
          "source": "0 + C(source)", "source_side": "0 + C(source):side"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = smf.mixedlm("value ~ side", df, groups=np.ones(len(df)), re_formula="0", vc_formula=vc)
        fits = [model.fit(reml=True, method=[m]) for m in ("lbfgs", "powell", "nm", "bfgs")]
    best = max(fits, key=lambda f: f.llf)
    assert fits[0].llf < best.llf - 1  # the trap is real
    assert compare(a, b, 1)["se"] == pytest.approx(best.bse_fe["side"], rel=1e-3)


def test_one_run_a_side_pairs_photographs_not_crops():
    a, b = _crops_of_photos(1.0, 0, n_runs=1)
    est = compare(a, b, 1)
    d = (a.set_index("image").value - b.set_index("image").value).groupby(a.set_index("image").source).mean()
    ref = stats.ttest_1samp(d, 0)
    assert est["method"] == "paired t over source images" and est["df"] == 7
    assert est["p"] == pytest.approx(ref.pvalue, rel=1e-9) and est["gain"] == pytest.approx(d.mean())


def test_pairing_by_image_removes_the_images_own_spread():
    a, b = _pair(1.0, run_sd=0.02, seed=3)  # images differ by 2 dB sd; runs hardly at all
    paired = compare(a, b, sign=1)
    shuffled = b.assign(image=b.image.map(dict(zip(map(str, range(32)), map(str, np.random.default_rng(0).permutation(32))))))
    unpaired = compare(a, shuffled, sign=1)
    assert paired["se"] < 0.1 and unpaired["se"] > 3 * paired["se"]


def test_lower_is_better_gain_points_the_other_way():
    a, b = _pair(-0.5, seed=1)  # a has the lower (better, for bits/dim) values
    assert compare(a, b, sign=-1)["gain"] == pytest.approx(-compare(a, b, sign=1)["gain"])
    assert compare(a, b, sign=-1)["gain"] > 0


def test_run_means_only_fall_back_to_welch_as_scipy_computes_it():
    a = pd.DataFrame({"run": ["a0", "a1", "a2", "a3"], "image": np.nan, "value": [1.0, 1.2, 0.9, 1.1]})
    b = pd.DataFrame({"run": ["b0", "b1", "b2"], "image": np.nan, "value": [0.5, 0.8, 0.7]})
    est = compare(a, b, sign=1)
    ref = stats.ttest_ind(a.value, b.value, equal_var=False)
    assert est["method"] == "Welch's t over run means" and est["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    c = Comparison("levels", "f", "a", "b", {}, **est)
    c.set_confidence(0.95)
    ci = ref.confidence_interval(0.95)
    assert (c.lo, c.hi) == pytest.approx((ci.low, ci.high), rel=1e-9)


def _comparison(p: float, gain: float = 1.0) -> Comparison:
    se = abs(gain) / stats.t.isf(p / 2, 10)
    return Comparison("levels", "loss", "x", "y", {}, gain, se, 10.0, (3, 3), 32, "test", p=p)


def test_benjamini_hochberg_and_the_fcr_level_make_significance_and_interval_agree():
    family = Family([_comparison(p) for p in (0.001, 0.008, 0.03, 0.04, 0.2, 0.6)])
    correct(family)
    ps = [c.p for c in family.comparisons]
    assert [c.q for c in family.comparisons] == pytest.approx(list(stats.false_discovery_control(ps, method="bh")))
    r = sum(c.q <= 0.05 for c in family.comparisons)
    assert family.discoveries == r and family.confidence == pytest.approx(1 - r * 0.05 / 6)
    for c in family.comparisons:  # one level for all, and significance is exactly "the interval excludes 0"
        assert c.confidence == family.confidence and c.significant == (c.q <= 0.05)


def test_a_marginal_single_test_is_no_finding_among_many_nulls():
    family = correct(Family([_comparison(0.03), *[_comparison(p) for p in (0.5, 0.6, 0.7, 0.8)]]))
    assert not family.comparisons[0].significant and family.comparisons[0].q > 0.05


def test_find_reads_a_comparison_either_way_round():
    c = _comparison(0.01, gain=2.0)
    family = correct(Family([c]))
    back = family.find("loss", "y", "x", {})
    assert back.gain == -2.0 and (back.lo, back.hi) == (-c.hi, -c.lo) and back.significant == c.significant


# -- a synthetic study: the page's statements against the family they rest on -------------------
def _spec(expect=(), mode="max"):
    return StudySpec.model_validate({
        "name": "s", "description": "d", "metric": "psnr", "mode": mode, "expect": list(expect),
        "compare": {"noise": ["gaussian", "impulse"], "loss": ["l1", "l2", "l0"]},
        "budgets": {b: {"trials_per_cell": 1} for b in ("smoke", "quick", "full")}})


def _study(spec, effects: dict, seed=0, n_runs=3, n_img=24, run_sd=0.4) -> StudyResults:
    """Confirm runs with per-image test scores: effects[noise][loss] is the cell's mean shift."""
    rng = np.random.default_rng(seed)
    records = []
    for noise, by_loss in effects.items():
        img = rng.normal(25, 2, n_img)
        for loss, shift in by_loss.items():
            for r in range(n_runs):
                values = img + shift + rng.normal(0, run_sd) + rng.normal(0, 0.3, n_img)
                key = Score("psnr", "test").key
                records.append(TrialRecord(
                    trial_id=f"{noise}-{loss}-{r}", cell=cell_key({"noise": noise, "loss": loss}), phase="confirm",
                    factors={"noise": noise, "loss": loss}, params={"lr": 1e-3}, seed=1000 + r, status="completed",
                    attempts=1, start=0.0, end=1.0, node_id="n",
                    history=[{"step": 100, "psnr": float(values.mean()) - 0.1, key: float(values.mean())}],
                    per_image={key: [float(v) for v in values]}))
    info = StudyInfo(planned=len(records), budget="quick", cells=spec.cell_keys(), trials_per_cell=0, seeds=n_runs,
                     optuna_storage="sqlite:///:memory:")
    return StudyResults(None, info, spec, records, trials_table(None, spec, records))


CLAIMS = [{"claim": "l0 beats l1 on impulse", "source": "N2N", "where": {"noise": "impulse"}, "a": "l0", "b": "l1"},
          {"claim": "l2 beats l1 on impulse", "source": "x", "where": {"noise": "impulse"}, "a": "l2", "b": "l1"},
          {"claim": "l1 same as l2 on gaussian", "source": "x", "where": {"noise": "gaussian"}, "a": "l1", "b": "l2",
           "relation": "same", "margin": 0.5},
          {"claim": "l0 beats l2 overall", "source": "x", "a": "l0", "b": "l2"}]  # pools the two noises


def test_verdicts_reproduce_contradict_or_stay_inconclusive():
    effects = {"gaussian": {"l1": 0.0, "l2": 0.05, "l0": -3.0}, "impulse": {"l1": 0.0, "l2": -5.0, "l0": 3.0}}
    a = analyse(_study(_spec(CLAIMS), effects, run_sd=0.05))  # steady runs: "same within 0.5 dB" can be shown
    assert [v.verdict for v in a.verdicts] == ["reproduced", "contradicted", "reproduced", "inconclusive"]
    noisy = analyse(_study(_spec(CLAIMS), effects, run_sd=0.6))  # 3 unsteady runs cannot show sameness
    assert noisy.verdicts[2].verdict == "inconclusive"
    pooled = a.verdicts[3].comparison
    assert pooled.kind == "claim" and pooled in a.family.comparisons  # a pooled claim joins the family


@pytest.mark.parametrize("seed", range(12))
def test_a_verdict_and_its_comparison_row_never_disagree(seed):
    """Random effects, random claims: every verdict is what its comparison's corrected interval says, the
    comparison it rests on is the family's own row for those two levels, and every row is at the one level."""
    rng = np.random.default_rng(100 + seed)
    effects = {n: {lv: float(rng.normal(0, 1.5)) for lv in ("l1", "l2", "l0")} for n in ("gaussian", "impulse")}
    claims = [{"claim": f"c{i}", "source": "s", "where": {"noise": str(rng.choice(["gaussian", "impulse"]))},
               "a": a, "b": b, "relation": str(rng.choice(["better", "same"])), "margin": 0.5}
              for i, (a, b) in enumerate([("l0", "l1"), ("l1", "l2"), ("l2", "l0"), ("l1", "l0")])]
    a = analyse(_study(_spec(claims), effects, seed=seed))
    assert {c.confidence for c in a.family.comparisons} == {a.confidence}
    for v in a.verdicts:
        row = next(c for c in a.family.comparisons if c.kind == "levels" and c.where == v.claim.where
                   and {c.a, c.b} == {v.claim.a, v.claim.b})
        c = v.comparison
        assert (c.lo, c.hi) == ((row.lo, row.hi) if row.a == v.claim.a else (-row.hi, -row.lo))
        assert v.verdict == judge(v)
        if v.claim.relation == "better":
            assert (v.verdict == "reproduced") == (row.significant and row.a == v.claim.a)
            assert (v.verdict == "contradicted") == (row.significant and row.a == v.claim.b)


def test_headline_names_every_significant_difference_and_the_tie():
    effects = {"gaussian": {"l1": 0.0, "l2": 0.02, "l0": -3.0}, "impulse": {"l1": 0.0, "l2": -5.0, "l0": 3.0}}
    a = analyse(_study(_spec(), effects))
    gauss, impulse = (headline(a, sl) for sl in a.slices)
    assert impulse.startswith("With noise=impulse: loss=l0 scores best")
    for x, y in (("l0", "l1"), ("l0", "l2"), ("l1", "l2")):  # every pair differs by 3 dB or more: all named
        assert f"loss={x} beats loss={y} by" in impulse
    assert "Not significant: loss=" in gauss and "loss=l1 vs loss=l2" in gauss.replace("loss=l2 vs loss=l1", "loss=l1 vs loss=l2")
    ci = f"{a.confidence:.1%} CI"
    assert gauss.count(ci) == 3 and impulse.count(ci) == 3


def test_lower_is_better_headline_says_so():
    effects = {"gaussian": {"l1": 0.0, "l2": 0.0, "l0": -3.0}}
    spec = StudySpec.model_validate({
        "name": "s", "description": "d", "metric": "psnr", "mode": "min",
        "compare": {"noise": ["gaussian"], "loss": ["l1", "l2", "l0"]},
        "budgets": {b: {"trials_per_cell": 1} for b in ("smoke", "quick", "full")}})
    a = analyse(_study(spec, effects))
    text = headline(a, a.slices[0])
    assert "loss=l0 scores best" in text and "loss=l0 beats (lower is better) loss=l1" in text


def test_question_must_be_a_factor_and_claims_name_its_levels():
    with pytest.raises(ValueError, match="question 'noise2' is not a compared factor"):
        StudySpec.model_validate({**_spec().model_dump(), "question": "noise2"})
    with pytest.raises(ValueError, match="expect\\[0\\]: 'l3' is not a level of the question factor 'loss'"):
        _spec([{"claim": "c", "source": "s", "a": "l3", "b": "l1"}])
    with pytest.raises(ValueError, match="expect\\[0\\].where: 'poisson' is not a level of 'noise'"):
        _spec([{"claim": "c", "source": "s", "a": "l0", "b": "l1", "where": {"noise": "poisson"}}])


def test_interval_is_nan_only_without_enough_runs():
    c = Comparison("levels", "f", "a", "b", {}, 1.0, float("nan"), float("nan"), (1, 1), 0, "Welch")
    c.set_confidence(0.95)
    assert math.isnan(c.lo) and not c.significant


def test_a_comparison_with_too_few_degrees_of_freedom_has_no_interval_and_is_no_answer():
    """Two runs, one a side: Student's t at 1 degree of freedom made "-505 to 548" and an answer of it. Below MIN_DF
    a comparison has no interval, is no answer ("too few runs or images"), and stays out of the corrected family;
    an exact difference (no variation at all) still has one."""
    from studies.analysis import TOO_FEW, Verdict
    from studies.stats import MIN_DF, MIN_RUNS_FOR_SPREAD, cell_stat
    from studies.spec import Claim

    few = Comparison("levels", "loss", "l1", "l2", {}, gain=2.0, se=3.0, df=MIN_DF - 1.0, n_runs=(1, 1), n_images=4,
                     method="paired t over images", p=0.5)
    ok = Comparison("levels", "loss", "l0", "l2", {}, gain=2.0, se=0.5, df=10.0, n_runs=(3, 3), n_images=32,
                    method="mixed model", p=0.002)
    exact = Comparison("levels", "loss", "l0", "l1", {}, gain=0.0, se=0.0, df=1.0, n_runs=(3, 3), n_images=2,
                       method="exact (no variation)", p=1.0)
    fam = correct(Family([few, ok, exact]))
    assert fam.m == 2 and not few.estimable and not few.testable
    assert math.isnan(few.lo) and math.isnan(few.hi) and not few.significant
    assert ok.significant and exact.estimable and exact.lo == exact.hi == 0.0
    claim = Claim(claim="L1 beats L2", source="a paper", a="l1", b="l2")
    assert judge(Verdict(claim, few, "")) == TOO_FEW
    assert judge(Verdict(claim.model_copy(update={"a": "l0"}), ok, "")) == "reproduced"
    # a cell's error bar over runs: none from two runs (t at 1 degree of freedom), one from three
    assert math.isnan(cell_stat("c", [20.0, 25.0], 0.95).lo)
    three = cell_stat("c", [20.0, 21.0, 22.0][:MIN_RUNS_FOR_SPREAD], 0.95)
    assert three.lo == pytest.approx(21.0 - stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3))


def test_precision_what_a_comparison_could_detect_and_what_more_seeds_would_give():
    """An undecided comparison says the smallest difference it could have found ((t + t_power) x se), and the seeds a
    side its own difference would need, projected from the mixed model's variance components on the degrees of freedom
    those runs give (2n - 2; n - 1 against a baseline): at that many seeds the projected interval reaches the
    difference, at one fewer it does not; where the images' spread alone is too wide, no number of seeds does (None)."""
    from studies.stats import POWER

    a, b = _pair(0.15, n_runs=3, run_sd=0.4)
    c = Comparison("levels", "loss", "l1", "l2", {}, **compare(a, b, sign=1))
    c.set_confidence(0.95)
    assert set(c.vc) == {"run", "image_side", "source_side", "resid"} and c.vc["run"] > 0
    assert c.detectable() == pytest.approx((stats.t.ppf(0.975, c.df) + stats.t.ppf(POWER, c.df)) * c.se)

    def reach(n):  # the smallest difference found with POWER at n seeds a side, on the 2n - 2 df the runs give
        v, t = c.vc, stats.t.ppf(0.975, 2 * n - 2) + stats.t.ppf(POWER, 2 * n - 2)
        return t * math.sqrt(2 * v["run"] / n + 2 * v["resid"] / (n * c.n_images) + v["image_side"] / c.n_images)

    effect = max(0.5, 2 * reach(10_000))
    n = c.seeds_for(effect)
    assert n is not None and reach(n) <= effect
    assert n == 2 or reach(n - 1) > effect  # one seed fewer does not reach it
    base = Comparison(**{**c.__dict__, "kind": "baseline"})  # one side without runs: fewer df at every n
    assert base.seeds_for(effect) >= n
    assert c.seeds_for(0.5 * reach(10_000) + 1e-9) is None  # below the images' floor: seeds cannot get there
    paired = Comparison("levels", "loss", "l1", "l2", {}, gain=0.2, se=0.1, df=10, n_runs=(1, 1), n_images=8,
                        method="paired t over images", p=0.07)
    assert paired.seeds_for(0.2) is None  # one run a side: no run variance to project from


def test_a_result_on_the_edge_is_marked_borderline():
    edge = Comparison("levels", "loss", "l1", "l2", {}, gain=1.0, se=0.5, df=30, n_runs=(3, 3), n_images=32,
                      method="m", p=0.05)
    edge.set_confidence(1 - 2 * stats.t.sf(1.0 / 0.5, 30))  # the interval's low end at exactly zero
    assert edge.borderline and abs(edge.lo) < 1e-9
    clear = Comparison("levels", "loss", "l1", "l2", {}, gain=3.0, se=0.5, df=30, n_runs=(3, 3), n_images=32,
                       method="m", p=1e-6)
    clear.set_confidence(0.95)
    assert not clear.borderline
