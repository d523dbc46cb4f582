"""A study's files on disk, read and written without Ray: the runner writes them, `status`,
`report` and `denoise` read them, also while the study runs.

    <storage>/<study>/study.json       the spec and how each run went
                      optuna.db        one Optuna study per cell
                      records/         one JSON per trial, rewritten at every result
                      trials.parquet   one row per trial
                      best/<cell>/     each cell's best confirm checkpoint (model.pt and its images)
                      report.html
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

DEFAULT_STORAGE = os.environ.get("DENOISE_STUDY_STORAGE", "~/denoise-studies")

# a trial's status: pending, running or retrying while it runs, then one of FINISHED
COMPLETED, STOPPED, FAILED, DIVERGED = "completed", "stopped", "failed", "diverged"
FINISHED = (COMPLETED, STOPPED, FAILED, DIVERGED)  # stopped: early-stopped within its cell by the scheduler
SHOWN = (*FINISHED, "running")  # what `status` counts per cell


def is_uri(path: str) -> bool:
    return "://" in path


def study_dir(storage: str | None, name: str) -> Path:
    """The local directory that holds a study's files (for URI storage: the local mirror)."""
    storage = storage or DEFAULT_STORAGE
    if is_uri(storage):
        return Path(os.environ.get("DENOISE_STUDY_CACHE", "~/.cache/denoise-study")).expanduser() / name
    return Path(storage).expanduser().resolve() / name


def storage_problem(storage: str | None) -> str | None:
    """Why a local `--storage` cannot hold studies (a file in the way, no write permission), or None."""
    storage = storage or DEFAULT_STORAGE
    if is_uri(storage):
        return None
    path = Path(storage).expanduser().absolute()
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                return f"--storage {storage!r}: {str(p)!r} is a file, not a directory"
            if not os.access(p, os.W_OK | os.X_OK):
                return f"--storage {storage!r}: {str(p)!r} is not writable"
            return None
    return None


def clear_study(sdir: Path, keep: tuple[str, ...] = ("driver.lock",)) -> None:
    """--fresh: remove a study's files, but not the lock of the driver that is starting it over."""
    if not Path(sdir).is_dir():
        return
    for child in Path(sdir).iterdir():
        if child.name in keep:
            continue
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


