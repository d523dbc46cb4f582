"""The report's statistics: every comparison the page states, estimated image by image and corrected
together, at one confidence level.

The family. In each slice (a combination of the factors other than the question factor): every pair
of the question factor's levels, and the slice's best cell against its best classical baseline; plus
each literature claim (`expect:`) that pools slices. Every sentence, verdict, table row and error bar
on the page reads this one family.

One comparison. Confirm runs score each test image (the same images, the same noisy inputs, for every
cell and baseline). The difference between two sides is the fixed effect of a linear mixed model
(statsmodels `MixedLM`, REML) of the per-image scores:

    score ~ side + (1 | image) + (0 + side | image) + (1 | run)

images are paired across the sides (their own difficulty cancels), the side's effect may vary from image
to image (so the interval speaks for other images like these), and each training run (seed) shifts all
its images together (so it speaks for other seeds). Where the test images are crops of fewer source
images (the bundled test split: 32 crops of 8 photographs), crops of one photograph share its content,
so the photograph is a level above the crop, with its own (1 | source) + (0 + side | source): the
interval then speaks for other photographs, not only for other crops of these. The interval uses
Student's t with Satterthwaite's degrees of freedom from the sources of its variance: runs (n_runs - 2
degrees of freedom), source images (n_sources - 1) and crops within them (n_images - n_sources), never
more than the runs' n_runs - 2 (the containment rule: with few runs Satterthwaite alone is too liberal). With
too few runs for a run variance, a paired t-test over images (or over source images' means) stands in;
a study stored without per-image scores falls back to Welch's t-test over run means.

The correction. Benjamini-Hochberg over the whole family at a false discovery rate of 5% (scipy's
`false_discovery_control`), and every interval at the false-coverage-rate adjusted level of Benjamini &
Yekutieli (2005), 1 - R * 5% / m for R discoveries among m comparisons (R = 1 when there is none). A
comparison is then significant exactly when its interval excludes zero, whichever way it is read.

Looking again (adaptive confirmation, `studies.analysis`). A study that adds confirm runs where a comparison is
undecided looks at its data several times; testing each look at 5% would find a difference that is not there
far more often than 5%. The looks share the 5% instead (`spending`): look k is corrected as above at its share
alpha_k, the shares sum to 5%, and a comparison keeps the interval of the first look that decided it. Whatever
the looks decide and however they depend on each other, the chance of a false discovery over all of them is at
most the sum of the shares (a union bound): the page's error control holds under the optional stopping.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05
# an interval estimated on fewer degrees of freedom says nothing: at 1 (two runs, one a side) Student's t at the
# FCR level is over 60 and a 2 dB difference reads "-505 to 548". Such a comparison is stated as too few runs or
# images, is not an answer, and is left out of the corrected family. At 2 (three runs against a baseline, two a
# side) the interval is wide but an answer: the containment rule below gives a comparison no more df than its runs
MIN_DF = 2
# a cell's error bar over its runs: with two runs (1 degree of freedom) Student's t at the family's level is over
# 60 and the bar spans hundreds of dB; from three runs on it is drawn
MIN_RUNS_FOR_SPREAD = 3
POWER = 0.8  # the power at which the page states what a comparison could detect, and what more seeds would


def spending(looks: list[int], alpha: float = ALPHA) -> list[float]:
    """Each look's share of `alpha`, for looks after `looks[k]` confirm runs a side: the increments of the Lan-DeMets
    Pocock-type spending function alpha * ln(1 + (e - 1) t) at the information fractions t = looks[k] / looks[-1].
    They sum to alpha; one look gets all of it. Pocock-type spends early (O'Brien-Fleming-type would keep almost
    everything for the last look), so a comparison that is clear at the first look is decided there.

    >>> [round(a, 4) for a in spending([3, 6, 9])], spending([3])
    ([0.0226, 0.0155, 0.0118], [0.05])
    """
    spent = [alpha * math.log(1 + (math.e - 1) * n / looks[-1]) for n in looks]
    return [b - a for a, b in zip([0.0, *spent[:-1]], spent)]


@dataclass
class Comparison:
    """Side `a` against side `b` within the slice `where`: `gain` is a's advantage in the metric's units,
    positive when a scores better (higher, or lower for a lower-is-better metric)."""

    kind: str  # levels: two levels of the question factor; baseline: best cell vs best baseline; claim
    factor: str
    a: str
    b: str
    where: dict
    gain: float
    se: float
    df: float
    n_runs: tuple[int, int]
    n_images: int
    method: str
    n_sources: int = 0  # source images the test images were cut from (0: each image is its own)
    n_slices: int = 1  # slices a claim pools: each test image counts once in each (n_images counts them all)
    p: float = float("nan")
    q: float = float("nan")  # Benjamini-Hochberg adjusted p
    confidence: float = 1 - ALPHA
    lo: float = float("nan")  # the interval of `gain` at `confidence`
    hi: float = float("nan")
    # the mixed model's variance components (run, image_side, source_side, resid), from which the precision of the
    # same comparison with more seeds is projected; None for the paired and Welch tests
    vc: dict | None = None
    look: int = 0  # the confirm runs a side at the look this comparison was made (0: the study takes one look)
    alpha: float = ALPHA  # the share of the error rate its look was corrected at
    claim: int | None = None  # kind claim: the index of the claim (spec.expect) it judges

    def decided(self, margin: float | None) -> bool:
        """Whether it is an answer: significant, or its interval lies inside +-margin (no meaningful difference)."""
        if self.significant:
            return True
        return margin is not None and self.estimable and -margin < self.lo and self.hi < margin

    @property
    def significant(self) -> bool:
        return self.lo > 0 or self.hi < 0

    @property
    def estimable(self) -> bool:
        """Whether its runs and images give an interval at all (MIN_DF; an exact difference always does)."""
        return self.se == 0 or (math.isfinite(self.se) and self.df >= MIN_DF)

    @property
    def testable(self) -> bool:
        return not math.isnan(self.p) and self.estimable

    @property
    def borderline(self) -> bool:
        """Its interval's end nearest zero lies within 10% of the half-width from zero: a verdict on the edge."""
        if not (self.estimable and self.lo == self.lo) or self.se == 0:
            return False
        return min(abs(self.lo), abs(self.hi)) <= 0.1 * (self.hi - self.lo) / 2

    def detectable(self) -> float:
        """The smallest difference these runs and images would find significant with POWER at the page's level:
        (t_(1 - a/2) + t_POWER) x se on the comparison's degrees of freedom (a = 1 - confidence); NaN without one."""
        if not self.estimable or self.se == 0:
            return float("nan")
        return float((stats.t.ppf(1 - (1 - self.confidence) / 2, self.df) + stats.t.ppf(POWER, self.df)) * self.se)

    def seeds_for(self, effect: float, most: int = 10_000) -> int | None:
        """Seeds a side (the test images kept) at which a true difference of `effect` would be found with POWER at
        the page's level, from the variance components:
            se(n)^2 = run (2 / n) + resid (2 / (n images)) + image_side / images + source_side / sources
        on the degrees of freedom n seeds would give at most (the runs': 2n - 2, n - 1 against a baseline), as the
        comparison itself is tested. The last two terms do not shrink with seeds: where they alone exceed what
        `effect` needs, no number of seeds does it (None; more test images would). None too without components (a
        paired or Welch test)."""
        if not self.vc or not effect:
            return None
        floor = self.vc["image_side"] / self.n_images + (self.vc["source_side"] / self.n_sources if self.n_sources else 0)
        per_seed = 2 * self.vc["run"] + 2 * self.vc["resid"] / self.n_images

        def reaches(n: int) -> bool:
            df = n - 1 if self.kind == "baseline" else 2 * n - 2
            t = stats.t.ppf(1 - (1 - self.confidence) / 2, df) + stats.t.ppf(POWER, df)
            return t * math.sqrt(floor + per_seed / n) <= abs(effect)

        if not reaches(most):
            return None
        lo, hi = 1, most  # reaches(hi) holds; find the smallest n >= 2 that does (both terms shrink with n)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if reaches(mid) else (mid, hi)
        return max(2, hi)

    def set_confidence(self, confidence: float) -> None:
        self.confidence = confidence
        if self.se == 0:
            self.lo = self.hi = self.gain
        elif self.estimable:
            half = stats.t.ppf(1 - (1 - confidence) / 2, self.df) * self.se
            self.lo, self.hi = self.gain - half, self.gain + half

    def flipped(self) -> "Comparison":
        """The same comparison read the other way round (b against a)."""
        c = Comparison(**{**self.__dict__, "a": self.b, "b": self.a, "gain": -self.gain,
                          "n_runs": self.n_runs[::-1], "lo": -self.hi, "hi": -self.lo})
        return c


