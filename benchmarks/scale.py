"""The study engine at scale: does the driver cost the same per trial at 10,000 trials as at 100?

    python benchmarks/scale.py bookkeeping --trials 100 1000 10000
    python benchmarks/scale.py tune --trials 1000 --nodes 4 --cpus 16 [--trial-s 1]

`bookkeeping` drives the engine's driver-side parts directly, exactly as Tune calls them, for a synthetic study
of N trials (100 to 10,000; cells of 2 levels x many, each with its tuning trials in waves and 3 confirm runs):
the searcher (`CellSearcher.suggest`, Optuna's TPE over the earlier waves), the early stopping
(`CellHalving.on_trial_result`), and the recorder and progress callbacks (a record written per result). It
prints the driver's CPU time per trial, the suggest and decision latencies over the first and the last 10% of
the trials, then builds the study's trials table, `status` and the report from what it wrote, with their times
and the report's size. No Ray tasks run: this is the driver's own cost, per trial, without waiting.

`tune` runs sleeping trials through Ray Tune on a local multi-node cluster (`ray.cluster_utils.Cluster`, nodes x
logical CPUs on this machine), twice in one run: with the engine (the searcher, early stopping and callbacks
above) and bare (Tune + Optuna's `OptunaSearch`, FIFO, no callbacks), each trial sleeping `--trial-s` seconds
with one result per second. It prints each one's wall time, study efficiency (sum of trial time over slots x
wall time), the peak and mean trials at once against the slots, and the driver's CPU time per trial. Ray Tune's
own release test "bookkeeping overhead" runs 10,000 one-second trials on one node of 16 CPUs and accepts
800 s against a theoretical 625 s (a 1.28x overhead); `tune --trials 10000 --nodes 1 --cpus 16` is ours.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SEEDS = 3


def synthetic_spec(trials: int, q: int):
    """A study of `trials` trials: `cells` cells (levels x 2), each with trials/cells - 3 tuning trials and 3 confirm."""
    from studies.spec import StudySpec

    cells = 10 if trials <= 100 else 20 if trials <= 1000 else 100
    per_cell = trials // cells
    return StudySpec.model_validate({
        "name": "scale", "description": "Sleeping trials: the engine's own cost at scale.",
        "fixed": {"model": "simple_unet", "model_params": {"width": 8}, "dataset": "faces", "noise": "gaussian",
                  "noise_params": {"sigma": 25}},
        "compare": {"split": {f"s{i}": {"val_seed": 1000 + i} for i in range(cells // 2)}, "loss": ["l1", "l2"]},
        "tune": {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
        "seeds": SEEDS,
        "budgets": {b: {"trials_per_cell": per_cell - SEEDS, "seeds": SEEDS, "steps": 40, "eval_every": 10,
                        "tune_parallel": q} for b in ("smoke", "quick", "full")}})


def _trial(trial_id: str, config: dict, status: str = "RUNNING"):
    """What the engine's callbacks read of a Tune trial."""
    return SimpleNamespace(trial_id=trial_id, config=config, status=status, checkpoint=None, error_file=None,
                           get_error=lambda: None, last_result={})


def optuna_url(kind: str, sdir: Path) -> str:
    """The engine's Optuna storage: its default journal file, or the SQLite database it used before (to compare)."""
    from studies.store import default_optuna_storage

    return default_optuna_storage(sdir) if kind == "journal" else f"sqlite:///{sdir / 'optuna.db'}"


