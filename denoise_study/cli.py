"""`denoise-study`: run image-denoising studies on Ray Tune + Optuna and report what they found.

Heavy libraries (torch, ray, optuna, plotly) are imported inside the commands that need them,
so `denoise-study --help` and `list` start fast.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from studies.spec import BUDGETS, SpecError

STORAGE_HELP = "Where studies live: a local path, an NFS path or an object-store URI [env DENOISE_STUDY_STORAGE, default ~/denoise-studies]."


class Fail(click.ClickException):
    """Exit 2 with one line: the input was wrong."""

    exit_code = 2

    def show(self, file=None):
        click.echo(f"error: {self.message}", err=True)


class Interrupted(click.ClickException):
    """Exit 1 with one line: a signal (SIGINT, SIGTERM, SIGHUP) stopped the command, in whichever phase."""

    exit_code = 1

    def show(self, file=None):
        click.echo(self.message, err=True)


class Commands(click.Group):
    """The command group: an interruption in any phase of any command is one line and exit 1 (click's own
    handling would print a blank line and "Aborted!")."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Interrupted("interrupted") from None


def _spec(name_or_path: str, budgets: tuple[str, ...] = BUDGETS, extra: dict | None = None):
    """The study spec, every cell validated at these budgets; its report figure checked against the registered ones."""
    from studies.spec import check_trial_configs, load_spec

    try:
        spec = load_spec(name_or_path, check=False)
        check_trial_configs(spec, Path(name_or_path).name, budgets=budgets, extra=extra)
    except SpecError as e:
        raise Fail(str(e)) from None
    if spec.figure is not None:
        from reports.figures import FIGURES

        if spec.figure not in FIGURES:
            raise Fail(f"{Path(name_or_path).name}: figure: unknown figure {spec.figure!r}; known: {', '.join(FIGURES.names)}")
    return spec


def _existing_study(name: str, storage: str | None) -> Path:
    """The study's local directory; with object storage, its store pulled into the local mirror first."""
    from studies.remote import fetch

    from studies.spec import check_study_name
    from studies.store import UnsafeStudyPath

    study = Path(name).stem if name.endswith((".yaml", ".yml")) else name
    try:
        check_study_name(study)
        sdir = fetch(storage, study)
    except (ValueError, UnsafeStudyPath) as e:
        raise Fail(str(e)) from None
    except OSError as e:  # unreachable object store, no permission ...
        raise Fail(f"cannot read study {study!r} from {storage!r}: {str(e).splitlines()[0]}") from None
    if not (sdir / "study.json").exists():
        raise Fail(f"no study {sdir.name!r} under {str(sdir.parent)!r}; run it first (denoise-study run {name})")
    return sdir


def main(args: list[str] | None = None) -> None:
    """The console script: click's own usage errors become one line and exit code 2 too; a signal in any phase is
    an interruption (studies.interrupt)."""
    from studies.interrupt import stop_on_signals

    stop_on_signals()
    try:
        cli.main(args=args, prog_name="denoise-study", standalone_mode=False)
    except click.UsageError as e:
        click.echo(f"error: {e.format_message()}", err=True)
        sys.exit(2)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.Abort:
        sys.exit(1)
    sys.exit(0)


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def cli():
    """Answer image-denoising research questions with fair, seeded hyperparameter studies.

    \b
    denoise-study list                       the study catalog
    denoise-study run n2n_loss               run a study (resumes if interrupted), print the report path
    denoise-study report n2n_loss            rebuild the HTML report from stored results
    denoise-study spec [noise|model|...]     every key a study YAML may hold, and each component's parameters
    denoise-study evaluate --test Set12 --data-root DIR --noise gaussian:sigma=25
                                             baselines (and a study's models) under the literature's protocol

    Exit codes: 0 done, 1 the run failed or was interrupted (Ctrl-C, SIGTERM or SIGHUP, in any phase: what
    finished is kept, and the same command goes on), 2 the input was wrong.
    """


