"""Run a study: one Ray Tune `Tuner`, resumable, leaving everything a report needs.

    study_dir = run_study(spec, "quick", storage="~/denoise-studies")

Layout of a study directory (`<storage>/<name>`): Tune's experiment state and trial
folders, plus ours: `study.json` (the spec and how it was run), `optuna.db` (one Optuna
study per cell), `records/` (one JSON per trial, live), `trials.parquet` (tidy table, one
row per trial), `best/<cell>/` (each cell's best checkpoint) and `report.html`.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from studies.spec import StudySpec, cell_key

DEFAULT_STORAGE = os.environ.get("DENOISE_STUDY_STORAGE", "~/denoise-studies")


def is_uri(path: str) -> bool:
    return "://" in path


def study_dir(storage: str | None, name: str) -> Path:
    """The local directory that holds a study's files (for URI storage: the local mirror)."""
    storage = storage or DEFAULT_STORAGE
    if is_uri(storage):
        return Path(os.environ.get("DENOISE_STUDY_CACHE", "~/.cache/denoise-study")).expanduser() / name
    return Path(storage).expanduser().resolve() / name


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
    import ray
    from ray import tune

    from studies.packing import check_packing, gpu_share
    from studies.records import StudyRecorder, trials_table
    from studies.recovery import CheckpointRepair
    from studies.scheduler import CellASHA
    from studies.searcher import CellSearcher
    from studies.trainable import train_fn

    budget = spec.budgets[opts.budget]
    storage = opts.storage or DEFAULT_STORAGE
    sdir = study_dir(storage, spec.name)
    if opts.fresh and sdir.exists():
        shutil.rmtree(sdir)
    experiment_path = f"{storage.rstrip('/')}/{spec.name}" if is_uri(storage) else str(sdir)

    cpus = opts.cpus_per_trial or budget.cpus_per_trial
    _init_ray(opts.address)
    gpus = gpu_share(opts.gpus_per_trial, budget.gpus_per_trial, opts.budget, ray.cluster_resources().get("GPU", 0))
    extra = dict(opts.extra or {}) | {"_cpus": cpus, "_gpus": gpus}
    if gpus > 0:
        extra.setdefault("device", "cuda")
        for line in check_packing(spec, opts.budget, extra, gpus, cpus):
            print(line, file=sys.stderr, flush=True)
    concurrency = opts.max_concurrent or budget.max_concurrent or _fit_concurrency(cpus, gpus)
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(concurrency))

    sdir.mkdir(parents=True, exist_ok=True)
    optuna_url = opts.optuna_storage or f"sqlite:///{sdir / 'optuna.db'}"
    n_evals = _evals_per_trial(spec, opts.budget, extra)
    searcher = CellSearcher(spec, opts.budget, optuna_url, extra)
    searcher.n_evals = n_evals
    info_path = sdir / "study.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {"runs": []}
    info.update(spec=spec.model_dump(), budget=opts.budget, planned=searcher.planned, cells=searcher.keys,
                n_evals=n_evals, storage=storage, optuna_storage=optuna_url, trials_per_cell=searcher.n_tune,
                seeds=searcher.n_seeds, concurrency=concurrency)
    started = time.time()
    info["runs"].append({"start": started, "end": None, "command": opts.command, "resources": ray.cluster_resources(),
                         "nodes": sum(1 for n in ray.nodes() if n.get("Alive")), "versions": _versions()})
    from studies.records import write_json

    write_json(info_path, info)

    trainable = tune.with_resources(train_fn, {"cpu": cpus, "gpu": gpus})
    recorder = StudyRecorder(sdir, searcher.planned, n_evals, searcher.keys,
                             searcher.n_tune + searcher.n_seeds, opts.quiet)
    if not opts.fresh and tune.Tuner.can_restore(experiment_path):
        if not opts.quiet:
            print(f"resuming {spec.name} from {experiment_path}", flush=True)
        tuner = tune.Tuner.restore(experiment_path, trainable=trainable, resume_unfinished=True,
                                   resume_errored=False, restart_errored=False)
    else:
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher, scheduler=CellASHA(spec.metric, spec.mode, n_evals, budget.grace_evals),
                num_samples=searcher.planned, max_concurrent_trials=concurrency, reuse_actors=True,
                trial_dirname_creator=lambda t: f"trial-{t.trial_id}"),
            run_config=tune.RunConfig(
                name=spec.name, storage_path=storage if is_uri(storage) else str(sdir.parent),
                failure_config=tune.FailureConfig(max_failures=budget.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                callbacks=[CheckpointRepair(), recorder], verbose=0))
    if not opts.quiet:
        print(f"study {spec.name}: {len(searcher.keys)} cells x ({searcher.n_tune} tuning + "
              f"{searcher.n_seeds} confirm) = {searcher.planned} trials, {concurrency} at a time, "
              f"budget {opts.budget}", flush=True)
    tuner.fit()

    info["runs"][-1]["end"] = time.time()
    write_json(info_path, info)
    table = trials_table(sdir, spec)
    table.to_parquet(sdir / "trials.parquet", index=False)
    copy_best_checkpoints(spec, table, sdir)
    if is_uri(storage):
        _upload(sdir, experiment_path)
    return sdir


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
    from denoise_core.config import validate_config

    cfg = validate_config({k: v for k, v in spec.cell_config(spec.cells()[0], budget, extra).items()
                           if not k.startswith("_")})
    return -(-cfg.steps // cfg.eval_every)


def copy_best_checkpoints(spec: StudySpec, table, sdir: Path) -> dict[str, Path]:
    """The best confirm run of every cell (by final metric) -> best/<cell>/ (model.pt, grid.png)."""
    out = {}
    if table.empty:
        return out
    col = f"final.{spec.metric}"
    done = table[(table.phase == "confirm") & (table.status == "completed") & table.checkpoint.notna()]
    if col not in done:
        return out
    for cell, group in done.groupby("cell"):
        best = group.sort_values(col, ascending=spec.mode == "min").iloc[0]
        dest = sdir / "best" / _safe(cell)
        src = best.checkpoint
        if is_uri(src):
            import pyarrow.fs as pafs

            shutil.rmtree(dest, ignore_errors=True)
            pafs.copy_files(src, str(dest))
        elif Path(src).is_dir():
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(src, dest, ignore=shutil.ignore_patterns("state.pt"))
        else:
            continue
        (dest / "trial.json").write_text(json.dumps({"cell": cell, "trial_id": best.trial_id,
                                                     spec.metric: float(best[col])}))
        out[cell] = dest
    return out


def _safe(cell: str) -> str:
    return "".join(c if c.isalnum() or c in "=,._-" else "_" for c in cell)


def best_dir(sdir: Path, cell: str) -> Path:
    return sdir / "best" / _safe(cell)


def _upload(sdir: Path, uri: str) -> None:
    import pyarrow.fs as pafs

    for name in ("study.json", "trials.parquet", "best", "report.html"):
        if (sdir / name).exists():
            pafs.copy_files(str(sdir / name), f"{uri}/{name}")


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("denoise-study", "torch", "ray", "optuna", "pandas", "plotly"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def cells_in_order(spec: StudySpec) -> list[str]:
    return [cell_key(c) for c in spec.cells()]
