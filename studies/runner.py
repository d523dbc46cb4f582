"""Run a study: one Ray Tune `Tuner`, resumable, leaving everything a report needs.

    sdir = run_study(load_spec("n2n_loss"), RunOptions(budget="quick", storage="~/denoise-studies"))

The study directory (`<storage>/<name>`, see `studies.store`) holds our files; Tune keeps its
experiment state and per-trial folders under `ray/` while the study runs, and that folder is removed
once every planned trial has finished (a complete study needs none of it; rerunning it rebuilds the
report). How many trials run at once follows the cluster: Tune starts a trial whenever its resources
are free and keeps one more pending, which is what makes an autoscaler add nodes.
"""
from __future__ import annotations

import os
import shutil
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from denoise_core.results import Score
from studies.documents import BestTrial
from studies.interrupt import stop_on_signals, tune_stops_gracefully
from studies.packing import slots
from studies.runlog import RunLog
from studies.spec import SpecError, StudySpec
from studies.store import COMPLETED, RAY_DIR, best_dir, clear_study, column, default_optuna_storage, is_uri, \
    read_info, read_looks, read_records, resolve_storage, study_dir, study_failure, write_trials_table


@dataclass
class RunOptions:
    budget: str = "quick"
    storage: str | None = None
    address: str | None = None
    max_concurrent: int | None = None
    tune_parallel: int | None = None  # q: a cell's tuning trials at once (--tune-parallel); None: the budget's
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    fresh: bool = False
    quiet: bool = False
    verbose: bool = False
    optuna_storage: str | None = None
    extra: dict | None = None  # trial keys set for every cell (e.g. dataset, data_root)
    command: str = ""


def run_study(spec: StudySpec, opts: RunOptions) -> Path:
    """Run (or resume) the study through one Tune `Tuner`; leave the store complete for the report."""
    storage = resolve_storage(opts.storage)
    sdir = study_dir(storage, spec.name)
    if _already_complete(spec, opts, storage, sdir):
        return sdir
    _silence_tune(opts.verbose)
    _init_ray(opts.address, spec.name)
    stop_on_signals()  # Ray's core worker installed a SIGTERM handler of its own: a signal is an interruption
    _run(spec, opts, storage, sdir)
    return sdir


def _run(spec: StudySpec, opts: RunOptions, storage: str, sdir: Path) -> None:
    from studies.remote import local_or_uri

    home = local_or_uri(storage, sdir, spec.name)  # the study's files: a directory, or a URI
    cpus, gpus = _resources(spec, opts)
    if opts.fresh:  # only now: a run refused above (no GPU for the budget, say) has deleted nothing
        clear_study(sdir)
    sdir.mkdir(parents=True, exist_ok=True)
    errors_log = _errors_to_file(sdir, opts.verbose)
    searcher = _searcher(spec, opts, sdir, cpus, gpus)
    log = RunLog(sdir, remote=home if is_uri(storage) else None)
    log.start(spec=spec.model_dump(mode="json"), budget=opts.budget, planned=searcher.planned, cells=searcher.keys,
              n_evals=searcher.n_evals, storage=storage, optuna_storage=searcher.storage_url,
              trials_per_cell=searcher.n_tune, seeds=searcher.n_seeds, max_concurrent=opts.max_concurrent,
              tune_parallel=searcher.q,
              command=opts.command, extra=opts.extra or {}, **_cluster())
    baselines = None
    try:  # from the run log's start on, an interruption in any phase is closed as one
        tuner = _tuner(spec, opts, searcher, home, sdir, cpus, gpus, errors_log)
        if not opts.quiet:
            _print_plan(spec, opts, searcher, cpus, gpus)
        baselines = _start_baselines(spec, opts, sdir)
        limit = opts.max_concurrent or spec.budgets[opts.budget].max_concurrent
        with pending_trials(min(searcher.most_at_once, limit or searcher.most_at_once)), tune_stops_gracefully():
            _fit(tuner, log)
        if not _all_finished(sdir, spec, opts.budget):  # Tune stops gracefully on a signal and returns
            _close_interrupted(spec, sdir, storage, home, log)
        _close_complete(spec, sdir, storage, home, log, baselines)
    except KeyboardInterrupt:  # the baselines scored so far are kept, the run says how it ended
        if baselines is not None:
            baselines.keep()
        if log.info.runs[-1].end is None:
            log.close("interrupted")
        raise


