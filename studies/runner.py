"""Run a study: one Ray Tune `Tuner`, resumable, leaving everything a report needs.

    sdir = run_study(load_spec("n2n_loss"), RunOptions(budget="quick", storage="~/denoise-studies"))

Layout of a study directory (`<storage>/<name>`): Tune's experiment state and trial
folders, plus ours: `study.json` (the spec and how it was run), `optuna.db` (one Optuna
study per cell), `records/` (one JSON per trial, live), `trials.parquet` (tidy table, one
row per trial), `best/<cell>/` (each cell's best checkpoint) and `report.html`.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from studies.spec import StudySpec
from studies.store import DEFAULT_STORAGE, clear_study, copy_best_checkpoints, fetch, is_uri, read_info, study_dir, \
    study_uri, upload, write_json, write_trials_table


@dataclass
class RunOptions:
    budget: str = "quick"
    storage: str | None = None
    address: str | None = None
    max_concurrent: int | None = None
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    fresh: bool = False
    quiet: bool = False
    optuna_storage: str | None = None
    extra: dict | None = None  # trial keys set for every cell (e.g. dataset, data_root)
    command: str = ""


def run_study(spec: StudySpec, opts: RunOptions) -> Path:
    """Run (or resume) the study through one Tune `Tuner`; leave the store complete for the report."""
    budget = spec.budgets[opts.budget]
    storage = opts.storage or DEFAULT_STORAGE
    sdir = study_dir(storage, spec.name)
    if opts.fresh:
        clear_study(sdir)
    elif is_uri(storage):  # resuming on another machine: the records and Optuna studies come from the store
        fetch(storage, spec.name)
    experiment_path = study_uri(storage, spec.name) if is_uri(storage) else str(sdir)
    _init_ray(opts.address)
    extra, cpus, gpus = _resources(spec, opts)
    concurrency = opts.max_concurrent or budget.max_concurrent or _fit_concurrency(cpus, gpus)
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(concurrency))

    from studies.searcher import CellSearcher

    sdir.mkdir(parents=True, exist_ok=True)
    optuna_url = opts.optuna_storage or f"sqlite:///{sdir / 'optuna.db'}"
    searcher = CellSearcher(spec, opts.budget, optuna_url, extra)
    searcher.n_evals = _evals_per_trial(spec, opts.budget, extra)
    info = _start_run(sdir, spec, opts, searcher, storage, optuna_url, concurrency)
    if is_uri(storage):
        upload(sdir, experiment_path, ("study.json",))
    tuner = _tuner(spec, opts, searcher, experiment_path, storage, sdir, cpus, gpus, concurrency)
    if not opts.quiet:
        print(f"study {spec.name}: {len(searcher.keys)} cells x ({searcher.n_tune} tuning + "
              f"{searcher.n_seeds} confirm) = {searcher.planned} trials, {concurrency} at a time, "
              f"budget {opts.budget}", flush=True)
    tuner.fit()

    info["runs"][-1]["end"] = time.time()
    write_json(sdir / "study.json", info)
    copy_best_checkpoints(spec, write_trials_table(sdir, spec), sdir)
    if is_uri(storage):
        upload(sdir, experiment_path)
    return sdir


def _resources(spec: StudySpec, opts: RunOptions) -> tuple[dict, float, float]:
    """(extra trial keys, CPUs per trial, GPU share per trial); checks the GPU packing when there are GPUs."""
    import ray

    from studies.packing import check_packing, gpu_share

    budget = spec.budgets[opts.budget]
    cpus = opts.cpus_per_trial or budget.cpus_per_trial
    gpus = gpu_share(opts.gpus_per_trial, budget.gpus_per_trial, opts.budget, ray.cluster_resources().get("GPU", 0))
    extra = dict(opts.extra or {}) | {"_cpus": cpus, "_gpus": gpus}
    if gpus > 0:  # a trial takes the GPU Ray gives it (device auto); a node whose GPU is not CUDA runs it on CPU
        for line in check_packing(spec, opts.budget, extra, gpus, cpus):
            print(line, file=sys.stderr, flush=True)
    return extra, cpus, gpus


def _start_run(sdir: Path, spec: StudySpec, opts: RunOptions, searcher, storage: str, optuna_url: str,
               concurrency: int) -> dict:
    """study.json: the spec and plan, and one more entry in `runs` (this run's start, cluster, versions)."""
    import ray

    info = read_info(sdir) if (sdir / "study.json").exists() else {"runs": []}
    info.update(spec=spec.model_dump(), budget=opts.budget, planned=searcher.planned, cells=searcher.keys,
                n_evals=searcher.n_evals, storage=storage, optuna_storage=optuna_url,
                trials_per_cell=searcher.n_tune, seeds=searcher.n_seeds, concurrency=concurrency)
    info["runs"].append({"start": time.time(), "end": None, "command": opts.command,
                         "resources": ray.cluster_resources(),
                         "nodes": sum(1 for n in ray.nodes() if n.get("Alive")), "versions": _versions()})
    write_json(sdir / "study.json", info)
    return info


def _tuner(spec: StudySpec, opts: RunOptions, searcher, experiment_path: str, storage: str, sdir: Path,
           cpus: float, gpus: float, concurrency: int):
    """A new Tuner, or the stored one restored: finished trials are kept, unfinished ones resume."""
    from ray import tune

    from studies.records import StudyRecorder
    from studies.recovery import RestoreRepair
    from studies.scheduler import CellASHA
    from studies.trainable import train_fn

    budget = spec.budgets[opts.budget]
    trainable = tune.with_resources(train_fn, {"cpu": cpus, "gpu": gpus})
    recorder = StudyRecorder(sdir, searcher.planned, searcher.n_evals, searcher.keys,
                             searcher.n_tune + searcher.n_seeds, opts.quiet,
                             remote=experiment_path if is_uri(storage) else None)
    if not opts.fresh and tune.Tuner.can_restore(experiment_path):
        if not opts.quiet:
            print(f"resuming {spec.name} from {experiment_path}", flush=True)
        return tune.Tuner.restore(experiment_path, trainable=trainable, resume_unfinished=True,
                                  resume_errored=False, restart_errored=False)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=CellASHA(spec.metric, spec.mode, searcher.n_evals, budget.grace_evals),
            num_samples=searcher.planned, max_concurrent_trials=concurrency, reuse_actors=True,
            trial_dirname_creator=lambda t: f"trial-{t.trial_id}"),
        run_config=tune.RunConfig(
            name=spec.name, storage_path=storage if is_uri(storage) else str(sdir.parent),
            failure_config=tune.FailureConfig(max_failures=budget.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[RestoreRepair(), recorder], verbose=0))


def _init_ray(address: str | None) -> None:
    import logging

    import ray

    if ray.is_initialized():
        return
    # trial output stays in the workers' logs; errors reach the records and the report
    kwargs = dict(logging_level=logging.ERROR, log_to_driver=False, include_dashboard=False)
    if address:
        ray.init(address=address, **{k: v for k, v in kwargs.items() if k != "include_dashboard"})
    else:  # no address: a Ray of our own, never silently attached to another cluster on this machine
        ray.init(address="local", **kwargs)


def _fit_concurrency(cpus: float, gpus: float) -> int:
    import ray

    res = ray.cluster_resources()
    by_cpu = int(res.get("CPU", 1) // cpus)
    by_gpu = int(round(res.get("GPU", 0) / gpus)) if gpus > 0 else by_cpu
    return max(1, min(by_cpu, by_gpu))


def _evals_per_trial(spec: StudySpec, budget: str, extra: dict) -> int:
    from denoise_core.tasks import validate_config

    cfg = validate_config({k: v for k, v in spec.cell_config(spec.cells()[0], budget, extra).items()
                           if not k.startswith("_")})
    return -(-cfg.steps // cfg.eval_every)


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("denoise-study", "torch", "ray", "optuna", "pandas", "plotly"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
