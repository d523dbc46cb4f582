"""A study's files, read and written without Ray: the runner writes them; `status`, `report` and
`denoise` read them, also while the study runs.

    <storage>/<study>/study.json       the spec and how each run went
                      optuna.journal   one Optuna study per cell (Optuna's JournalStorage; optuna.db before 2026-12)
                      records/         one JSON per trial, rewritten at every result
                      trials.parquet   one row per trial
                      baselines/       the classical denoisers' scores on the same test images, and images
                      best/<cell>/     each cell's best confirm checkpoint (model.pt and its images)
                      report.html
                      ray/             Ray Tune's own state while the study runs (removed when it completes)

`StudyResults.load(sdir)` reads all of it once, for the report.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from denoise_core.results import Score
from studies.documents import COMPLETED, DIVERGED, FAILED, FINISHED, STOPPED, BaselineScores, BestTrial, LookPlan, \
    StudyInfo, TrialRecord, write_atomic

__all__ = ["COMPLETED", "DIVERGED", "FAILED", "FINISHED", "STOPPED", "TrialRecord", "StudyInfo", "write_atomic"]
SHOWN = (*FINISHED, "running", "interrupted")  # what `status` counts per cell
RAY_DIR = "ray"  # Tune's experiment directory inside a study


def resolve_storage(storage: str | None) -> str:
    """--storage, else $DENOISE_STUDY_STORAGE, else ~/denoise-studies."""
    return storage or os.environ.get("DENOISE_STUDY_STORAGE") or "~/denoise-studies"


def is_uri(path: str | None) -> bool:
    """An object-store location (s3://, gs:// ...), as opposed to a local or NFS path."""
    return path is not None and "://" in path


class UnsafeStudyPath(ValueError):
    """A study name or folder that would put reads, writes or deletes outside `<storage>/<name>`."""


def study_dir(storage: str | None, name: str) -> Path:
    """The local directory that holds a study's files (for URI storage: the local mirror): always a
    direct child of the storage root, named `name`; anything else (`.`, `..`, a separator, a symlink
    out of the root) is refused, since a `--fresh` run deletes this folder's contents."""
    from studies.spec import check_study_name

    check_study_name(name)
    storage = resolve_storage(storage)
    if is_uri(storage):
        root = Path(os.environ.get("DENOISE_STUDY_CACHE", "~/.cache/denoise-study")).expanduser()
    else:
        root = Path(storage).expanduser().absolute()
    sdir = root / name
    if sdir.is_symlink() or sdir.resolve().parent != root.resolve():
        raise UnsafeStudyPath(f"study folder {str(sdir)!r} does not resolve to a folder inside {str(root)!r}")
    return sdir


def storage_problem(storage: str | None) -> str | None:
    """Why a local `--storage` cannot hold studies (a file in the way, no write permission), or None."""
    storage = resolve_storage(storage)
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


def is_study_folder(sdir: Path) -> bool:
    """The folder holds a study's own marker: a study.json whose spec names this very folder."""
    try:
        return read_info(sdir).name == Path(sdir).name
    except (OSError, ValueError):
        return False


def clear_check(sdir: Path, keep: tuple[str, ...] = ("driver.lock",)) -> None:
    """Raise UnsafeStudyPath when `--fresh` must not clear `sdir`: it holds files but is not a study."""
    sdir = Path(sdir)
    if sdir.is_dir() and not is_study_folder(sdir) and any(c.name not in keep for c in sdir.iterdir()):
        raise UnsafeStudyPath(f"--fresh: {str(sdir)!r} holds files but is not a study folder (no study.json of "
                              f"study {sdir.name!r}); nothing was deleted: move them, or choose another name")


def clear_study(sdir: Path, keep: tuple[str, ...] = ("driver.lock",)) -> None:
    """--fresh: remove a study's files, but not the lock of the driver that is starting it over. Only a
    folder that is a study (`is_study_folder`) is cleared; a folder that holds anything else is refused
    with UnsafeStudyPath, and nothing in it is touched."""
    sdir = Path(sdir)
    clear_check(sdir, keep)
    if not sdir.is_dir() or not is_study_folder(sdir):
        return
    for child in sdir.iterdir():
        if child.name in keep:
            continue
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


LOOKS = "looks.json"


def read_info(sdir: Path) -> StudyInfo:
    """study.json, its plan as the looks of adaptive confirmation have grown it (looks.json)."""
    info = StudyInfo.read(Path(sdir) / "study.json")
    info.planned = planned_now(sdir, info.planned)
    return info


def read_looks(sdir: Path) -> LookPlan | None:
    return LookPlan.read_or_none(Path(sdir) / LOOKS)


def planned_now(sdir: Path, planned: int) -> int:
    """The trials planned: `planned` as the run started, or more where adaptive confirmation's looks have added waves."""
    plan = read_looks(sdir)
    return max(planned, plan.planned) if plan is not None else planned


def read_spec(sdir: Path):
    from studies.spec import StudySpec

    return StudySpec.model_validate(read_info(sdir).spec)


def read_records(sdir: Path) -> list[TrialRecord]:
    """Every trial's record, by trial id; a file half-written by another version, or unreadable, is skipped."""
    recs = (TrialRecord.read_or_none(p) for p in sorted((Path(sdir) / "records").glob("*.json")))
    return [r for r in recs if r is not None]


def read_baselines(sdir: Path) -> BaselineScores:
    p = Path(sdir) / "baselines" / "scores.json"
    return BaselineScores.read(p) if p.exists() else BaselineScores()


def failed_cells(records: list[TrialRecord], cells: list[str]) -> list[str]:
    """The cells that cannot be compared: every trial failed, or no confirm run completed."""
    bad = []
    for cell in cells:
        mine = [r for r in records if r.cell == cell]
        confirmed = any(r.phase == "confirm" and r.status == COMPLETED for r in mine)
        if not confirmed or all(r.status == FAILED for r in mine):
            bad.append(cell)
    return bad


def study_failure(sdir: Path) -> str | None:
    """Why a study whose trials have all finished failed (one line), or None when every cell has a
    completed confirm run."""
    from studies.cells import cell_label, parse_cell

    info, records = read_info(sdir), read_records(sdir)
    bad = failed_cells(records, info.cells)
    if not bad:
        return None
    errors = [r.error for r in records if r.cell in bad and r.error]
    first = f"; first error: {errors[0]}" if errors else ""
    return (f"{len(bad)} of {len(info.cells)} cells {'has' if len(bad) == 1 else 'have'} no completed confirm run "
            f"({', '.join(cell_label(parse_cell(c)) for c in bad[:3])}{', ...' if len(bad) > 3 else ''}){first}")


def optuna_study_name(study: str, cell: str) -> str:
    """The Optuna study of one cell (one per cell, in the study's Optuna storage)."""
    return f"{study}:{cell}"


JOURNAL = "journal:"  # an Optuna storage URL of ours: journal:PATH, an append-only journal file
OPTUNA_FILE = "optuna.journal"  # a new study's Optuna storage, in its folder (one stored before 2026-12: optuna.db)


def default_optuna_storage(sdir: Path) -> str:
    """The Optuna storage a run of this study uses unless --optuna-storage says otherwise: the one it was started
    with (a study from before the journal keeps its optuna.db), else a journal file in its folder."""
    p = Path(sdir) / "study.json"
    stored = StudyInfo.read(p).optuna_storage if p.exists() else None
    return stored or f"{JOURNAL}{Path(sdir) / OPTUNA_FILE}"


def open_optuna_storage(url: str):
    """A study's Optuna storage from its URL. `journal:PATH` is Optuna's JournalStorage on a file: every change one
    appended line (created, asked, told, an intermediate value), read back by replaying them, so a resumed driver
    sees exactly what was written and a change costs no database round trip (the driver's bookkeeping at 1,000
    trials: 26.6 ms a trial on SQLite through SQLAlchemy, 8.4 ms on the journal; benchmarks/README.md). Any RDB URL
    (sqlite:///..., postgresql://...) opens as Optuna opens it."""
    import optuna

    if url.startswith(JOURNAL):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url[len(JOURNAL):]))
    return optuna.storages.get_storage(url)