@cli.command("list")
def list_cmd():
    """List the catalog's studies and their questions."""
    from studies.spec import catalog_names, load_spec

    for name in catalog_names():
        spec = load_spec(name, check=False)
        first = spec.description.strip().splitlines()[0]
        click.echo(f"{name:16s} {first}")


@cli.command("spec")
@click.argument("sections", nargs=-1)
def spec_cmd(sections):
    """Every key a study YAML may hold: type, default, bounds and meaning; and each noise, model, loss,
    training scheme, schedule, dataset and task with its parameters. Generated from the code, so it is always current.

    SECTIONS: any of study, budget, tune, claim (expect), references, trial, noise, model, loss, target, schedule,
    dataset, task (default: all).
    """
    from studies.reference import ALIASES, SECTIONS, reference

    unknown = [s for s in sections if s not in SECTIONS and s not in ALIASES]
    if unknown:
        raise Fail(f"unknown section {unknown[0]!r}; sections: {', '.join(SECTIONS)}")
    click.echo(reference(tuple(sections) or SECTIONS))


@cli.command()
@click.argument("name")
def show(name):
    """Print a study's YAML (catalog name or path) and its plan per budget."""
    from studies.spec import resolve

    spec = _spec(name)
    click.echo(resolve(name).read_text().rstrip())
    click.echo("")
    for b in BUDGETS:
        n = len(spec.cells())
        t, s = spec.budgets[b].trials_per_cell, spec.seeds_for(b)
        click.echo(f"# budget {b}: {n} cells x ({t} tuning + {s} confirm) = {n * (t + s)} trials")


def address_problem(address: str | None, timeout: float = 5.0) -> str | None:
    """Why nothing answers at a `host:port` or `ray://host:port` address (Ray itself would wait for
    minutes), or None. 'auto' and no address are left to Ray."""
    import socket
    from urllib.parse import urlparse

    if not address or address in ("auto", "local"):
        return None
    u = urlparse(address if "://" in address else f"gcs://{address}")
    try:
        host, port = u.hostname, u.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        return f"--address {address!r}: expected host:port, ray://host:port or auto"
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as e:
        return f"--address {address!r}: no Ray cluster answers there ({e.strerror or e}); start it, or check the address"


def absolute_data_paths(dataset: str | None, data_root: str | None):
    """--dataset and --data-root as the trials need them. `train=A,val=B,test=C` names a source per split.
    Trials run in Ray's worker directories on any node: a relative path given here would point elsewhere
    there, so local paths become absolute (URIs stay as they are)."""
    from studies.store import is_uri

    def absolute(name: str) -> str:
        if name.startswith("folder:") and not is_uri(name):
            return "folder:" + str(Path(name[len("folder:"):]).expanduser().resolve())
        return name

    if data_root is not None and not is_uri(data_root):
        data_root = str(Path(data_root).expanduser().resolve())
    if dataset is not None and "=" in dataset.split(":")[0]:
        parts = dict(item.partition("=")[::2] for item in dataset.split(","))
        return {k.strip(): absolute(v.strip()) for k, v in parts.items()}, data_root
    return (absolute(dataset) if dataset is not None else None), data_root


@cli.command()
@click.argument("study")
@click.option("--budget", type=click.Choice(BUDGETS), default="quick", show_default=True,
              help="smoke: seconds (tests); quick: a laptop CPU on bundled data in minutes; full: a GPU cluster.")
@click.option("--storage", default=None, help=STORAGE_HELP)
@click.option("--address", default=None, help="Ray cluster: 'auto', 'ray://host:10001', or none for a local Ray.")
@click.option("--max-concurrent", type=click.IntRange(min=1), default=None, help="Trials at a time [default: what the resources fit].")
@click.option("--tune-parallel", type=click.IntRange(min=1), default=None,
              help="q: a cell's tuning trials that run at once, in waves each sampled from the waves before it, so the "
                   "answer does not depend on timing [default: the budget's tune_parallel; full 4, else 1]. Stored "
                   "with the study: a resume keeps it.")