def _print_plan(spec: StudySpec, opts: RunOptions, searcher, cpus: float, gpus: float) -> None:
    looks = searcher.looks
    more = (f"; cells with an undecided comparison get waves of {looks[0]} more, up to {looks[-1]} confirm runs a "
            f"cell ({len(looks)} looks)") if len(looks) > 1 else ""
    print(f"study {spec.name}: {len(searcher.keys)} cells x ({searcher.n_tune} tuning + {searcher.n_seeds} confirm) = "
          f"{searcher.planned} trials, budget {opts.budget}, {cpus:g} CPU{'s' if cpus != 1 else ''}"
          + (f" + {gpus:g} GPU" if gpus else "") + f" per trial{more}", flush=True)
    print(plan_line(len(searcher.keys), searcher.q, min(searcher.q, searcher.n_tune), slots(cpus, gpus)), flush=True)


def _already_complete(spec: StudySpec, opts: RunOptions, storage: str, sdir: Path) -> bool:
    """Whether this run has nothing to do: the study is complete at this budget (its report is rebuilt)."""
    from studies.remote import fetch

    if not opts.fresh and is_uri(storage):  # resuming on another machine: the records and Optuna studies come from the store
        fetch(storage, spec.name)
    if opts.fresh:
        return False
    done = completed(sdir, opts.budget, opts.extra or {})  # refuses another budget's or data's results first
    _same_q(spec, opts, sdir)
    take_edits(spec, opts, sdir)
    if not done:
        return False
    if not opts.quiet:
        print(f"study {spec.name} is complete (budget {opts.budget}); rebuilding its report (--fresh runs it again)",
              flush=True)
    return True


def plan_line(cells: int, q: int, per_cell: int, n_slots: int) -> str:
    """What the plan can use of the cluster while it tunes: cells x q trials at once, against the cluster's slots.

    >>> plan_line(4, 1, 1, 32)
    'tuning: 4 cells x q=1: at most 4 trials at once on 32 slots; raise q (tune_parallel in the budget, or --tune-parallel) to fill them'
    >>> plan_line(4, 2, 2, 8)
    'tuning: 4 cells x q=2: at most 8 trials at once on 8 slots'
    """
    most = cells * per_cell
    line = f"tuning: {cells} cells x q={q}: at most {most} trials at once on {n_slots} slots"
    if most < n_slots:
        line += "; raise q (tune_parallel in the budget, or --tune-parallel) to fill them"
    return line


def _same_q(spec: StudySpec, opts: RunOptions, sdir: Path) -> None:
    """A study keeps the q it started with: another would sample its remaining trials from other waves. A resume
    without --tune-parallel takes the stored q; one that asks for another is refused."""
    if not (sdir / "study.json").exists():
        return
    stored = read_info(sdir).tune_parallel
    if stored is not None and opts.tune_parallel is None and read_records(sdir):
        opts.tune_parallel = stored
        return
    asked = opts.tune_parallel or spec.tune_parallel(opts.budget)
    if stored is not None and stored != asked and read_records(sdir):
        raise SpecError(f"study {sdir.name!r} tunes in waves of q={stored}; this run asks for q={asked}: give "
                        f"--tune-parallel {stored} to go on, or run it with --fresh to start over")


def take_edits(spec: StudySpec, opts: RunOptions, sdir: Path) -> None:
    """An edited YAML is never silently ignored: edits that change no trial (description, references, claims,
    figure ...) are stored, and the report built from them; edits that change trials are a SpecError (exit 2)."""
    from studies.spec import spec_edits

    if not (sdir / "study.json").exists():
        return
    info = read_info(sdir)
    if not info.spec:
        return
    report, trials = spec_edits(info.spec, spec, opts.budget)
    if trials:
        raise SpecError(f"study {spec.name!r} was run with another spec: {', '.join(trials[:4])}"
                        f"{' ...' if len(trials) > 4 else ''} differ(s) from it, and change its trials; run it with "
                        f"--fresh to start over, or give the study a new name")
    if report:
        info.model_copy(update={"spec": spec.model_dump(mode="json")}).write(sdir / "study.json")
        print(f"study {spec.name}: took the edited {', '.join(report)} (they change no trial)", flush=True)