@dataclass
class Family:
    comparisons: list[Comparison] = field(default_factory=list)
    confidence: float = 1 - ALPHA
    discoveries: int = 0

    @property
    def m(self) -> int:
        return sum(c.testable for c in self.comparisons)

    def find(self, factor: str, a: str, b: str, where: dict) -> Comparison | None:
        """The comparison of levels a against b in slice `where` (read in that direction), if the family has it."""
        for c in self.comparisons:
            if c.kind == "levels" and c.factor == factor and c.where == where:
                if (c.a, c.b) == (a, b):
                    return c
                if (c.b, c.a) == (a, b):
                    return c.flipped()
        return None


def correct(family: Family, alpha: float = ALPHA) -> Family:
    """Benjamini-Hochberg over the family, and every interval at the FCR-adjusted level 1 - R alpha / m."""
    testable = [c for c in family.comparisons if c.testable]
    family.confidence = 1 - alpha
    if testable:
        q = stats.false_discovery_control([c.p for c in testable], method="bh")
        for c, qi in zip(testable, q):
            c.q = float(qi)
        family.discoveries = int((q <= alpha).sum())
        family.confidence = 1 - max(family.discoveries, 1) * alpha / len(testable)
    for c in family.comparisons:
        c.set_confidence(family.confidence)
    return family