@click.option("--cpus-per-trial", type=click.FloatRange(min=0, min_open=True), default=None,
              help="CPUs each trial reserves, so trials at once = the cluster's CPUs / this [default: the budget's "
                   "cpus_per_trial, 1]. Fractions pack trials onto fewer cores.")
@click.option("--gpus-per-trial", type=click.FloatRange(min=0), default=None,
              help="Fractions pack trials: 0.25 runs four trials per GPU. Default: the budget's, else 0.25 when "
                   "the cluster has GPUs (0 without). The run measures one trial's GPU memory first and warns "
                   "when the packing does not fit.")
@click.option("--dataset", default=None, help="Override the study's data: one source (natural, digits, cifar10, folder:PATH, "
                                              "Set12 ...; see `denoise-study spec dataset`) or one per split: "
                                              "train=Train400,val=Kodak24,test=Set12.")
@click.option("--data-root", default=None, help="Root of torchvision datasets; must be reachable from every node.")
@click.option("--optuna-storage", default=None,
              help="Where the Optuna studies live: journal:PATH (an append-only file) or an RDB URL (sqlite:///..., "
                   "postgresql://...) [default: the study's optuna.journal, or the storage it was started with].")
@click.option("--fresh", is_flag=True, help="Discard stored results and start over instead of resuming.")
@click.option("--quiet", is_flag=True, help="No progress lines.")
@click.option("--verbose", is_flag=True, help="Also Ray Tune's own status tables and hints.")
def run(study, budget, storage, address, max_concurrent, tune_parallel, cpus_per_trial, gpus_per_trial, dataset,
        data_root, optuna_storage, fresh, quiet, verbose):
    """Run STUDY (a catalog name or a YAML path) through Ray Tune, then write its report.

    Each cell (combination of compared factors) is tuned by Optuna with the same number of trials,
    its best configuration re-run over seeds; running the same study again resumes it. Progress: one
    line per finished trial and a summary every 30 s.
    """
    from studies.runner import RunOptions

    dataset, data_root = absolute_data_paths(dataset, data_root)
    extra = {k: v for k, v in {"dataset": dataset, "data_root": data_root}.items() if v is not None}
    spec = _spec(study, budgets=(budget,), extra=extra)  # every cell at this budget, each distinct config once
    _check_run(spec, budget, extra, storage, address)
    from studies.spec import shared_split_warnings

    for line in shared_split_warnings(spec, budget, extra):  # allowed (the literature often does it), never silent
        click.echo(f"warning: {line}", err=True)
    sdir, created, lock = _lock_study(spec, storage, fresh)
    opts = RunOptions(budget=budget, storage=storage, address=address, max_concurrent=max_concurrent,
                      tune_parallel=tune_parallel,
                      cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial, fresh=fresh, quiet=quiet,
                      verbose=verbose, optuna_storage=optuna_storage, extra=extra,
                      command=" ".join(["denoise-study", *sys.argv[1:]]))
    sdir, path = _run_locked(spec, opts, sdir, created, lock)
    click.echo(f"results: {sdir}")
    click.echo(f"report: {path}")
    from studies.store import study_failure

    if why := study_failure(sdir):
        click.echo(f"error: the study failed: {why}", err=True)
        sys.exit(1)


def _check_run(spec, budget: str, extra: dict, storage: str | None, address: str | None) -> None:
    """Everything a run can be refused for before it writes anything: data, storage, the cluster's address."""
    from studies.spec import check_data
    from studies.store import is_uri, storage_problem

    data_root = extra.get("data_root")
    if data_root is not None and not is_uri(data_root) and not Path(data_root).expanduser().is_dir():
        raise Fail(f"--data-root {data_root!r} is not a directory")
    try:
        check_data(spec, budget, extra)
    except SpecError as e:
        raise Fail(str(e)) from None
    if problem := storage_problem(storage) or address_problem(address):
        raise Fail(problem)