def _searcher(spec: StudySpec, opts: RunOptions, sdir: Path, cpus: float, gpus: float):
    from studies.searcher import CellSearcher

    searcher = CellSearcher(spec, opts.budget, opts.optuna_storage or default_optuna_storage(sdir), opts.extra)
    searcher.q = opts.tune_parallel or spec.tune_parallel(opts.budget)
    searcher.resources = (cpus, gpus)
    searcher.n_evals = _evals_per_trial(spec, opts.budget, opts.extra)
    searcher.sdir = str(sdir)
    if is_uri(resolve_storage(opts.storage)):
        from studies.remote import local_or_uri

        searcher.remote = local_or_uri(opts.storage, sdir, spec.name)  # looks.json is pushed there too
    return searcher


PENDING = "TUNE_MAX_PENDING_TRIALS_PG"


@contextmanager
def pending_trials(n: int):
    """Let Tune start up to `n` trials at once (unless the user set TUNE_MAX_PENDING_TRIALS_PG themselves).

    Tune keeps one trial pending at a time for any searcher but its own (`_get_max_pending_trials`): it asks for
    the next trial only once the last one runs, so a study started its trials one by one, one actor start each,
    and an autoscaler saw the demand of one trial at a time. The plan's most at once is what the study can use.
    """
    if PENDING in os.environ:
        yield
        return
    os.environ[PENDING] = str(max(1, n))
    try:
        yield
    finally:
        os.environ.pop(PENDING, None)


def _fit(tuner, log: RunLog) -> None:
    try:
        tuner.fit()
    except KeyboardInterrupt:
        log.close("interrupted")
        raise
    except BaseException:
        log.close("failed")
        raise


def _close_interrupted(spec: StudySpec, sdir: Path, storage: str, home: str, log: RunLog) -> None:
    """The study was interrupted: its table and run log say so, and the store has all of it. Raises KeyboardInterrupt."""
    from studies.remote import upload

    write_trials_table(sdir, spec)
    log.close("interrupted")
    if is_uri(storage):
        upload(sdir, home)
    raise KeyboardInterrupt


def _close_complete(spec: StudySpec, sdir: Path, storage: str, home: str, log: RunLog, baselines) -> None:
    """Every trial finished: baselines stored, best checkpoints copied, Tune's resumable state removed."""
    from studies.remote import delete_dir, upload

    if baselines is not None:
        baselines.finish()
    copy_best_checkpoints(spec, write_trials_table(sdir, spec), sdir)
    log.close("failed" if study_failure(sdir) else "finished")
    shutil.rmtree(sdir / RAY_DIR, ignore_errors=True)  # Tune's state is needed only to resume
    if is_uri(storage):
        delete_dir(f"{home}/{RAY_DIR}")
        upload(sdir, home)


def completed(sdir: Path, budget: str, extra: dict | None = None) -> bool:
    """The study's every planned trial finished at this budget (a rerun rebuilds the report only).
    A study that holds another budget's results, or results on other data (--dataset, --data-root),
    cannot be continued with these: SpecError."""
    if not (sdir / "study.json").exists():
        return False
    info = read_info(sdir)
    if info.budget not in (None, budget) and read_records(sdir):
        raise SpecError(f"study {sdir.name!r} holds results of budget {info.budget!r}; "
                        f"run it with --fresh to start over at budget {budget!r}")
    stored, asked = info.extra or {}, extra or {}
    if info.extra is not None and stored != asked and read_records(sdir):
        said = lambda d: ", ".join(f"{k}={v}" for k, v in sorted(d.items())) or "the spec's own data"
        raise SpecError(f"study {sdir.name!r} holds results on {said(stored)}; this run asks for {said(asked)}: "
                        f"run it with --fresh to start over, or give the same data flags")
    # a failed study whose every trial finished is complete too: a rerun rebuilds its report (and exits 1 again)
    return info.last_run is not None and info.last_run.ended in ("finished", "failed") and \
        _all_finished(sdir, StudySpec.model_validate(info.spec) if info.spec else None, budget)