# -- the trials table: one row per trial -------------------------------------------------------
_BOOKKEEPING = {"step", "training_iteration", "timestamp", "time_this_iter_s", "time_total_s", "pid",
                "iterations_since_restore", "time_since_restore"}


def column(score: Score) -> str:
    """The trials table's column of a score, as the trial's last evaluation reported it."""
    return key_column(score.key)


def key_column(key: str) -> str:
    """The trials table's column of a reported key (a `Score`'s key, or a measurement such as images_per_s): the
    key itself under `final.`, never parsed."""
    return f"final.{key}"


def factor_column(factor: str) -> str:
    return f"factor.{factor}"


def _row(r: TrialRecord, spec) -> dict:
    last = r.last
    row = {"trial_id": r.trial_id, "cell": r.cell, "phase": r.phase, "seed": r.seed, "status": r.status,
           "error": r.error, "attempts": r.attempts, "resumed": r.resumed, "start": r.start, "end": r.end,
           "duration_s": (r.end - r.start) if r.end and r.start else None,
           "cpus": r.resources.cpu, "gpus": r.resources.gpu, "node_id": r.node_id,
           "evals": len(r.history), "checkpoint": r.checkpoint, "params": json.dumps(r.params, sort_keys=True)}
    row.update({factor_column(k): v for k, v in r.factors.items()})
    row.update({f"param.{k}": v for k, v in r.params.items()})
    row.update({key_column(k): v for k, v in last.items() if k not in _BOOKKEEPING})
    if spec is not None and spec.metric in last:
        values = [v for _, v in r.curve(spec.metric)]
        if values:
            row[f"best.{spec.metric}"] = max(values) if spec.mode == "max" else min(values)
    row["final.step"] = last.get("step")
    return row


