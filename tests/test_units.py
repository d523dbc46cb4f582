"""Unit tests for the service logic that otherwise runs only inside whole Ray studies: the per-cell searcher,
early stopping within a cell, the trial recorder, the classical baselines' parameter choice, `denoise`'s choice of
cell, and every registered report figure on a small synthetic study. Each names the unit it checks."""
from __future__ import annotations

import json
import os
import re
from types import SimpleNamespace

import numpy as np
import pytest

from denoise_core.results import Score
from studies.cells import TrialMeta, cell_key
from studies.spec import StudySpec
from tests.test_stats import _study

SPEC = StudySpec.model_validate({
    "name": "u", "description": "d", "fixed": {"noise": "gaussian", "noise_params": {"sigma": 25}, "dataset": "faces",
                                               "model_params": {"width": 8}},
    "compare": {"loss": ["l1", "l2"]}, "tune": {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
    "budgets": {b: {"trials_per_cell": 3, "seeds": 2, "steps": 40, "eval_every": 10, "crop": 16}
                for b in ("smoke", "quick", "full")}})


# -- the searcher ----------------------------------------------------------------------------------
def _searcher(tmp_path, name="optuna.db"):
    from studies.searcher import CellSearcher

    return CellSearcher(SPEC, "smoke", f"sqlite:///{tmp_path / name}")


def _finish(s, trial_id, value=25.0, step=40):
    s.on_trial_complete(trial_id, {"psnr": value, "step": step})


def test_searcher_gives_every_cell_the_same_budget_one_trial_after_another(tmp_path):
    s = _searcher(tmp_path)
    first = [TrialMeta.of(s.suggest(f"t{i}")) for i in range(2)]
    assert [m.cell for m in first] == SPEC.cell_keys() and {m.phase for m in first} == {"tune"}
    assert s.suggest("t2") is None  # each cell's next tuning trial waits for its earlier one to finish
    _finish(s, "t0")
    nxt = TrialMeta.of(s.suggest("t3"))
    assert nxt.cell == first[0].cell  # the cell whose trial finished goes on; the other still waits
    n = 4
    while True:
        open_tune = [tid for tid, slot in s.slots.items() if not slot.get("done") and slot["phase"] == "tune"]
        for tid in open_tune:
            _finish(s, tid, value=20 + n % 7)
        cfg = s.suggest(f"t{n}")
        if cfg is None or cfg == s.FINISHED:
            break
        n += 1
        if TrialMeta.of(cfg).phase == "confirm":
            break
    tuned = {}
    for slot in s.slots.values():
        if slot["phase"] == "tune":
            tuned[slot["cell"]] = tuned.get(slot["cell"], 0) + 1
    assert tuned == {k: 3 for k in SPEC.cell_keys()}  # exactly trials_per_cell each, never more


def test_a_slot_asked_again_gets_the_same_parameters(tmp_path):
    """A slot lost to a driver kill is asked again: its parameters depend on (cell, index) and the earlier
    trials only, so a second searcher over the same history proposes the same values."""
    a, b = _searcher(tmp_path, "a.db"), _searcher(tmp_path, "b.db")
    firsts = []
    for s in (a, b):
        firsts.append(TrialMeta.of(s.suggest("x0")).params)
        s.suggest("x1")
        _finish(s, "x0", 24.0), _finish(s, "x1", 26.0)
    pa, pb = (TrialMeta.of(s.suggest("x2")).params for s in (a, b))
    assert firsts[0] == firsts[1] and pa == pb
    assert pa != firsts[0]  # slot 1 of the cell is not slot 0 again: each slot has its own seed


def test_searcher_confirms_the_best_tuned_parameters_with_distinct_seeds(tmp_path):
    s = _searcher(tmp_path)
    values = iter([21.0, 27.0, 24.0, 22.0, 23.0, 28.0])
    params = {}
    for i in range(6):
        cfg = s.suggest(f"t{i}")
        if cfg is None:  # waits for its cell: finish what runs, then ask again
            for tid, slot in list(s.slots.items()):
                if not slot.get("done"):
                    _finish(s, tid, next(values))
            cfg = s.suggest(f"t{i}")
        params[f"t{i}"] = TrialMeta.of(cfg)
    for tid, slot in list(s.slots.items()):
        if not slot.get("done"):
            _finish(s, tid, next(values))
    confirms = [TrialMeta.of(s.suggest(f"c{i}")) for i in range(4)]
    assert [m.phase for m in confirms] == ["confirm"] * 4
    for cell in SPEC.cell_keys():
        import optuna

        best = optuna.load_study(study_name=f"u:{cell}", storage=s.storage_url).best_trial.params
        mine = [c for c in confirms if c.cell == cell]
        assert [c.params for c in mine] == [best, best]
    assert sorted(c.number for c in confirms) == [0, 0, 1, 1]  # seed indexes 0 and 1 in each cell
    assert s.suggest("wait") is None  # the plan is final only once its confirm runs have finished (a look may add)
    for i in range(4):
        _finish(s, f"c{i}")
    assert s.suggest("done") == s.FINISHED


def test_a_tuning_trial_that_reported_fewer_steps_is_pruned_for_optuna(tmp_path):
    import optuna

    s = _searcher(tmp_path)
    s.suggest("a"), s.suggest("b")
    s.on_trial_complete("a", {"psnr": 25.0, "step": 20})  # stopped early at step 20 of 40
    s.on_trial_complete("b", {"psnr": 25.0, "step": 40})
    states = {slot["cell"]: optuna.load_study(study_name=f"u:{slot['cell']}", storage=s.storage_url)
              .trials[slot["number"]].state for slot in s.slots.values()}
    assert list(states.values()) == [optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE]


# -- early stopping within a cell ----------------------------------------------------------------------
def test_rungs_and_the_cutoff_rule():
    from studies.scheduler import rungs, stops

    assert rungs(6, 2, 3) == [2] and rungs(20, 2, 3) == [2, 6, 18] and rungs(2, 2, 3) == []
    assert stops(20.0, [25.0, 26.0], +1, 3) and not stops(27.0, [25.0, 26.0], +1, 3)
    assert stops(0.9, [0.5], -1, 3) and not stops(0.4, [0.5], -1, 3)  # lower is better
    assert not stops(20.0, [], +1, 3)  # the first trial of a cell has nothing to be compared with


def _record(tmp_path, trial_id, cell, phase, status, history, seed=0):
    d = tmp_path / "records"
    d.mkdir(exist_ok=True)
    (d / f"{trial_id}.json").write_text(json.dumps({"trial_id": trial_id, "cell": cell, "phase": phase, "seed": seed,
                                                    "status": status, "history": history}))


def _halving_trial(cell, index, phase="tune"):
    cfg = TrialMeta(cell, phase, {}, {}, 0).attach({"eval_every": 10, "steps": 40, "seed": index})
    return SimpleNamespace(trial_id=f"{cell}-{index}", config=cfg)


def test_early_stopping_compares_a_trial_only_with_finished_trials_of_its_cell(tmp_path):
    from ray.tune.schedulers import TrialScheduler

    from studies.scheduler import CellHalving

    l1, l2 = SPEC.cell_keys()
    _record(tmp_path, "a", l1, "tune", "completed", [{"step": 10, "psnr": 20}, {"step": 20, "psnr": 26}], seed=0)
    _record(tmp_path, "b", l2, "tune", "completed", [{"step": 20, "psnr": 10}], seed=0)  # another cell: not compared
    _record(tmp_path, "c", l1, "tune", "failed", [{"step": 20, "psnr": 30}], seed=1)  # failed: not compared
    sched = CellHalving(tmp_path, "psnr", "max", max_t=4, grace_period=2)
    trial = _halving_trial
    assert sched.on_trial_result(None, trial(l1, 2), {"psnr": 24.0, "step": 20}) == TrialScheduler.STOP
    assert sched.on_trial_result(None, trial(l1, 3), {"psnr": 27.0, "step": 20}) == TrialScheduler.CONTINUE
    assert sched.on_trial_result(None, trial(l1, 4), {"psnr": 1.0, "step": 10}) == TrialScheduler.CONTINUE  # no rung
    assert sched.on_trial_result(None, trial(l2, 1), {"psnr": 9.0, "step": 20}) == TrialScheduler.STOP
    assert sched.on_trial_result(None, trial(l1, 5, "confirm"), {"psnr": 1.0, "step": 20}) == TrialScheduler.CONTINUE


def test_early_stopping_sees_the_earlier_waves_only_and_reads_no_file_to_decide(tmp_path, monkeypatch):
    """With q = 3, trials 3, 4 and 5 (wave 1) are compared with trials 0, 1 and 2 (wave 0) only: never with each
    other, whichever finishes first; every decision comes from the index the results built, not from the records."""
    from ray.tune.schedulers import TrialScheduler

    import studies.scheduler as sch

    l1, _ = SPEC.cell_keys()
    reads = []
    real = sch.read_records
    monkeypatch.setattr(sch, "read_records", lambda d: reads.append(d) or real(d))
    sched = sch.CellHalving(tmp_path, "psnr", "max", max_t=4, grace_period=2, q=3)
    t = {i: _halving_trial(l1, i) for i in range(8)}
    values = {0: 20.0, 1: 26.0, 2: 22.0, 3: 40.0, 4: 45.0}
    for i in range(5):  # wave 0 has nothing earlier; 3 and 4 (wave 1) are far ahead of 0..2, and finish first
        sched.on_trial_add(None, t[i])
        assert sched.on_trial_result(None, t[i], {"psnr": values[i], "step": 20}) == TrialScheduler.CONTINUE
        sched.on_trial_complete(None, t[i], {"psnr": values[i], "step": 40})
    # trial 5 is judged against wave 0 only: above its cutoff it goes on (against 3 and 4 as well it would stop)
    assert sched.on_trial_result(None, t[5], {"psnr": 25.0, "step": 20}) == TrialScheduler.CONTINUE
    assert sch.stops(25.0, [20.0, 26.0, 22.0, 40.0, 45.0], +1, 3)
    assert sched.earlier_values(l1, 5, 20) == [20.0, 26.0, 22.0]
    sched.on_trial_complete(None, t[5], {"psnr": 25.0, "step": 40})
    assert sched.earlier_values(l1, 6, 20) == [20.0, 26.0, 22.0, 40.0, 45.0, 25.0]  # wave 2 sees waves 0 and 1
    assert sched.on_trial_result(None, t[6], {"psnr": 25.0, "step": 20}) == TrialScheduler.STOP
    assert len(reads) == 1  # the records were read once, when the first trial was added; no decision reads them
    # after a restart the index comes back from the records, before any trial reports again
    for i, v in {**values, 5: 25.0}.items():
        _record(tmp_path, f"r{i}", l1, "tune", "completed", [{"step": 20, "psnr": v}], seed=i)
    restored = __import__("pickle").loads(__import__("pickle").dumps(sched))
    restored.on_trial_add(None, t[7])
    assert restored.earlier_values(l1, 7, 20) == [20.0, 26.0, 22.0, 40.0, 45.0, 25.0] and len(reads) == 2


def test_tuning_runs_in_waves_each_sampled_from_the_waves_before_it(tmp_path):
    """q = 2: a cell's trials 0 and 1 start together, trial 2 waits for both; trial 2's parameters depend on trials 0
    and 1 only (not on when they finished, nor on trial 3's result), and are what a fresh searcher asking the same
    slot after the same earlier waves gives."""
    from studies.searcher import CellSearcher

    def run(values: dict[int, float], order: list[int], name: str) -> dict[int, float]:
        s = CellSearcher(SPEC, "smoke", f"sqlite:///{tmp_path / name}")
        s.q = 2
        ids, lrs = {}, {}

        def ask(i):
            cfg = s.suggest(f"x{i}")
            assert cfg is not None and TrialMeta.of(cfg).cell == SPEC.cell_keys()[0] and cfg["seed"] == i
            ids[i], lrs[i] = f"x{i}", cfg["lr"]

        s.keys = s.keys[:1]  # one cell is enough: its waves
        ask(0), ask(1)
        assert s.suggest("wait") is None  # trial 2 waits for the whole of wave 0
        _finish(s, ids[order[0]], values[order[0]])
        assert s.suggest("wait") is None
        _finish(s, ids[order[1]], values[order[1]])
        ask(2)
        return lrs

    a = run({0: 20.0, 1: 26.0}, [0, 1], "a.db")
    b = run({0: 20.0, 1: 26.0}, [1, 0], "b.db")  # wave 0 finished in the other order
    assert a == b
    c = run({0: 30.0, 1: 10.0}, [0, 1], "c.db")  # other results of wave 0: trial 2 may differ, wave 0 cannot
    assert (c[0], c[1]) == (a[0], a[1])


def test_the_wave_rule():
    from studies.searcher import wave_start

    assert [wave_start(k, 3) for k in range(7)] == [0, 0, 0, 3, 3, 3, 6]
    assert [wave_start(k, 1) for k in range(4)] == [0, 1, 2, 3]  # q = 1: sequential, each sees all before it


def test_tune_may_start_as_many_trials_as_the_plan_runs_at_once(tmp_path, monkeypatch):
    """Tune keeps one trial pending at a time for a searcher of ours unless told otherwise: the study would start
    its trials one by one. The runner tells it the plan's most at once, and leaves a user's own setting alone."""
    from ray.tune.execution.tune_controller import _get_max_pending_trials
    from ray.tune.search import SearchGenerator

    from studies.runner import PENDING, pending_trials
    from studies.searcher import CellSearcher

    monkeypatch.delenv(PENDING, raising=False)
    s = CellSearcher(SPEC, "smoke", f"sqlite:///{tmp_path / 'o.db'}")
    s.q = 3
    assert s.most_at_once == len(SPEC.cell_keys()) * max(min(3, s.n_tune), s.n_seeds)
    alg = SearchGenerator(s)
    assert _get_max_pending_trials(alg) == 1  # Tune's own default for any searcher but its own
    with pending_trials(s.most_at_once):
        assert _get_max_pending_trials(alg) == s.most_at_once
    assert _get_max_pending_trials(alg) == 1 and PENDING not in os.environ
    monkeypatch.setenv(PENDING, "7")
    with pending_trials(s.most_at_once):
        assert _get_max_pending_trials(alg) == 7


# -- the trial recorder -----------------------------------------------------------------------------
def test_the_recorder_writes_one_record_per_trial_and_tells_completed_from_stopped(tmp_path, capsys):
    from studies.records import StudyRecorder

    l1, _ = SPEC.cell_keys()
    rec = StudyRecorder(tmp_path, planned=2, cells=SPEC.cell_keys(), per_cell=5, quiet=False,
                        errors_log=str(tmp_path / "errors.log"), n_tune=3)
    rec.setup()

    def trial(tid, last_step, seed=3):
        cfg = TrialMeta(l1, "tune", {"loss": "l1"}, {"lr": 0.01}, 0, 1.0, 0.0).attach({"seed": seed, "lr": 0.01, "steps": 20})
        return SimpleNamespace(trial_id=tid, config=cfg, checkpoint=None, error_file=None, get_error=lambda: None,
                               last_result={"step": last_step})

    done, stopped = trial("t1", 20, seed=1), trial("t2", 10, seed=0)  # the second trial of the cell finishes first
    for t in (done, stopped):
        rec.on_trial_start(0, [], t)
    rec.on_trial_result(0, [], done, {"step": 10, "psnr": 20.0, "node_id": "n1"})
    rec.on_trial_result(0, [], done, {"step": 20, "psnr": 22.0})
    rec.on_trial_result(0, [], done, {"step": 20, "psnr": 22.0})  # a resumed trial repeats a step: kept once
    rec.on_trial_complete(0, [], done)
    rec.on_trial_result(0, [], stopped, {"step": 10, "psnr": 18.0})
    rec.on_trial_complete(0, [], stopped)
    r1 = json.loads((tmp_path / "records" / "t1.json").read_text())
    r2 = json.loads((tmp_path / "records" / "t2.json").read_text())
    assert r1["status"] == "completed" and [h["step"] for h in r1["history"]] == [10, 20]
    assert r1["params"] == {"lr": 0.01} and r1["seed"] == 1 and r1["node_id"] == "n1" and r1["attempts"] == 1
    assert r2["status"] == "stopped"
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "[1/2] trial 2/5 of cell 1/2 (loss=l1), tune: val psnr 22.000"  # by its index, not its order
    assert out[1] == "[2/2] trial 1/5 of cell 1/2 (loss=l1), tune: stopped early (val psnr 18.000)"
    # a driver killed before the record saw steps 10 and 20: the resumed trial's first report brings them back, and
    # a trial that reached its last step is completed whatever its record held
    resumed = trial("t4", 40)
    resumed.config = {**resumed.config, "steps": 40}
    rec.on_trial_start(0, [], resumed)
    rec.on_trial_result(0, [], resumed, {"step": 30, "psnr": 23.0, "restored_history": [
        {"step": 10, "psnr": 20.0}, {"step": 20, "psnr": 21.0}]})
    rec.on_trial_result(0, [], resumed, {"step": 40, "psnr": 24.0})
    rec.on_trial_complete(0, [], resumed)
    r4 = json.loads((tmp_path / "records" / "t4.json").read_text())
    assert [h["step"] for h in r4["history"]] == [10, 20, 30, 40] and r4["status"] == "completed"
    capsys.readouterr()
    failing = SimpleNamespace(trial_id="t3", config=done.config, checkpoint=None, error_file=None, last_result={},
                              get_error=lambda: "Traceback ...\nValueError: boom")
    rec.on_trial_start(0, [], failing)
    rec.on_trial_error(0, [], failing)
    assert capsys.readouterr().out.strip().endswith(f"failed: ValueError: boom (traceback in {tmp_path / 'errors.log'})")


# -- the classical baselines' parameter choice -------------------------------------------------------
def test_a_baseline_parameter_is_the_one_best_on_validation():
    import torch

    from denoise_core.baselines import BASELINES, _apply, baselines_for, score_baselines
    from denoise_core.metrics import psnr
    from denoise_core.noise import build_noise
    from denoise_core.trial import corrupt_fixed, eval_crops

    cfg = {"noise": "impulse", "noise_params": {"p": 0.3}, "dataset": "faces", "crop": 16, "val_images": 6,
           "test_images": 6, "model_params": {"width": 8}}
    names = lambda noise, **p: [b.name for b in baselines_for(build_noise(noise, **p))]  # noqa: E731
    assert names("impulse", p=0.3) == names("text", coverage=0.2) == ["median", "nlm", "noisy", "tv"]
    assert names("gaussian", sigma=25) == names("poisson", lam=30) == ["bm3d", "nlm", "noisy", "tv"]
    lines = []
    out = score_baselines(cfg, showcase=False, progress=lines.append)
    # a line per baseline for its parameter, and per baseline and noise for the test images, with the time
    assert [ln.split(":")[0] for ln in lines] == ["median", "median, Impulse(p=0.3)", "nlm", "nlm, Impulse(p=0.3)",
                                                  "noisy", "noisy, Impulse(p=0.3)", "tv", "tv, Impulse(p=0.3)"], lines
    assert re.fullmatch(r"tv: parameter [\d.]+ chosen on 6 validation images \(8 tried, \d+ s\)", lines[6]), lines[6]
    assert re.fullmatch(r"noisy: scored on 6 validation images \(\d+ s\)", lines[4]), lines[4]  # nothing to choose
    assert re.fullmatch(r"tv, Impulse\(p=0.3\): 6/6 test images \(\d+ s\)", lines[7]), lines[7]
    # the validation split is stored with the scores: 6 crops of 16x16, too small to choose a baseline on
    assert (out["val_images"], out["val_pixels"], out["channels"]) == (6, 6 * 16 * 16, 1)
    from studies.documents import BaselineEntry

    assert BaselineEntry.model_validate({**out, "images": {}}).too_small_to_choose()
    clean = eval_crops("faces", "val", None, 1, False, 16, 6)
    noisy = corrupt_fixed(build_noise("impulse", p=0.3), clean, 1234)
    for name in ("median", "tv"):
        b = BASELINES.get(name)
        by_param = {p: float(psnr(_apply(b, noisy, p, None), clean).mean()) for p in b.grid}
        assert out["metrics"][name]["param"] == max(by_param, key=by_param.get), (name, by_param)
        assert out["metrics"][name]["val"]["psnr"] == pytest.approx(max(by_param.values()), abs=1e-4)
    assert out["best"] == max((n for n in out["metrics"] if n != "noisy"), key=lambda n: out["metrics"][n]["val"]["psnr"])
    assert len(out["metrics"]["median"]["test_per_image"]["psnr"]) == 6 and torch.isfinite(torch.tensor(
        out["metrics"]["median"]["test_per_image"]["psnr"])).all()


# -- denoise's choice of cell --------------------------------------------------------------------------
def _stored(tmp_path, scores: dict[tuple[str, str], float]):
    """A study folder with a best model per cell (noise x loss) and the given validation PSNRs."""
    from studies.store import best_dir

    spec = StudySpec.model_validate({"name": "p", "description": "d",
                                     "compare": {"noise": {"gaussian": {"noise": "gaussian"}, "impulse": {"noise": "impulse"}},
                                                 "loss": ["l1", "l2"]},
                                     "budgets": {b: {"trials_per_cell": 1} for b in ("smoke", "quick", "full")}})
    sdir = tmp_path / "p"
    (sdir / "records").mkdir(parents=True)
    (sdir / "study.json").write_text(json.dumps({"spec": spec.model_dump()}))
    for (noise, loss), value in scores.items():
        cell = cell_key({"noise": noise, "loss": loss})
        d = best_dir(sdir, cell)
        d.mkdir(parents=True)
        (d / "trial.json").write_text(json.dumps({"cell": cell, "trial_id": cell, "psnr": value}))
        config = {"noise": noise, "noise_params": {"gaussian": {"sigma": 25}, "impulse": {"p": 0.5}}[noise]}
        (sdir / "records" / f"{noise}{loss}.json").write_text(json.dumps(
            {"trial_id": f"{noise}{loss}", "cell": cell, "phase": "confirm", "config": config}))
    return sdir


def test_denoise_picks_the_best_cell_of_the_named_noise(tmp_path):
    from studies.apply import pick_cell

    sdir = _stored(tmp_path, {("gaussian", "l1"): 27.0, ("gaussian", "l2"): 28.0,
                              ("impulse", "l1"): 30.0, ("impulse", "l2"): 26.0})
    assert pick_cell(sdir, noise="gaussian") == cell_key({"noise": "gaussian", "loss": "l2"})
    assert pick_cell(sdir, noise="impulse") == cell_key({"noise": "impulse", "loss": "l1"})
    assert pick_cell(sdir, cell="noise=impulse, loss=l2") == cell_key({"noise": "impulse", "loss": "l2"})
    with pytest.raises(ValueError, match="trained on several noises"):
        pick_cell(sdir)
    with pytest.raises(ValueError, match="no cell of study 'p' was trained on noise 'poisson'"):
        pick_cell(sdir, noise="poisson")
    with pytest.raises(ValueError, match="unknown cell"):
        pick_cell(sdir, cell="noise=impulse,loss=l9")


# -- every registered figure on a small synthetic study ------------------------------------------------
def _with_levels_and_params(results):
    """Add what the levels and pareto figures read: PSNR at other test levels, and parameter counts."""
    for r in results.records:
        loss = r.factors["loss"]
        last = r.last
        base = last[Score("psnr", "test").key]
        last.update({Score("psnr_sigma15", "test").key: base + 3, Score("psnr_sigma50", "test").key: base - 4,
                     "params": {"l1": 1000, "l2": 5000, "l0": 20000}[loss], "images_per_s": 100.0})
    from studies.store import trials_table

    results.table = trials_table(None, results.spec, results.records)
    return results


@pytest.mark.parametrize("name", ["bars", "heatmap", "gap", "levels", "pareto"])
def test_every_registered_figure_draws_the_synthetic_study(name):
    from studies.analysis import analyse
    from reports.figures import FIGURES
    from tests.test_stats import _spec

    effects = {"gaussian": {"l1": 0.0, "l2": 1.0, "l0": -2.0}, "impulse": {"l1": 0.0, "l2": -3.0, "l0": 3.0}}
    # the levels figure reads the task's evaluation levels from the cells' configs (Task.level_metrics)
    levels = {"noise_params": {"sigma": 25}, "eval_levels": [50, 15]}
    spec = StudySpec.model_validate({**_spec().model_dump(), "compare": {
        "noise": {"gaussian": {"noise": "gaussian", **levels}, "impulse": {"noise": "gaussian", **levels}},
        "loss": ["l1", "l2", "l0"]}})
    a = analyse(_with_levels_and_params(_study(spec, effects)))
    assert sorted(FIGURES.names) == ["bars", "gap", "heatmap", "levels", "pareto"]
    figs = FIGURES.get(name)(a)
    if name == "bars":
        assert figs == []  # the bars are always drawn on their own
        return
    assert figs and all(len(f.data) >= 1 for f in figs)
    fig = figs[0]
    t = a.results.confirm_runs()
    means = t.groupby(["factor.noise", "factor.loss"])["final.test_psnr"].mean()
    if name == "heatmap":
        z = np.array(fig.data[0].z)
        assert z.shape == (2, 3) and list(fig.data[0].x) == ["l1", "l2", "l0"] and list(fig.data[0].y) == ["gaussian", "impulse"]
        assert z[1, 2] == pytest.approx(means["impulse", "l0"]) and z[0, 1] == pytest.approx(means["gaussian", "l2"])
    elif name == "gap":
        assert list(fig.data[0].x) == ["noise=gaussian", "noise=impulse"]
        # l0 minus l1 per slice: paired image by image, the mean difference of the two cells
        assert fig.data[0].y[1] == pytest.approx(means["impulse", "l0"] - means["impulse", "l1"], abs=0.05)
        assert fig.data[0].y[0] == pytest.approx(means["gaussian", "l0"] - means["gaussian", "l1"], abs=0.05)
    elif name == "levels":
        assert list(fig.data[0].x) == ["sigma15", "sigma50"]
        z = np.array(fig.data[0].z)
        assert (z[:, 0] - z[:, 1] == pytest.approx(7.0, abs=1e-6))  # 3 dB above, 4 dB below the test score
    elif name == "pareto":
        assert sorted(fig.data[0].x) == [1000, 5000, 20000] or len(fig.data[0].x) >= 3


def test_the_default_heatmap_never_averages_over_a_third_factor():
    """Three compared factors and no `figure:`: one heatmap per level of the third, each cell its own mean."""
    from studies.analysis import analyse
    from reports.figures import FIGURES
    from studies.store import StudyResults, trials_table

    spec = StudySpec.model_validate({
        "name": "t", "description": "d", "compare": {"schedule": ["linear", "cosine"], "prediction": ["eps", "x0"],
                                                     "T": ["100", "1000"]},
        "question": "schedule", "budgets": {b: {"trials_per_cell": 1} for b in ("smoke", "quick", "full")}})
    assert spec.comparison_figure() == "heatmap"
    rng = np.random.default_rng(0)
    records = []
    for cell in spec.cells():
        value = {"eps": 1.0, "x0": 100.0}[cell["prediction"]] + {"100": 0.0, "1000": 10.0}[cell["T"]]
        for r in range(2):
            per = list(value + rng.normal(0, 0.01, 8))
            records.append({"trial_id": f"{cell_key(cell)}-{r}", "cell": cell_key(cell), "phase": "confirm",
                            "factors": cell, "params": {}, "seed": r, "status": "completed", "error": None, "attempts": 1,
                            "start": 0, "end": 1, "resources": {"cpu": 1, "gpu": 0}, "node_id": "n", "checkpoint": None,
                            "config": {}, "history": [{"step": 1, "psnr": value, "test_psnr": value}],
                            "per_image": {"test_psnr": per}})
    info = {"planned": len(records), "budget": "quick", "cells": spec.cell_keys(), "runs": [], "trials_per_cell": 0,
            "seeds": 2, "optuna_storage": "sqlite:///:memory:"}
    a = analyse(StudyResults(None, info, spec, records, trials_table(None, spec, records)))
    figs = FIGURES.get("heatmap")(a)
    assert [f.layout.title.text.split(", ")[-1] for f in figs] == ["T=100", "T=1000"]
    for fig, t in zip(figs, (0.0, 10.0)):
        z = np.array(fig.data[0].z)  # rows: prediction eps, x0; columns: linear, cosine
        assert list(fig.data[0].y) == ["eps", "x0"]
        assert z == pytest.approx(np.array([[1 + t] * 2, [100 + t] * 2]), abs=0.05)  # never a mean of eps and x0


def test_after_a_driver_kill_a_finished_trial_tune_never_saw_is_kept_not_run_again(tmp_path):
    """A trial that ran to its end between Tune's last checkpoint and the kill is known to its record and to Optuna
    only: asking its slot again would ask TPE after its own result (other parameters). An unfinished one is asked again."""
    s = _searcher(tmp_path)
    s.sdir = str(tmp_path)
    s.suggest("t0"), s.suggest("t1")
    _record(tmp_path, "t0", SPEC.cell_keys()[0], "tune", "completed", [{"step": 40, "psnr": 25.0}])
    _record(tmp_path, "t1", SPEC.cell_keys()[1], "tune", "running", [{"step": 10, "psnr": 20.0}])
    changed = s.reconcile(trials=[])  # Tune's restored state knows neither
    assert s.slots["t0"]["done"] and "t1" not in s.slots
    assert s.asked == {SPEC.cell_keys()[0]: 1, SPEC.cell_keys()[1]: 0} and s.finished[SPEC.cell_keys()[0]] == 1
    assert any("finished before the driver died, kept" in c for c in changed) and any("asked again" in c for c in changed)


def test_after_a_driver_kill_a_trial_tune_runs_again_holds_its_cell_until_it_ends_again(tmp_path):
    """A trial that finished (Optuna told) after the searcher's last save, but that Tune's restored state holds as
    running, is run again by Tune. Its cell's next trial waits for that run, as it did in the uninterrupted run (its
    early stopping reads the trial's record, rewritten meanwhile), and the rerun is counted once, not twice: counted
    twice, the cell's confirm runs would start before its last tuning trial had finished."""
    from types import SimpleNamespace

    s = _searcher(tmp_path)
    s.sdir = str(tmp_path)
    configs = {"t0": s.suggest("t0"), "t1": s.suggest("t1")}
    s.save(str(tmp_path / "searcher.pkl"))  # Tune's last experiment checkpoint: both running
    _finish(s, "t0")  # then t0 finished, and the driver was killed before the next checkpoint
    _record(tmp_path, "t0", SPEC.cell_keys()[0], "tune", "running", [{"step": 40, "psnr": 25.0}])  # Tune reruns it

    r = _searcher(tmp_path)
    r.restore(str(tmp_path / "searcher.pkl"))
    r.reconcile([SimpleNamespace(trial_id=t, status="RUNNING", last_result={}, config=c) for t, c in configs.items()])
    assert r.suggest("t2") is None  # t0 runs again: its cell waits, as the uninterrupted run waited for t0
    _finish(r, "t0")  # the rerun ends (Optuna was already told: the tell is skipped)
    assert r.finished[SPEC.cell_keys()[0]] == 1
    assert TrialMeta.of(r.suggest("t2")).cell == SPEC.cell_keys()[0] and r.asked[SPEC.cell_keys()[0]] == 2


def test_after_a_driver_kill_a_trial_tune_saved_before_the_searcher_is_adopted_not_asked_twice(tmp_path):
    """Tune writes its trials, then the searcher's state: a kill between the two leaves a trial that Tune knows and
    the searcher's state does not. It is adopted with its Optuna trial (not failed as an orphan), and its slot is
    not asked a second time; its result reaches Optuna."""
    import optuna
    from types import SimpleNamespace

    s = _searcher(tmp_path)
    s.sdir = str(tmp_path)
    first = s.suggest("t0")
    s.save(str(tmp_path / "searcher.pkl"))  # the searcher's last save: t0 only
    second = s.suggest("t1")  # asked, and written by Tune's last save, before the kill
    r = _searcher(tmp_path)
    r.restore(str(tmp_path / "searcher.pkl"))
    changed = r.reconcile([SimpleNamespace(trial_id="t0", status="RUNNING", last_result={}, config=first),
                           SimpleNamespace(trial_id="t1", status="RUNNING", last_result={}, config=second)])
    cell = TrialMeta.of(second).cell
    assert r.slots["t1"]["cell"] == cell and r.asked == {k: 1 for k in SPEC.cell_keys()}
    assert any("asked just before the driver died, kept" in c for c in changed)
    assert r.suggest("t2") is None  # both cells wait for their running trials: nothing asked twice
    _finish(r, "t1", value=26.0)
    (told,) = [t for t in r.study(cell).trials if t.number == TrialMeta.of(second).number]
    assert told.state == optuna.trial.TrialState.COMPLETE and told.value == 26.0


def test_a_resume_without_tune_parallel_keeps_the_stored_q_and_another_q_is_refused(tmp_path):
    """`--tune-parallel`'s help says a resume keeps q: a resume that does not give it takes the stored q (it used to
    be refused whenever the budget's default differed); one that asks for another q is refused, naming both."""
    from studies.documents import StudyInfo, TrialRecord
    from studies.runner import RunOptions, _same_q
    from studies.spec import SpecError

    sdir = tmp_path / "tiny"
    (sdir / "records").mkdir(parents=True)
    StudyInfo(tune_parallel=3, budget="smoke").write(sdir / "study.json")
    TrialRecord(trial_id="t1", cell="loss=l1", phase="tune").write(sdir / "records" / "t1.json")
    opts = RunOptions(budget="smoke")
    _same_q(SPEC, opts, sdir)
    assert opts.tune_parallel == 3
    with pytest.raises(SpecError, match="tunes in waves of q=3; this run asks for q=2"):
        _same_q(SPEC, RunOptions(budget="smoke", tune_parallel=2), sdir)


def test_editing_the_studys_seeds_changes_no_trial_where_the_budget_runs_its_own():
    """Top-level `seeds` is the default of the budgets that set none: edited under a budget with its own seeds, it
    is taken as a report edit, not refused as one that changes trials."""
    from studies.spec import spec_edits

    stored = SPEC.model_dump(mode="json")
    with_seeds = SPEC.model_copy(update={"seeds": SPEC.seeds + 2})
    budget = next(b for b, v in SPEC.budgets.items() if v.seeds)
    assert spec_edits(stored, with_seeds, budget) == (["seeds"], [])
    dumped = SPEC.model_dump(mode="json")  # the same study whose budgets run the study's seeds: now it changes trials
    plain = StudySpec.model_validate({**dumped, "budgets": {b: {**v, "seeds": None} for b, v in dumped["budgets"].items()}})
    edited = plain.model_copy(update={"seeds": plain.seeds + 2})
    assert spec_edits(plain.model_dump(mode="json"), edited, "smoke") == ([], ["seeds"])


def test_the_recorder_reads_no_record_back_while_its_trials_run(tmp_path, monkeypatch):
    """A record is written at every result (status and curve live for `status` and the report) but never read back
    by the driver that wrote it: the running trials' records are kept in memory, so a result costs one write,
    whatever the study's size. A trial of an earlier driver (a resume) is read from its file once."""
    from studies.cells import TrialMeta
    from studies.documents import TrialRecord
    from studies.records import StudyRecorder

    reads = []
    real_read = TrialRecord.read.__func__
    monkeypatch.setattr(TrialRecord, "read", classmethod(lambda cls, p: reads.append(p) or real_read(cls, p)))
    l1, _ = SPEC.cell_keys()
    rec = StudyRecorder(tmp_path, planned=2, cells=SPEC.cell_keys(), per_cell=5, quiet=True, n_tune=3)
    rec.setup()
    rec._finished()  # the index of finished trials, read from the records folder once when the driver starts
    trials = [SimpleNamespace(trial_id=f"t{i}", checkpoint=None, error_file=None, get_error=lambda: None,
                              config=TrialMeta(l1, "tune", {"loss": "l1"}, {"lr": 0.01}, i, 1.0, 0.0)
                              .attach({"seed": i, "lr": 0.01, "steps": 20}), last_result={"step": 20}) for i in range(2)]
    for t in trials:
        rec.on_trial_start(0, [], t)
        for step in (5, 10, 15, 20):
            rec.on_trial_result(0, [], t, {"step": step, "psnr": 20.0 + step})
        rec.on_trial_complete(0, [], t)
    assert reads == []
    stored = json.loads((tmp_path / "records" / "t1.json").read_text())
    assert stored["status"] == "completed" and [h["step"] for h in stored["history"]] == [5, 10, 15, 20]
    assert rec._live == {}  # finished trials leave memory: their files hold them
    fresh = StudyRecorder(tmp_path, planned=2, cells=SPEC.cell_keys(), per_cell=5, quiet=True, n_tune=3)
    fresh.setup()  # a resumed driver: the trial's record comes from its file
    fresh.on_trial_result(0, [], trials[0], {"step": 25, "psnr": 40.0})
    assert len(reads) == 1


def test_the_baselines_results_survive_the_death_of_their_progress_queue(tmp_path):
    """The queue that carries the baselines' progress lines and scored baselines is an actor on some node: when that
    node dies (the node-kill test), the driver loses what it had not drained yet, never the study. Before, the last
    drain raised ActorDiedError and failed the whole run."""
    from studies.baseline_run import BaselineRun
    from studies.documents import BaselineScores

    class DeadQueue:
        actor = None

        def qsize(self):
            raise RuntimeError("ActorDiedError: The actor died because its node has died")

    run = BaselineRun(tmp_path, BaselineScores(), None, quiet=True, queue=DeadQueue())
    assert run._drain() == [] and run.queue is None
    run.keep()  # an interruption after it: what was scored before is written, nothing raised
    assert (tmp_path / "baselines" / "scores.json").exists()