def _t_p(gain: float, se: float, df: float) -> float:
    if se == 0:
        return 0.0 if gain != 0 else 1.0
    return float(2 * stats.t.sf(abs(gain / se), df)) if math.isfinite(se) and df > 0 else float("nan")


def compare(a: pd.DataFrame, b: pd.DataFrame, sign: int) -> dict:
    """Estimate mean(a) - mean(b) from long tables (run, image, value, and optionally source: the image
    each test image was cut from), sides' images paired. Returns the fields of a Comparison: gain (in the
    better direction, `sign`), se, df, p, n_runs, n_images, n_sources, method."""
    runs = (a.run.nunique(), b.run.nunique())
    if a.image.isna().all() or b.image.isna().all():  # run means only: Welch
        return _welch(a.groupby("run").value.mean().to_numpy(), b.groupby("run").value.mean().to_numpy(), sign)
    images = sorted(set(a.image) & set(b.image))
    a, b = a[a.image.isin(images)], b[b.image.isin(images)]
    n_img = len(images)
    d = a.groupby("image").value.mean() - b.groupby("image").value.mean()
    source = _sources(a, b)
    n_src = source.nunique() if source is not None else 0
    if not 1 < n_src < n_img:  # one source (nothing to generalise over) or one image per source
        source, n_src = None, 0
    base = {"n_runs": runs, "n_images": n_img, "n_sources": n_src}
    if d.var(ddof=0) == 0 and a.groupby("run").value.mean().var(ddof=0) == 0 and \
            (b.groupby("run").value.mean().var(ddof=0) == 0 if runs[1] > 1 else True):
        gain = sign * float(d.mean())  # no spread anywhere: an exact difference
        return base | {"gain": gain, "se": 0.0, "df": float(max(n_img - 1, 1)), "p": _t_p(gain, 0.0, 1),
                       "method": "exact (no variation)"}
    if source is not None:  # paired over source images: their crops' differences are not independent
        d = d.groupby(source.reindex(d.index)).mean()
    if sum(runs) < 3 or len(d) < 3:
        return _paired(d, sign, base)
    try:
        return _mixed(a, b, sign, base, source)
    except (np.linalg.LinAlgError, ValueError, FloatingPointError):
        return _paired(d, sign, base)


def _sources(a: pd.DataFrame, b: pd.DataFrame) -> pd.Series | None:
    """image -> source image, from whichever side carries it (a baseline's rows need not)."""
    rows = [x[["image", "source"]] for x in (a, b) if "source" in x and x.source.notna().all()]
    if not rows:
        return None
    return pd.concat(rows).drop_duplicates("image").set_index("image").source.astype(str)