def _all_finished(sdir: Path, spec: StudySpec | None, budget: str) -> bool:
    """Every trial planned has finished, and the plan is final: its last look is taken, or a look left nothing
    undecided (a run interrupted between a wave's end and its look has a look to take)."""
    if sum(r.finished for r in read_records(sdir)) < read_info(sdir).planned:
        return False
    looks, plan = (spec.looks(budget) if spec is not None else [0]), read_looks(sdir)
    taken = plan.continuing if plan is not None else []
    return len(taken) >= len(looks) - 1 or bool(taken and not taken[-1])


def copy_best_checkpoints(spec, table, sdir: Path) -> dict[str, Path]:
    """The best completed confirm run of every cell (by its validation metric) -> best/<cell>/."""
    out = {}
    col = column(Score(spec.metric))
    if table.empty or col not in table:
        return out
    done = table[(table.phase == "confirm") & (table.status == COMPLETED) & table.checkpoint.notna()]
    for cell, group in done.groupby("cell"):
        best = group.sort_values(col, ascending=spec.mode == "min").iloc[0]
        dest = best_dir(sdir, cell)
        if not _copy_checkpoint(best.checkpoint, dest):
            continue
        BestTrial(cell=cell, trial_id=best.trial_id, metric=spec.metric, value=float(best[col])).write(dest / "trial.json")
        out[cell] = dest
    return out


def _copy_checkpoint(src: str, dest: Path) -> bool:
    from studies.remote import download

    if is_uri(src):  # the resumable state stays behind: best/ holds what `denoise` and the report need
        shutil.rmtree(dest, ignore_errors=True)
        return download(src, dest, skip=("state.pt",))
    if Path(src).is_dir():
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("state.pt"))
        return True
    return False


def _resources(spec: StudySpec, opts: RunOptions) -> tuple[float, float]:
    """(CPUs, GPU share) per trial; checks the GPU packing when the cluster has GPUs."""
    import ray

    from studies.packing import check_packing, gpu_share

    budget = spec.budgets[opts.budget]
    cpus = opts.cpus_per_trial or budget.cpus_per_trial
    have = ray.cluster_resources().get("GPU", 0)
    gpus = gpu_share(opts.gpus_per_trial, budget.gpus_per_trial, opts.budget, have)
    if gpus > 0 and have == 0:
        _check_gpus_can_come(spec, opts, gpus)
    if gpus > 0:  # a trial takes the GPU Ray gives it (device auto); a node whose GPU is not CUDA runs it on CPU
        for line in check_packing(spec, opts.budget, opts.extra or {}, gpus, cpus):
            print(line, file=sys.stderr, flush=True)
    return cpus, gpus


def _check_gpus_can_come(spec: StudySpec, opts: RunOptions, gpus: float) -> None:
    """Trials that ask for a GPU on a cluster without one would wait forever: a SpecError (exit 2) when
    no GPU can come (a Ray of our own, or an autoscaler whose node types have none), else one warning."""
    import ray

    what = (f"budget {opts.budget!r} of {spec.name} asks for {gpus:g} GPU per trial"
            + (" (--gpus-per-trial)" if opts.gpus_per_trial else ""))
    fix = "run it on a GPU cluster (ray up cluster.yaml, then --address auto), or pass --gpus-per-trial 0 for CPUs"
    if not opts.address:
        raise SpecError(f"{what}, but this machine has no GPU: {fix}")
    try:
        most = ray._private.state.state.get_max_resources_from_cluster_config()
    except Exception:  # noqa: BLE001 - an older head or no autoscaler state: unknown
        most = None
    if most is not None and not most.get("GPU"):
        raise SpecError(f"{what}, but the cluster has no GPU and its autoscaler has no GPU node type: {fix}")
    print(f"warning: {what} and the cluster has no GPU now; trials wait until its autoscaler adds one",
          file=sys.stderr, flush=True)


def _cluster() -> dict:
    import ray

    return {"resources": ray.cluster_resources(), "nodes": sum(1 for n in ray.nodes() if n.get("Alive")),
            "versions": _versions()}