def bookkeeping(n: int, q: int, workdir: Path, optuna: str = "journal") -> dict:
    """Drive the engine's driver-side parts over a synthetic study of `n` trials; their costs, timed."""
    from studies.records import Progress, StudyRecorder
    from studies.runlog import RunLog
    from studies.scheduler import CellHalving
    from studies.searcher import CellSearcher

    import reports.build  # noqa: F401 - imported before the clock starts: a long-running driver has them loaded
    from denoise_core.tasks import validate_config

    spec = synthetic_spec(n, q)
    validate_config(spec.cell_config(spec.cells()[0], "smoke", {}))
    sdir = workdir / spec.name
    sdir.mkdir(parents=True)
    s = CellSearcher(spec, "smoke", optuna_url(optuna, sdir))
    s.q, s.sdir = q, str(sdir)
    sched = CellHalving(sdir, spec.metric, spec.mode, 4, 2, q=q)
    rec = StudyRecorder(sdir, s.planned, s.keys, s.n_tune + s.n_seeds, quiet=True, metric=spec.metric)
    prog = Progress(sdir, s.planned, quiet=True)
    for cb in (rec, prog):
        cb.setup()
    log = RunLog(sdir)
    log.start(spec=spec.model_dump(mode="json"), budget="smoke", planned=s.planned, cells=s.keys, n_evals=4,
              trials_per_cell=s.n_tune, seeds=s.n_seeds, tune_parallel=q, extra={}, optuna_storage=s.storage_url)
    suggest_s, decide_s, live, trials, done = [], [], [], [], 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    i = 0
    while done < s.planned:
        while True:  # Tune asks while there is room: here, for every trial the plan allows now
            t0 = time.perf_counter()
            cfg = s.suggest(f"t{i:05d}")
            suggest_s.append(time.perf_counter() - t0)
            if cfg is None or cfg == s.FINISHED:
                suggest_s.pop()
                break
            t = _trial(f"t{i:05d}", cfg)
            i += 1
            trials.append(t)
            live.append(t)
            sched.on_trial_add(None, t)
            rec.on_trial_start(0, trials, t)
            prog.on_trial_start(0, trials, t)
        # every live trial reports its 4 evaluations (a deterministic score of its lr), then ends
        for t in live:
            for k in range(1, 5):
                value = 20 + 5 * (1 - abs(math.log10(t.config["lr"]) + 2.5)) + 0.1 * k
                result = {"psnr": value, "step": 10 * k, "training_iteration": k}
                rec.on_trial_result(0, trials, t, result)
                s.on_trial_result(t.trial_id, result)
                t0 = time.perf_counter()
                decision = sched.on_trial_result(None, t, result)
                decide_s.append(time.perf_counter() - t0)
                if decision == "STOP":
                    break
            t.last_result, t.status = result, "TERMINATED"
            s.on_trial_complete(t.trial_id, result)
            sched.on_trial_complete(None, t, result)
            rec.on_trial_complete(0, trials, t)
            prog.on_trial_complete(0, trials, t)
            prog.summary(trials, time.time())
            done += 1
        live = []
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    log.close("finished")
    tenth = max(1, len(suggest_s) // 10)
    dtenth = max(1, len(decide_s) // 10)
    ms = lambda xs: 1000 * sum(xs) / len(xs)  # noqa: E731
    out = {"optuna": optuna, "trials": s.planned, "cells": len(s.keys), "q": q, "driver_cpu_ms_per_trial": 1000 * cpu / s.planned,
           "wall_s": wall, "suggest_ms_first": ms(suggest_s[:tenth]), "suggest_ms_last": ms(suggest_s[-tenth:]),
           "decide_ms_first": ms(decide_s[:dtenth]), "decide_ms_last": ms(decide_s[-dtenth:])}
    out.update(read_back(sdir))
    return out


def read_back(sdir: Path) -> dict:
    """The trials table, `status` and the report of the study the engine wrote: their times and the report's size."""
    from click.testing import CliRunner

    from denoise_study.cli import cli
    from reports.build import build_report
    from studies.store import read_spec, write_trials_table

    t0 = time.perf_counter()
    write_trials_table(sdir, read_spec(sdir))
    table_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = CliRunner().invoke(cli, ["status", sdir.name, "--storage", str(sdir.parent)])
    status_s = time.perf_counter() - t0
    assert res.exit_code == 0, res.output
    t0 = time.perf_counter()
    path = build_report(sdir)
    return {"table_s": table_s, "status_s": status_s, "report_s": time.perf_counter() - t0,
            "report_mb": path.stat().st_size / 2**20}


# -- a real Tune run, sleeping trials ---------------------------------------------------------------------------------
def sleeper(config: dict) -> None:
    """A trial that only sleeps and reports once a second: `step` and a score of its lr."""
    from ray import tune

    n, start = int(config.get("_seconds", 1)), time.time()
    for k in range(1, n + 1):
        time.sleep(1.0)
        tune.report({"psnr": 20 + 5 * (1 - abs(math.log10(config["lr"]) + 2.5)) + 0.1 * k, "step": 10 * k,
                     "began": start, "now": time.time()})


def tune_run(n: int, q: int, trial_s: int, engine: bool, workdir: Path, slots: int, optuna: str = "journal") -> dict:
    import ray
    from ray import tune

    spec = synthetic_spec(n, q)
    budget = spec.budgets["smoke"].model_copy(update={"steps": 10 * trial_s, "eval_every": 10})
    spec = spec.model_copy(update={"budgets": {**spec.budgets, "smoke": budget}})
    sdir = workdir / ("engine" if engine else "bare") / spec.name
    sdir.mkdir(parents=True)
    cpu0, wall0 = time.process_time(), time.time()
    if engine:
        from studies.records import Progress, StudyRecorder
        from studies.scheduler import CellHalving
        from studies.searcher import CellSearcher

        s = CellSearcher(spec, "smoke", optuna_url(optuna, sdir))
        s.q, s.sdir, s.n_evals = q, str(sdir), trial_s
        cfg = tune.TuneConfig(search_alg=s, scheduler=CellHalving(sdir, "psnr", "max", trial_s, 2, q=q), num_samples=-1,
                              reuse_actors=True)
        callbacks = [StudyRecorder(sdir, s.planned, s.keys, s.n_tune + s.n_seeds, quiet=True),
                     Progress(sdir, s.planned, quiet=True)]
        trainable = lambda c: sleeper({**c, "_seconds": trial_s})  # noqa: E731
        planned, pending = s.planned, s.most_at_once  # as the runner lets Tune start them
    else:
        from ray.tune.search.optuna import OptunaSearch

        cfg = tune.TuneConfig(search_alg=OptunaSearch(metric="psnr", mode="max", seed=0), num_samples=n,
                              reuse_actors=True)
        callbacks = []
        trainable = sleeper
        planned, pending = n, slots  # Tune's own default is 1 pending trial for any searcher but its own
    tuner = tune.Tuner(tune.with_resources(trainable, {"cpu": 1}),
                       param_space={} if engine else {"lr": tune.loguniform(1e-4, 1e-2), "_seconds": trial_s},
                       tune_config=cfg,
                       run_config=tune.RunConfig(name="ray", storage_path=str(sdir), callbacks=callbacks, verbose=0))
    from studies.runner import pending_trials

    with pending_trials(pending):
        grid = tuner.fit()
    wall = time.time() - wall0
    cpu = time.process_time() - cpu0
    spans = [(r.metrics["began"], r.metrics["now"]) for r in grid if r.metrics and "began" in r.metrics]
    busy = sum(e - s for s, e in spans)
    from reports.figures import at_once

    import pandas as pd

    c = at_once(pd.DataFrame({"start": [s for s, _ in spans], "end": [e for _, e in spans]}))
    held = c.time.diff().shift(-1).fillna(0)
    return {"who": f"engine ({optuna})" if engine else "bare Tune + Optuna", "trials": planned, "wall_s": wall,
            "efficiency": busy / (slots * wall), "peak": int(c.running.max()), "mean": float((c.running * held).sum()
                                                                                           / max(held[c.running > 0].sum(), 1e-9)),
            "slots": slots, "driver_cpu_ms_per_trial": 1000 * cpu / planned}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=("bookkeeping", "tune"))
    ap.add_argument("--trials", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--q", type=int, default=4, help="tune_parallel of the synthetic study")
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--cpus", type=int, default=16, help="logical CPUs per node")
    ap.add_argument("--trial-s", type=int, default=1)
    ap.add_argument("--optuna", nargs="+", choices=("journal", "sqlite"), default=["journal"],
                    help="the engine's Optuna storage: its journal file (the default), SQLite (before), or both")
    a = ap.parse_args()
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    work = Path(tempfile.mkdtemp(prefix="scale-"))
    if a.mode == "bookkeeping":
        for n in a.trials:
            for kind in a.optuna:
                print(json.dumps(bookkeeping(n, a.q, work / f"{n}-{kind}", kind)), flush=True)
        return
    import ray
    from ray.cluster_utils import Cluster

    os.environ["PYTHONPATH"] = f"{ROOT}{os.pathsep}{ROOT / 'benchmarks'}"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": a.cpus, "include_dashboard": False})
    for _ in range(a.nodes - 1):
        cluster.add_node(num_cpus=a.cpus)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    try:
        for n in a.trials:
            for kind in a.optuna:
                print(json.dumps(tune_run(n, a.q, a.trial_s, True, work / f"{n}-{kind}", a.nodes * a.cpus, kind)),
                      flush=True)
            print(json.dumps(tune_run(n, a.q, a.trial_s, False, work / f"{n}-bare", a.nodes * a.cpus)), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