def _mixed(a: pd.DataFrame, b: pd.DataFrame, sign: int, base: dict, source: pd.Series | None) -> dict:
    import statsmodels.formula.api as smf

    df = pd.concat([a.assign(side=1.0), b.assign(side=0.0)], ignore_index=True)
    df = df.assign(run=df.run.astype(str), image=df.image.astype(str))
    vc = {"image": "0 + C(image)", "image_side": "0 + C(image):side", "run": "0 + C(run)"}
    if source is not None:
        df = df.assign(source=df.image.map(source))
        vc |= {"source": "0 + C(source)", "source_side": "0 + C(source):side"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # boundary fits (a variance component at 0) are expected and fine
        model = smf.mixedlm("value ~ side", df, groups=np.ones(len(df)), re_formula="0", vc_formula=vc)
        # L-BFGS (statsmodels' default) often stops at a worse optimum here, reporting convergence, with a
        # variance component near 0 and an interval too narrow; Powell reached the higher REML likelihood
        # in every case we tried. L-BFGS stands in when Powell fails; the higher likelihood wins
        fits = []
        for method in ("powell", "lbfgs"):
            try:
                fits.append(model.fit(reml=True, method=[method]))
            except (np.linalg.LinAlgError, ValueError):
                continue
            if fits[-1].converged and math.isfinite(fits[-1].llf):
                break
        if not fits:
            raise ValueError("the mixed model could not be fitted")
        fit = max(fits, key=lambda f: f.llf if math.isfinite(f.llf) else -math.inf)
    est, se = float(fit.fe_params["side"]), float(fit.bse_fe["side"])
    if not (math.isfinite(est) and math.isfinite(se)):
        raise ValueError("the mixed model did not converge")
    vc = dict(zip(model.exog_vc.names, fit.vcomp))
    dof = _dof(vc, float(fit.scale), base)
    gain = sign * est
    over = "source images, their crops and runs" if base["n_sources"] else "images and runs"
    components = {"run": vc.get("run", 0.0), "image_side": vc.get("image_side", 0.0),
                  "source_side": vc.get("source_side", 0.0), "resid": float(fit.scale)}
    return base | {"gain": gain, "se": se, "df": float(dof), "p": _t_p(gain, se, dof),
                   "method": f"mixed model over {over}", "vc": components}


def _dof(vc: dict, scale: float, base: dict) -> float:
    """Satterthwaite's degrees of freedom of the fixed effect's variance, from runs (df n_runs - 2), source images
    (df n_sources - 1) and the images within them (df n_images - n_sources; n_images - 1 without sources); never more
    than the runs give (containment): with three runs a side Satterthwaite alone found a difference that is not there
    7.3% of the time at 5% (600 nulls, n2n_loss quick's components); held to n_runs - 2, 3.8%."""
    n_a, n_b = base["n_runs"]
    n_img, n_src = base["n_images"], base["n_sources"]
    parts = [(vc.get("run", 0.0) * (1 / n_a + 1 / n_b), n_a + n_b - 2),
             (vc.get("image_side", 0.0) / n_img + scale * (1 / (n_a * n_img) + 1 / (n_b * n_img)), n_img - (n_src or 1))]
    if n_src:
        parts.append((vc.get("source_side", 0.0) / n_src, n_src - 1))
    total = sum(v for v, _ in parts)
    dof = total ** 2 / sum(v ** 2 / max(k, 1) for v, k in parts) if total > 0 else max(n_img - 1, 1)
    return min(dof, n_a + n_b - 2)


def _paired(d: pd.Series, sign: int, base: dict) -> dict:
    """Too few runs for a run variance: a paired t-test of the run-averaged differences over images (or
    over source images, `d` then holding each source's mean)."""
    n = len(d)
    gain = sign * float(d.mean())
    se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return base | {"gain": gain, "se": se, "df": float(n - 1), "p": _t_p(gain, se, n - 1),
                   "method": "paired t over " + ("source images" if base.get("n_sources") else "images")}


def _welch(a: np.ndarray, b: np.ndarray, sign: int) -> dict:
    base = {"n_runs": (len(a), len(b)), "n_images": 0, "method": "Welch's t over run means"}
    gain = sign * float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return base | {"gain": gain, "se": float("nan"), "df": float("nan"), "p": float("nan")}
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return base | {"gain": gain, "se": 0.0, "df": float(len(a) + len(b) - 2), "p": _t_p(gain, 0.0, 1)}
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))  # Welch-Satterthwaite, as scipy
    res = stats.ttest_ind(a, b, equal_var=False)
    return base | {"gain": gain, "se": se, "df": float(dof), "p": float(res.pvalue)}


@dataclass
class CellStat:
    cell: str
    mean: float
    lo: float
    hi: float
    n: int  # runs


def cell_stat(cell: str, run_means, confidence: float) -> CellStat:
    """A cell's mean over its runs, with the t-interval over runs (seeds) at `confidence`."""
    v = np.asarray(run_means, dtype=float)
    n = len(v)
    m = float(v.mean()) if n else float("nan")
    if n < MIN_RUNS_FOR_SPREAD:
        return CellStat(cell, m, float("nan"), float("nan"), n)
    half = stats.t.ppf(1 - (1 - confidence) / 2, n - 1) * v.std(ddof=1) / math.sqrt(n)
    return CellStat(cell, m, m - half, m + half, n)