def _lock_study(spec, storage: str | None, fresh: bool):
    """(study folder, whether this run creates it, the driver lock held): one driver per study at a time."""
    from studies.lock import StudyLocked, driver_lock
    from studies.store import UnsafeStudyPath, clear_check, resolve_storage, study_dir

    try:
        sdir = study_dir(storage, spec.name)
        created = not sdir.exists()  # a refused run leaves no folder of its own behind
        if fresh:
            clear_check(sdir)  # refused before anything is written
        lock = driver_lock(storage, spec.name)
        lock.acquire()
    except (StudyLocked, UnsafeStudyPath) as e:
        raise Fail(str(e)) from None
    except OSError as e:  # storage that cannot be created
        raise Fail(f"--storage {storage or resolve_storage(None)!r}: cannot create the study folder: "
                   f"{e.strerror or e}") from None
    return sdir, created, lock


def _run_locked(spec, opts, sdir: Path, created: bool, lock) -> tuple[Path, Path]:
    """Run the study and write its report, holding the lock; every way it can end is one line and an exit code."""
    from studies.runner import run_study
    from studies.store import UnsafeStudyPath

    try:
        sdir = run_study(spec, opts)
        return sdir, _write_report(sdir, opts.storage)
    except (SpecError, UnsafeStudyPath) as e:  # e.g. the study holds another budget's results: nothing was run
        lock.release()
        if created and sdir.is_dir() and not any(sdir.iterdir()):
            sdir.rmdir()
        raise Fail(str(e)) from None
    except KeyboardInterrupt:
        raise Interrupted("interrupted; run the same command again to resume") from None
    except Exception as e:  # noqa: BLE001 - the run failed: say so in one line, exit 1
        click.echo(f"error: the study failed: {type(e).__name__}: {e}", err=True)
        sys.exit(1)
    finally:
        lock.release()


def _write_report(sdir: Path, storage: str | None) -> Path:
    """report.html in the study's directory, and beside the results when they live in an object store."""
    from reports.build import build_report
    from studies.remote import study_uri, upload
    from studies.store import is_uri, resolve_storage

    path = build_report(sdir)
    if is_uri(resolve_storage(storage)):
        upload(sdir, study_uri(resolve_storage(storage), sdir.name), ("study.json", "trials.parquet", "report.html"))
    return path


@cli.command()
@click.argument("name")
@click.option("--storage", default=None, help=STORAGE_HELP)
def status(name, storage):
    """How far a study is: trials by cell and status (works while it runs)."""
    import time

    from studies.runlog import run_span
    from studies.cells import cell_label, parse_cell
    from studies.store import SHOWN, read_info, read_records

    sdir = _existing_study(name, storage)
    info = read_info(sdir)
    recs = read_records(sdir)
    per_cell = info.trials_per_cell + info.seeds
    finished = [r for r in recs if r.finished]
    click.echo(f"{sdir.name}: {len(finished)}/{info.planned} trials finished, budget {info.budget}, {sdir}")
    alive = False
    if (run := info.last_run) is not None:
        seconds, how = run_span(run)
        alive = how == "running"
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.start))
        click.echo(f"last run: {how}, {seconds / 60:.1f} min since {since} (host {run.host or '?'}, pid {run.pid or '?'})")
    # a trial runs only while a driver does: without one, an unfinished trial was interrupted (it resumes)
    state = lambda r: r.status if r.finished or alive else "interrupted"  # noqa: E731
    for cell in info.cells:
        mine = [r for r in recs if r.cell == cell]
        counts = {s: sum(state(r) == s for r in mine) for s in SHOWN}
        shown = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        click.echo(f"  {cell_label(parse_cell(cell))}: {sum(r.finished for r in mine)}/{per_cell}"
                   + (f" ({shown})" if shown else ""))


@cli.command()
@click.argument("name")
@click.option("--storage", default=None, help=STORAGE_HELP)
def report(name, storage):
    """Rebuild NAME's HTML report from its stored results (also while it runs: marked partial)."""
    from studies.store import read_spec, write_trials_table

    sdir = _existing_study(name, storage)
    write_trials_table(sdir, read_spec(sdir))
    click.echo(f"report: {_write_report(sdir, storage)}")