def _tuner(spec: StudySpec, opts: RunOptions, searcher, home: str, sdir: Path, cpus: float, gpus: float,
           errors_log: Path | None = None):
    """A new Tuner, or the stored one restored: finished trials are kept, unfinished ones resume."""
    from ray import tune

    from studies.records import Progress, StudyRecorder
    from studies.recovery import RestoreRepair
    from studies.scheduler import CellHalving
    from studies.trainable import train_fn

    budget = spec.budgets[opts.budget]
    trainable = tune.with_resources(train_fn, {"cpu": cpus, "gpu": gpus})
    # restored with the experiment (Tune pickles them): they hold plain data, and start afresh in setup()
    recorder = StudyRecorder(sdir, searcher.planned, searcher.keys, searcher.n_tune + searcher.looks[-1],
                             opts.quiet, metric=spec.metric, remote=home if is_uri(home) else None,
                             errors_log=str(errors_log) if errors_log else None, n_tune=searcher.n_tune)
    callbacks = [RestoreRepair(), recorder, Progress(sdir, searcher.planned, opts.quiet, searcher.resources)]
    experiment = f"{home}/{RAY_DIR}"
    if not opts.fresh and tune.Tuner.can_restore(experiment):
        if not opts.quiet:
            print(f"resuming {spec.name} from {experiment}", flush=True)
        return tune.Tuner.restore(experiment, trainable=trainable, resume_unfinished=True,
                                  resume_errored=False, restart_errored=False)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=CellHalving(sdir, spec.metric, spec.mode, searcher.n_evals, budget.grace_evals, q=searcher.q),
            # the searcher ends the experiment (Searcher.FINISHED once every cell is confirmed). A count here would
            # stop it one trial short after a driver kill: a slot the searcher asks again (a trial created after
            # Tune's last experiment checkpoint) can already be in the count Tune restores
            num_samples=-1, max_concurrent_trials=opts.max_concurrent or budget.max_concurrent,
            reuse_actors=True, trial_dirname_creator=lambda t: f"trial-{t.trial_id}"),
        run_config=tune.RunConfig(
            name=RAY_DIR, storage_path=home,
            failure_config=tune.FailureConfig(max_failures=budget.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=callbacks, verbose=2 if opts.verbose else 0))


ERRORS_LOG = "errors.log"
_TUNE_LOGGERS = ("ray.tune", "ray.air", "ray.train")


def _errors_to_file(sdir: Path, verbose: bool) -> Path | None:
    """Unless --verbose, Tune's log records (a failed trial's whole traceback among them) go to
    <study>/errors.log instead of the terminal; the one line printed per failed trial names that file."""
    import logging

    if verbose:
        return None
    path = sdir / ERRORS_LOG
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in _TUNE_LOGGERS:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if getattr(h, "_denoise_study", False)]:
            logger.removeHandler(old)  # a second study in this process: its own file
        handler._denoise_study = True
        logger.addHandler(handler)
        logger.propagate = False
    return path


def _silence_tune(verbose: bool) -> None:
    """Tune's own tables, logger files and hints off (the study prints its own lines), unless --verbose."""
    if not verbose:
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no TensorBoard/CSV/JSON per trial
        # Tune's newer console output prints its configuration box at any verbosity; the classic one is silent at 0
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def _init_ray(address: str | None, study: str) -> None:
    import logging

    import ray

    if ray.is_initialized():
        return
    # trial output stays in the workers' logs; errors reach the records and the report
    kwargs = dict(logging_level=logging.ERROR, log_to_driver=False, namespace=f"denoise-study-{study}")
    if address:
        ray.init(address=address, **kwargs)
    else:  # no address: a Ray of our own, never silently attached to another cluster on this machine
        ray.init(address="local", include_dashboard=False, **kwargs)


def _evals_per_trial(spec: StudySpec, budget: str, extra: dict | None) -> int:
    from denoise_core.tasks import validate_config

    cfg = validate_config(spec.cell_config(spec.cells()[0], budget, extra))
    return -(-cfg.steps // cfg.eval_every)


def _start_baselines(spec: StudySpec, opts: RunOptions, sdir: Path):
    """The classical denoisers on the study's test images, as Ray tasks beside the trials (denoise tasks)."""
    from denoise_core.tasks import get_task

    if not get_task(spec.task).baselines:
        return None
    from studies.baseline_run import BaselineRun

    return BaselineRun.start(spec, opts.budget, opts.extra or {}, sdir, quiet=opts.quiet)


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("denoise-study", "torch", "ray", "optuna", "pandas", "plotly"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out

