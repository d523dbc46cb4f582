"""Adaptive confirmation: confirm runs added where a comparison is undecided, the error rate shared by the looks,
and a trial's scores independent of the machine's core count."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import DATA, cli

ROOT = Path(__file__).resolve().parent.parent
LEVELS = ("a", "b", "c")


def _spec(seeds: int = 3, max_seeds: int | None = 6, margin: float | None = None):
    from studies.spec import StudySpec

    budgets = {b: {"trials_per_cell": 1, "seeds": seeds, **({"max_seeds": max_seeds} if max_seeds else {})}
               for b in ("smoke", "quick", "full")}
    return StudySpec.model_validate({"name": "t", "description": "t", "compare": {"level": list(LEVELS)},
                                     "seeds": seeds, "budgets": budgets, **({"margin": margin} if margin else {})})


def _results(spec, scores: dict[str, np.ndarray], runs: dict[str, int]):
    """A StudyResults in memory, built as the benchmark builds its simulated studies."""
    return _sim().results_of(spec, scores, runs)


def _sim():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import sequential_error

    return sequential_error


def _scores(gains: dict[str, float], n_runs: int = 6, n_images: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.normal(28, 3, n_images)
    return {lv: image + gains.get(lv, 0.0) + rng.normal(0, 0.1, (n_runs, 1)) + rng.normal(0, 0.1, (n_runs, n_images))
            for lv in LEVELS}


def test_the_looks_share_the_error_rate_and_one_look_keeps_all_of_it():
    from studies.stats import ALPHA, spending

    shares = spending([3, 6, 9])
    assert sum(shares) == pytest.approx(ALPHA) and shares[0] > shares[1] > shares[2] > 0
    assert spending([3]) == [ALPHA] and spending([2, 4])[0] == pytest.approx(ALPHA * np.log(1 + (np.e - 1) / 2))
    assert _spec(3, 9).looks("quick") == [3, 6, 9] and _spec(3, None).looks("quick") == [3]


def test_max_seeds_below_seeds_is_refused():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="max_seeds is 2, below the 3 seeds of its first look"):
        _spec(3, 2)


def test_a_decided_cell_stops_and_the_undecided_ones_continue():
    """Level c is 3 dB better: c's two comparisons are decided at the first look, a against b (equal) is not."""
    from studies.analysis import continuing

    spec = _spec()
    scores = _scores({"c": 3.0})
    keys = {lv: spec.key_of({"level": lv}) for lv in LEVELS}
    assert continuing(_results(spec, scores, {lv: 3 for lv in LEVELS}), 0) == {keys["a"], keys["b"]}
    # with a margin wider than a against b's interval, that one is decided too: "no meaningful difference"
    assert continuing(_results(_spec(margin=1.0), scores, {lv: 3 for lv in LEVELS}), 0) == set()


def test_a_comparison_keeps_the_look_that_decided_it_and_the_page_says_its_level():
    from studies.analysis import analyse
    from studies.stats import spending

    spec = _spec()
    scores = _scores({"c": 3.0})
    a = analyse(_results(spec, scores, {"a": 6, "b": 6, "c": 3}))  # c stopped at the first look
    shares = spending([3, 6])
    assert [(lk.seeds, lk.cells) for lk in a.looks] == [(3, 3), (6, 2)]
    by = {frozenset((c.a, c.b)): c for c in a.family.comparisons}
    ca = by[frozenset(("c", "a"))]
    assert ca.significant and ca.look == 3 and ca.n_runs == (3, 3) and ca.alpha == pytest.approx(shares[0])
    ab = by[frozenset(("a", "b"))]
    assert ab.look == 6 and ab.n_runs == (6, 6) and ab.alpha == pytest.approx(shares[1])
    assert ab.confidence == pytest.approx(1 - shares[1])  # no discovery at the second look: 1 x share / 1


def test_a_pinned_simulation_spends_the_error_rate_and_fewer_runs():
    """A small run of benchmarks/sequential_error.py (seeded; the benchmark measures the rates on hundreds of studies):
    under a true null, taking every look with the error rate shared makes fewer false decisions than testing each
    look at the full 5% (on these 20 studies, strictly: without the sharing they would be the same); under a true
    effect of 2 dB the adaptive design stops early where it can, and finds it about as often as max_seeds would."""
    sim = _sim()
    null = sim.simulate(20, 0.0)
    assert null["every_look"]["false"] < null["naive"]["false"]
    assert null["adaptive"]["false"] <= null["every_look"]["false"]
    assert null["adaptive"]["runs"] == 9  # no margin: under the null nothing is decided early, every look is taken
    alt = sim.simulate(6, 2.0, fixed_ns=(9,), seed=1)
    assert alt["adaptive"]["false"] == 0 and alt["adaptive"]["power"] >= alt["fixed9"]["power"] - 1 / 6
    assert alt["adaptive"]["runs"] < 9