@cli.command()
@click.option("--study", "name", default=None, help="A study that has run: its best model denoises IN.")
@click.option("--method", default=None, metavar="NAME",
              help="Instead of a study's model, a single-image method fitted on IN alone: zs_n2n (Zero-Shot "
                   "Noise2Noise) or noise2fast. No training data needed; minutes on a CPU for a photograph.")
@click.option("--seed", type=int, default=0, show_default=True, help="With --method: the network's initial weights.")
@click.option("--fit-steps", type=click.IntRange(1, 100_000), default=None,
              help="With --method: fit this many steps at most instead of the published number (ZS-N2N 3000).")
@click.option("--noise", default=None, help="The image's noise (e.g. impulse): the best model trained on it. Needed "
                                            "when the study trained on several noises, unless --cell is given.")
@click.option("--cell", default=None, help="Which cell's best model, e.g. 'noise=gaussian,loss=l2'.")
@click.option("--storage", default=None, help=STORAGE_HELP)
@click.argument("inp", metavar="IN", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Where to write the denoised image.")
@click.option("--sigma", type=click.FloatRange(min=0, min_open=True), default=None,
              help="The input's Gaussian noise level (0-255 scale); required for a DDPM study's model.")
def denoise(name, method, seed, fit_steps, noise, cell, storage, inp, output, sigma):
    """Denoise the image IN with a study's best model for its noise (--study), or with a single-image method fitted
    on IN alone (--method), and write it to OUTPUT.

    Grayscale in, grayscale out (1-bit and grey+alpha included); RGB in, RGB out; 16-bit grey comes back
    16-bit, and an alpha channel is carried through unchanged. The output's folder must exist.
    """
    if (name is None) == (method is None):
        raise Fail("give --study (a study's trained model) or --method (a single-image method), one of them")
    if fit_steps is not None and method is None:
        raise Fail("--fit-steps goes with --method (a single-image method's fit)")
    if not Path(inp).is_file():
        raise Fail(f"input image {inp!r} does not exist")
    if method is not None:
        if cell or noise or sigma is not None or storage:
            raise Fail("--method fits on the image alone: --cell, --noise, --sigma and --storage go with --study")
        from studies.apply import denoise_file_zero_shot

        try:
            took = denoise_file_zero_shot(method, Path(inp), Path(output), seed, fit_steps,
                                          say=lambda line: click.echo(line, err=True))
        except ValueError as e:
            raise Fail(str(e)) from None
        click.echo(f"{output} ({method}, fitted on the image in {took:.0f} s)")
        return
    sdir = _existing_study(name, storage)
    from studies.apply import denoise_file
    from studies.cells import cell_label, parse_cell

    try:
        used = denoise_file(sdir, cell, Path(inp), Path(output), sigma, noise,
                            warn=lambda line: click.echo(line, err=True))
    except ValueError as e:
        raise Fail(str(e)) from None
    click.echo(f"{output} (model of cell {cell_label(parse_cell(used))})")


@cli.command()
@click.option("--test", "test_set", required=True,
              help="The test set: a standard set under --data-root (BSD68, CBSD68, Set12, Kodak24, McMaster, Urban100 ...), "
                   "folder:PATH (clean images; --noise draws their noise), or pairs:PATH (real noise: a folder per scene "
                   "with clean.png and its noisy captures; with --noise real).")
@click.option("--data-root", default=None, help="The folder that holds the standard sets, each in its usual folder name.")
@click.option("--noise", "noise", required=True, help="The noise and its level, e.g. gaussian:sigma=25 (0-255 scale).")
@click.option("--channels", type=click.Choice(["1", "3"]), default=None,
              help="1 grey, 3 colour [default: a study's models' channels, else the set's own: colour when any "
                   "of its images is colour; the table's channels column says which].")
@click.option("--study", "name", default=None, help="Also score this study's best models (every cell, or --cell).")
@click.option("--cell", default=None, help="With --study: one cell, e.g. 'noise=gaussian,loss=l2'.")
@click.option("--storage", default=None, help=STORAGE_HELP)
@click.option("--seed", type=int, default=0, show_default=True, help="The noise seed: image i draws from seed + i.")
@click.option("--method", "methods", multiple=True, metavar="NAME",
              help="Also a single-image (zero-shot) method, fitted on each noisy image alone: zs_n2n (Zero-Shot "
                   "Noise2Noise) or noise2fast; repeat for both. Minutes per image on a CPU.")
@click.option("--fit-steps", type=click.IntRange(1, 100_000), default=None,
              help="With --method: fit this many steps at most instead of the published number (ZS-N2N 3000); the "
                   "rows then carry no published value.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None,
              help="Also write one row per method: method, test_set, noise, images, psnr, ssim, seconds_per_image, "
                   "published, note.")
def evaluate(test_set, data_root, noise, channels, name, cell, storage, seed, methods, fit_steps, csv_path):
    """Score the classical baselines (the noisy input; BM3D, or CBM3D for colour, at the noise's sigma), the
    single-image methods of --method and, with --study, a study's best models on every image of a test set, under
    the literature's protocol: whole images, noise drawn once per image from a fixed seed and not clipped, outputs
    rounded to 8 bits, PSNR and SSIM per image averaged over the set, and the wall time per image. Published rows of
    the same set, noise and level are shown beside ours. BM3D takes seconds per image, a zero-shot fit minutes on a
    CPU: progress goes to stderr.
    """
    from denoise_core.schemes import zero_shot_scheme
    from studies.evaluate import evaluate as run_eval, parse_noise, study_models, table, write_csv

    if csv_path is not None and not Path(csv_path).expanduser().parent.is_dir():
        raise Fail(f"--csv {csv_path!r}: the folder {str(Path(csv_path).expanduser().parent)!r} does not exist")
    try:
        parsed = parse_noise(noise)[2]
        for m in methods:
            zero_shot_scheme(m, parsed)
    except ValueError as e:
        raise Fail(str(e)) from None
    models = {}
    if name is not None:
        sdir = _existing_study(name, storage)
        try:
            models = study_models(sdir, cell)
        except ValueError as e:
            raise Fail(str(e)) from None
        channels = channels or str(next(iter(models.values())).config.channels)
    elif cell is not None:
        raise Fail("--cell needs --study")
    root = str(Path(data_root).expanduser().resolve()) if data_root else None
    try:
        rows = run_eval(test_set, root, noise, int(channels) if channels else None, seed, models,
                        progress=lambda line: click.echo(line, err=True), methods=tuple(dict.fromkeys(methods)),
                        fit_steps=fit_steps)
    except ValueError as e:
        raise Fail(str(e)) from None
    click.echo(table(rows))
    if csv_path is not None:
        write_csv(rows, Path(csv_path).expanduser())
        click.echo(f"csv: {csv_path}")


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--workdir", default=None, help="Where the checkpoint and images go [default: a temporary directory].")
def trial(config, workdir):
    """Run one trial from a JSON config, without Ray (for debugging); print each report."""
    try:
        cfg = json.loads(Path(config).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise Fail(f"cannot read trial config {config!r}: {e}") from None
    if not isinstance(cfg, dict):
        raise Fail(f"{config}: a trial config is a JSON object of trial keys (e.g. {{\"noise\": \"gaussian\"}}), "
                   f"not a {type(cfg).__name__}")
    from denoise_core.tasks import run_trial, validate_config

    try:
        validate_config(cfg)
    except ValueError as e:
        raise Fail(f"{config}: {e}") from None
    out = run_trial(cfg, lambda m: click.echo(json.dumps({k: v for k, v in m.items() if k != "checkpoint"})),
                    workdir=workdir)
    click.echo(f"checkpoint: {out['checkpoint']}")
    for name, path in out["images"].items():  # what the task wrote for the report
        click.echo(f"{name}: {path}")


if __name__ == "__main__":
    main()