def write_json(path: Path, data: dict) -> None:
    """Atomic: a reader never sees half a file, a kill never leaves one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, default=str))
    os.replace(tmp, path)


def read_info(sdir: Path) -> dict:
    return json.loads((Path(sdir) / "study.json").read_text())


def read_spec(sdir: Path):
    from studies.spec import StudySpec

    return StudySpec.model_validate(read_info(sdir)["spec"])


def read_records(sdir: Path) -> list[dict]:
    recs = []
    for p in sorted((Path(sdir) / "records").glob("*.json")):
        try:
            recs.append(json.loads(p.read_text()))
        except (json.JSONDecodeError, OSError):
            continue
    return recs


_BOOKKEEPING = {"step", "training_iteration", "timestamp", "time_this_iter_s", "time_total_s", "pid",
                "iterations_since_restore", "time_since_restore"}


def _row(r: dict, spec) -> dict:
    hist = r["history"]
    last = hist[-1] if hist else {}
    row = {"trial_id": r["trial_id"], "cell": r["cell"], "phase": r["phase"], "seed": r["seed"],
           "status": r["status"], "error": r["error"], "attempts": r["attempts"], "resumed": r.get("resumed", False),
           "start": r["start"], "end": r["end"],
           "duration_s": (r["end"] - r["start"]) if r["end"] and r["start"] else None,
           "cpus": r["resources"]["cpu"], "gpus": r["resources"]["gpu"], "node_id": r["node_id"],
           "evals": len(hist), "checkpoint": r["checkpoint"], "params": json.dumps(r["params"], sort_keys=True)}
    row.update({f"factor.{k}": v for k, v in r["factors"].items()})
    row.update({f"param.{k}": v for k, v in r["params"].items()})
    row.update({f"final.{k}": v for k, v in last.items() if k not in _BOOKKEEPING})
    if spec is not None and hist and spec.metric in last:
        values = [h[spec.metric] for h in hist if spec.metric in h]
        row[f"best.{spec.metric}"] = max(values) if spec.mode == "max" else min(values)
    row["final.step"] = last.get("step")
    return row


def trials_table(sdir: Path, spec=None):
    """One row per trial: cell, factors, phase, params, seed, status, final and best metrics, errors, times."""
    import pandas as pd

    return pd.DataFrame([_row(r, spec) for r in read_records(sdir)])


def write_trials_table(sdir: Path, spec):
    table = trials_table(sdir, spec)
    table.to_parquet(Path(sdir) / "trials.parquet", index=False)
    return table


def _safe(cell: str) -> str:
    return "".join(c if c.isalnum() or c in "=,._-" else "_" for c in cell)


def best_dir(sdir: Path, cell: str) -> Path:
    return Path(sdir) / "best" / _safe(cell)


def best_cells(sdir: Path) -> dict[str, dict]:
    """{cell: its best/<cell>/trial.json} for every cell with a stored best model."""
    out = {}
    for p in (Path(sdir) / "best").glob("*/trial.json"):
        info = json.loads(p.read_text())
        out[info["cell"]] = info
    return out


def copy_best_checkpoints(spec, table, sdir: Path) -> dict[str, Path]:
    """The best completed confirm run of every cell (by final metric) -> best/<cell>/ (model.pt, images)."""
    out = {}
    col = f"final.{spec.metric}"
    if table.empty or col not in table:
        return out
    done = table[(table.phase == "confirm") & (table.status == COMPLETED) & table.checkpoint.notna()]
    for cell, group in done.groupby("cell"):
        best = group.sort_values(col, ascending=spec.mode == "min").iloc[0]
        dest = best_dir(sdir, cell)
        if not _copy_checkpoint(best.checkpoint, dest):
            continue
        (dest / "trial.json").write_text(json.dumps({"cell": cell, "trial_id": best.trial_id,
                                                     spec.metric: float(best[col])}))
        out[cell] = dest
    return out


def _copy_checkpoint(src: str, dest: Path) -> bool:
    if is_uri(src):  # the resumable state stays behind: best/ holds what `denoise` and the report need
        shutil.rmtree(dest, ignore_errors=True)
        return download(src, dest, skip=("state.pt",))
    if Path(src).is_dir():
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("state.pt"))
        return True
    return False


# -- object storage: the driver's local mirror <-> <storage>/<study> ------------------------------
# With `--storage s3://...` (any URI pyarrow reads) the driver works in a local mirror and pushes the
# store beside Tune's own files; `status`, `report` and `denoise` on any machine pull it first.
SYNCED = ("study.json", "records", "optuna.db", "trials.parquet", "best", "report.html")


def study_uri(storage: str, name: str) -> str:
    return f"{storage.rstrip('/')}/{name}"


def _fs(uri: str):
    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri(uri)


def upload(sdir: Path, uri: str, names: tuple[str, ...] = SYNCED) -> None:
    """The local mirror's store files -> the object store."""
    import pyarrow.fs as pafs

    for name in names:
        if (Path(sdir) / name).exists():
            pafs.copy_files(str(Path(sdir) / name), f"{uri}/{name}")


def upload_file(path: Path, uri: str, relative: str) -> None:
    """One small file (a trial's record, rewritten at every result) -> the object store."""
    fs, base = _fs(uri)
    with fs.open_output_stream(f"{base}/{relative}") as out:
        out.write(Path(path).read_bytes())


def delete_file(uri: str, relative: str) -> None:
    fs, base = _fs(uri)
    try:
        fs.delete_file(f"{base}/{relative}")
    except FileNotFoundError:
        pass


def fetch(storage: str | None, name: str) -> Path:
    """The local directory of study `name`: for object storage, its store files pulled into the mirror
    first (so it works on any machine, while the study runs or after). Returns the mirror."""
    storage = storage or DEFAULT_STORAGE
    sdir = study_dir(storage, name)
    if not is_uri(storage):
        return sdir
    import pyarrow.fs as pafs

    for item in SYNCED:
        download(f"{study_uri(storage, name)}/{item}", sdir / item)
    return sdir


def download(uri: str, dest: Path, skip: tuple[str, ...] = ()) -> bool:
    """A file or a directory tree of the object store -> `dest`; False when there is nothing at `uri`."""
    import pyarrow.fs as pafs

    fs, path = _fs(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        files = [f for f in fs.get_file_info(pafs.FileSelector(path, recursive=True)) if f.type == pafs.FileType.File]
    elif info.type == pafs.FileType.File:
        files = [info]
    else:
        return False
    for f in files:
        if f.base_name in skip:
            continue
        target = Path(dest) / f.path[len(path) + 1:] if info.type == pafs.FileType.Directory else Path(dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        with fs.open_input_stream(f.path) as src:
            part = target.with_name(target.name + ".part")
            part.write_bytes(src.read())
            os.replace(part, target)
    return True