PROBE = """
import json, sys, torch
from studies.trainable import own_config
from studies.cells import TrialMeta
from denoise_core.tasks import run_trial
torch.set_num_threads(int(sys.argv[4]))  # the threads a worker's torch takes on a machine of that many cores
before = torch.get_num_threads()
cfg = own_config(TrialMeta("c", "confirm", cpus=float(sys.argv[1])).attach(json.loads(sys.argv[2])))
out = run_trial(cfg, lambda m: None, workdir=sys.argv[3])
print(json.dumps({"before": before, "after": torch.get_num_threads(), "psnr": out["metrics"]["psnr"]}))
"""


def test_a_trials_scores_do_not_depend_on_the_cores_the_machine_shows(tmp_path):
    """The same trial in a process whose torch took the threads of a 2-core and of an 8-core machine: its intra-op
    threads are pinned to its cpus_per_trial, so its scores agree to the last digit."""
    cfg = {"model": "simple_unet", "model_params": {"width": 16}, "dataset": "faces", "steps": 6, "eval_every": 3,
           "crop": 16, "batch_size": 16, "val_images": 8, "seed": 3}
    got = {}
    for cores in (2, 8):
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        res = subprocess.run([sys.executable, "-c", PROBE, "1", json.dumps(cfg), str(tmp_path / str(cores)), str(cores)],
                             capture_output=True, text=True, env=env, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        got[cores] = json.loads(res.stdout.strip().splitlines()[-1])
    assert got[2]["before"] == 2 and got[8]["before"] == 8  # torch would have followed the machine
    assert got[2]["after"] == got[8]["after"] == 1
    assert got[2]["psnr"] == got[8]["psnr"]  # to the last digit


@pytest.fixture(scope="module")
def looks_study(tmp_path_factory, ray_cluster):
    storage = tmp_path_factory.mktemp("looks")
    code, out, err = cli("run", str(DATA / "looks.yaml"), "--budget", "smoke", "--storage", str(storage),
                         "--address", ray_cluster.address)
    assert code == 0, out + err
    return storage / "looks", out


@pytest.mark.ray
def test_a_study_takes_its_looks_through_ray_as_the_analysis_decides_them(looks_study):
    """Through Ray: after the first wave the driver asks the analysis which cells are undecided, gives them runs 4-6,
    and stores the plan; the stored runs agree with it, and the analysis of the stored runs decides the same."""
    from studies.analysis import continuing
    from studies.store import StudyResults

    sdir, out = looks_study
    assert "up to 6 confirm runs a cell (2 looks)" in out
    plan = json.loads((sdir / "looks.json").read_text())
    more = plan["continuing"][0]
    assert more == sorted(continuing(StudyResults.load(sdir), 0))
    assert f"look 1 of at most 2, at 3 confirm runs a cell: {3 - len(more)} cell(s) decided" in out, out
    assert plan["planned"] == 3 + 3 * 3 + 3 * len(more)
    df = pd.read_parquet(sdir / "trials.parquet")
    counts = df[df.phase == "confirm"].groupby("cell").size().to_dict()
    assert counts == {c: 6 if c in more else 3 for c in ("blur=box5", "blur=box5wide", "blur=sharp")}
    code, status, _ = cli("status", "looks", "--storage", str(sdir.parent))
    assert f"{plan['planned']}/{plan['planned']} trials finished" in status, status
    # complete: a rerun rebuilds the report and runs nothing
    code, again, err = cli("run", str(DATA / "looks.yaml"), "--budget", "smoke", "--storage", str(sdir.parent))
    assert code == 0 and "is complete" in again, again + err


@pytest.mark.ray
@pytest.mark.browser
def test_the_report_states_the_looks_and_each_intervals_level(looks_study):
    import html
    import re

    from tests import browser

    if browser.chromium() is None:
        pytest.skip("NO CHROMIUM: install Debian's 'chromium' package (make browser)")
    sdir, _ = looks_study
    dom, errors = browser.load(sdir / "report.html")
    assert errors == []
    text = html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom)))
    assert "Confirm runs were added where a comparison was undecided." in text
    more = json.loads((sdir / "looks.json").read_text())["continuing"][0]
    assert "look 1 at 3 runs a cell: 3 cell(s), 3 comparisons at 3.10%" in text
    if more:
        assert f"look 2 at 6 runs a cell: {len(more)} cell(s)" in text and "comparisons at 1.90%" in text
        assert f"and {3 * len(more)} confirm runs more in 1 wave(s))" in text
    assert "Each interval is at its own look's level" in text
    assert "Precision." in text