def trials_table(sdir: Path, spec=None, records: list[TrialRecord] | None = None):
    """One row per trial: cell, factors, phase, params, seed, status, final and best metrics, errors, times."""
    import pandas as pd

    records = read_records(sdir) if records is None else records
    return pd.DataFrame([_row(r if isinstance(r, TrialRecord) else TrialRecord.model_validate(r), spec) for r in records])


def write_trials_table(sdir: Path, spec):
    table = trials_table(sdir, spec)
    table.to_parquet(Path(sdir) / "trials.parquet", index=False)
    return table


# -- best checkpoints ---------------------------------------------------------------------------
def best_dir(sdir: Path, cell: str) -> Path:
    """best/<cell>: the cell's key where it is a safe file name, else a safe version plus a hash of the key
    (two labels that differ only in unsafe characters never share a directory)."""
    safe = "".join(c if c.isalnum() or c in "=,._-" else "_" for c in cell)
    if safe != cell or safe.startswith("."):
        safe = f"{safe[:80]}-{hashlib.sha1(cell.encode()).hexdigest()[:10]}"
    return Path(sdir) / "best" / safe


def best_cells(sdir: Path) -> dict[str, BestTrial]:
    """{cell: its best/<cell>/trial.json} for every cell with a stored best model."""
    found = (BestTrial.read_or_none(p) for p in (Path(sdir) / "best").glob("*/trial.json"))
    return {best.cell: best for best in found if best is not None}


# -- everything the report reads, loaded once ----------------------------------------------------
@dataclass
class StudyResults:
    """A study's stored results, read once: its spec and runs, every trial, the confirm runs' scores
    per test image, each cell's best model and images, and the classical baselines."""

    sdir: Path
    info: StudyInfo
    spec: object  # studies.spec.StudySpec
    records: list[TrialRecord]
    table: object  # pandas.DataFrame, one row per trial (see trials_table)
    best: dict[str, BestTrial] = field(default_factory=dict)  # cell -> best/<cell>/trial.json
    baselines: BaselineScores = field(default_factory=BaselineScores)  # baselines/scores.json

    def __post_init__(self):  # documents given as plain data (a test's, say) are validated here, once
        self.info = StudyInfo.model_validate(self.info) if isinstance(self.info, dict) else self.info
        self.records = [TrialRecord.model_validate(r) if isinstance(r, dict) else r for r in self.records]

    @classmethod
    def load(cls, sdir: Path) -> "StudyResults":
        from studies.spec import StudySpec

        sdir = Path(sdir)
        info = read_info(sdir)
        spec = StudySpec.model_validate(info.spec)
        records = read_records(sdir)
        return cls(sdir, info, spec, records, trials_table(sdir, spec, records), best_cells(sdir), read_baselines(sdir))

    @property
    def score(self) -> Score:
        """What the findings compare: the study's metric on the held-out test split, with each confirm
        run's best validation weights; validation for a study stored before test scores existed."""
        test = Score(self.spec.metric, "test")
        has_test = column(test) in self.table and self.table[column(test)].notna().any() if len(self.table) else False
        return test if has_test else Score(self.spec.metric)

    def confirm_runs(self):
        """Completed confirm runs that have a score (rows of `table`)."""
        t, col = self.table, column(self.score)
        if t.empty or col not in t:
            return t.iloc[0:0] if not t.empty else t
        return t[(t.phase == "confirm") & (t.status == COMPLETED) & t[col].notna()]

    def diverged_confirms(self) -> dict[str, int]:
        """Diverged confirm runs per cell: they count against their cell (it cannot win a comparison)."""
        t = self.table
        if t.empty:
            return {}
        return t[(t.phase == "confirm") & (t.status == DIVERGED)].groupby("cell").size().to_dict()

    def per_image(self, score: Score | None = None):
        """Long table of the completed confirm runs' per-image test scores: cell, factor.*, trial_id, seed,
        image (its index in the test split), source (the photograph or file it was cut from, where the
        trial recorded one), value. Empty for a study stored before per-image scores."""
        import pandas as pd

        score = score or self.score
        done = set(self.confirm_runs().trial_id) if len(self.table) else set()
        rows = []
        for r in self.records:
            values = r.per_image_of(score.key)
            if r.trial_id not in done or not values:
                continue
            base = {"cell": r.cell, "trial_id": r.trial_id, "seed": r.seed,
                    **{factor_column(k): v for k, v in r.factors.items()}}
            sources = r.per_image_sources() or [None] * len(values)
            rows += [base | {"image": i, "source": src, "value": v} for i, (v, src) in enumerate(zip(values, sources))]
        return pd.DataFrame(rows)

    def optuna_studies(self) -> list:
        """Each cell's Optuna study (those the storage holds), in the spec's cell order."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        out = []
        storage = open_optuna_storage(self.info.optuna_storage)
        for cell in self.info.cells:
            try:
                out.append(optuna.load_study(study_name=optuna_study_name(self.spec.name, cell), storage=storage))
            except KeyError:
                continue
        return out

    def best_file(self, cell: str, name: str) -> Path | None:
        """A file of a cell's best checkpoint (model.pt, image_output.png, images.json ...), if stored."""
        p = best_dir(self.sdir, cell) / name
        return p if p.exists() else None
