"""The driver's Tune callbacks: a record per trial while a study runs, and what the user sees.

The records are small JSON files (`records/<trial_id>.json`, see `studies.store`) rewritten at
every result, so `status` and `report` read a study while it runs, without Ray. Progress is one
line per finished trial, and one summary line every SUMMARY_S seconds.

Tune pickles its callbacks with the experiment and restores them on resume: they hold plain data,
and whatever belongs to one run starts in `setup`.
"""
from __future__ import annotations

import time
from pathlib import Path

from ray.tune import Callback

from denoise_core.results import PER_IMAGE, RESTORED, Score
from studies.cells import CONFIRM_SEED_BASE, TrialMeta, cell_label, parse_cell
from studies.documents import COMPLETED, DIVERGED, FAILED, STOPPED, Divergence, Resources, TrialRecord
from studies.store import planned_now, read_records

SUMMARY_S = 30.0


class StudyRecorder(Callback):
    """Writes a record per trial and prints one line per finished trial (unless quiet)."""

    n_tune: int | None = None  # a recorder pickled before it knew: trials are labelled in finishing order

    def __init__(self, study_dir: Path, planned: int, cells: list[str], per_cell: int, quiet: bool,
                 metric: str = "psnr", remote: str | None = None, errors_log: str | None = None,
                 n_tune: int | None = None):
        self.dir = Path(study_dir) / "records"
        self.planned, self.cells, self.per_cell, self.quiet, self.n_tune = planned, cells, per_cell, quiet, n_tune
        self.metric = metric
        self.remote = remote  # object storage: every record is pushed there too, so `status` works from anywhere
        self.errors_log = errors_log  # where a failed trial's traceback went (None: to the terminal, --verbose)
        self._pruned = False

    def setup(self, **info):
        self._pruned = False
        self._done: dict[str, str] | None = None  # finished trial id -> cell, read from the records once per run
        self._live: dict[str, TrialRecord] = {}  # running trials' records as last written: never read back per result
        self._steps_by_cell: dict[str, int] = {}  # each cell's planned training steps, validated once

    def __getstate__(self):
        state = dict(self.__dict__)  # pickled with Tune's experiment: the run's caches start afresh in setup()
        for key in ("_done", "_live", "_steps_by_cell"):
            state.pop(key, None)
        return state

    def _finished(self) -> dict[str, str]:
        if getattr(self, "_done", None) is None:
            self._done = {r.trial_id: r.cell for r in read_records(self.dir.parent) if r.finished}
        return self._done

    def _planned(self, config: dict) -> int:
        """A trial's planned training steps, validated once per cell (every trial of a cell plans the same)."""
        cache = getattr(self, "_steps_by_cell", None)
        if cache is None:
            return _steps(config)
        cell = TrialMeta.of(config).cell
        if cell not in cache:
            cache[cell] = _steps(config)
        return cache[cell]

    def _path(self, trial) -> Path:
        return self.dir / f"{trial.trial_id}.json"

    def _load(self, trial) -> TrialRecord:
        """The trial's record: as this driver last wrote it, else from its file (a trial of an earlier driver)."""
        live = getattr(self, "_live", None)
        if live is not None and trial.trial_id in live:
            return live[trial.trial_id]
        p = self._path(trial)
        if p.exists():
            return TrialRecord.read(p)
        meta = TrialMeta.of(trial.config)
        return TrialRecord(trial_id=trial.trial_id, cell=meta.cell, phase=meta.phase, factors=meta.factors,
                           params=meta.params, seed=trial.config.get("seed"), config=TrialMeta.strip(trial.config),
                           resources=Resources(cpu=meta.cpus, gpu=meta.gpus))

    def _save(self, rec: TrialRecord) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = rec.write(self.dir / f"{rec.trial_id}.json")
        if getattr(self, "_live", None) is not None:
            if rec.finished:
                self._live.pop(rec.trial_id, None)  # done: its file holds it, memory stays bounded
            else:
                self._live[rec.trial_id] = rec
        if self.remote:
            from studies.remote import upload_file

            upload_file(path, self.remote, f"records/{path.name}")

    def on_step_begin(self, iteration, trials, **info):
        # after a driver restart, records of trials that Tune's restored state does not know were
        # created after its last checkpoint; the searcher asks their slots again, so drop them
        if self._pruned:
            return
        self._pruned = True
        known = {t.trial_id for t in trials}
        for p in self.dir.glob("*.json") if self.dir.exists() else []:
            rec = TrialRecord.read_or_none(p)
            if p.stem not in known and (rec is None or not rec.finished):
                p.unlink()
                if self.remote:
                    from studies.remote import delete_file

                    delete_file(self.remote, f"records/{p.name}")

    def on_trial_start(self, iteration, trials, trial, **info):
        rec = self._load(trial)
        rec.status, rec.attempts = "running", rec.attempts + 1
        rec.start = rec.start or time.time()
        self._save(rec)

    def on_trial_recover(self, iteration, trials, trial, **info):
        rec = self._load(trial)
        rec.status, rec.error = "retrying", _first_line(trial)
        self._save(rec)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        rec = self._load(trial)
        row = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        row["step"] = result.get("step")
        # a resumed trial repeats no step: keep history strictly increasing; its first report brings the evaluations
        # before its checkpoint, which a record written by a killed driver may lack
        earlier = {h["step"]: h for h in result.get(RESTORED) or [] if h.get("step") is not None}
        earlier |= {h["step"]: h for h in rec.history if h.get("step") is not None}
        rec.history = [earlier[s] for s in sorted(earlier) if s < (row["step"] or 0)] + [row]
        if result.get(PER_IMAGE):
            rec.per_image = result[PER_IMAGE]
        rec.node_id = result.get("node_id", rec.node_id)
        rec.resumed = bool(result.get("resumed")) or rec.resumed
        rec.status = "running"
        if result.get("diverged"):
            rec.diverged = Divergence(step=result.get("diverged_step"), reason=result.get("diverged_reason"))
        self._save(rec)

    def _finish(self, trials, trial, status: str):
        rec = self._load(trial)
        self._finished()[rec.trial_id] = rec.cell
        rec.status, rec.end = status, time.time()
        if status == FAILED:
            rec.error = _first_line(trial)
        elif status == DIVERGED:
            rec.error = f"diverged at step {rec.diverged.step}: {rec.diverged.reason}"
        if trial.checkpoint is not None:
            rec.checkpoint = checkpoint_uri(trial.checkpoint)
        self._save(rec)
        if not self.quiet:
            print(self.line(rec), flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        rec = self._load(trial)
        if rec.diverged:
            status = DIVERGED  # a result: the trial stopped itself, and is never ranked as completed
        else:  # it reached its last step, or early stopping ended it before (whatever its record holds)
            status = COMPLETED if (trial.last_result or {}).get("step", 0) >= self._planned(trial.config) else STOPPED
        self._finish(trials, trial, status)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trials, trial, FAILED)

    def line(self, rec: TrialRecord) -> str:
        """'[12/75] trial 3/5 of cell 2/15 (noise=poisson, loss=l2), confirm: val psnr 27.91, test psnr 28.10'
        (counted in memory: a line costs the same at 10,000 trials as at 100). A trial is named by its index in its
        cell (tuning trials first, then confirm runs), so two identical runs name the same trial alike, whichever
        finished first."""
        done = self._finished()
        in_cell = sum(cell == rec.cell for cell in done.values())
        if self.n_tune is not None and rec.seed is not None:
            in_cell = rec.seed + 1 if rec.phase == "tune" else self.n_tune + rec.seed - CONFIRM_SEED_BASE + 1
        cell_no = self.cells.index(rec.cell) + 1 if rec.cell in self.cells else 0
        last = rec.last
        scores = [f"{s.split} {s.metric} {last[s.key]:.3f}" for s in (Score(self.metric), Score(self.metric, "test"))
                  if isinstance(last.get(s.key), (int, float))]
        where = f" (traceback in {self.errors_log})" if getattr(self, "errors_log", None) else ""
        what = {COMPLETED: ", ".join(scores), FAILED: f"failed: {rec.error}{where}", DIVERGED: rec.error}.get(
            rec.status, f"{rec.status} early ({', '.join(scores)})" if scores else rec.status)
        planned = planned_now(self.dir.parent, self.planned)
        return (f"[{len(done)}/{planned}] trial {in_cell}/{self.per_cell} of cell {cell_no}/{len(self.cells)} "
                f"({cell_label(parse_cell(rec.cell))}), {rec.phase}: {what}")


class Progress(Callback):
    """Every SUMMARY_S seconds one line: trials finished, running and to go, time so far and an estimate left."""

    resources = (1.0, 0.0)  # a callback pickled before it knew a trial's share

    def __init__(self, study_dir: Path, planned: int, quiet: bool = False, resources: tuple = (1.0, 0.0)):
        self.dir, self.planned, self.quiet = Path(study_dir), planned, quiet
        self.resources = resources  # (CPUs, GPUs) a trial holds: the cluster's slots are its resources over these

    def setup(self, **info):
        self._start = self._last = time.time()
        self._began: dict[str, float] = {}
        self._spans: list[float] = []  # trials that started and finished in this run, in seconds

    def on_trial_start(self, iteration, trials, trial, **info):
        self._began[trial.trial_id] = time.time()

    def on_trial_complete(self, iteration, trials, trial, **info):
        if trial.trial_id in self._began:
            self._spans.append(time.time() - self._began.pop(trial.trial_id))

    on_trial_error = on_trial_complete

    def on_step_end(self, iteration, trials, **info):
        now = time.time()
        if self.quiet or now - self._last < SUMMARY_S:
            return
        self._last = now
        print(self.summary(trials, now), flush=True)

    def summary(self, trials, now: float) -> str:
        """Time left: the mean time of the trials finished in this run, times the trials to go, over those
        running at once (elapsed / finished would count the start-up, Ray's and the first workers', again).
        From Tune's trials and this run's own spans, in memory: no record is read."""
        done = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
        running = sum(t.status == "RUNNING" for t in trials)
        planned = planned_now(self.dir, self.planned)
        left = planned - done
        spans = self._spans
        eta = (f"about {_minutes(sum(spans) / len(spans) * left / max(running, 1))} left" if spans and left
               else "estimating time left")
        return (f"[{_minutes(now - self._start)}] {done}/{planned} trials finished, {running} running "
                f"(the cluster holds {_slots(*self.resources)} at once), {left} to go; {eta}")


def _slots(cpus: float, gpus: float) -> str:
    try:
        from studies.packing import slots

        return str(slots(cpus, gpus))
    except Exception:  # noqa: BLE001 - no Ray connection (a unit test): the line goes on without it
        return "?"


def _steps(config: dict) -> int:
    """A trial's planned training steps (its config's, or the task's default)."""
    from denoise_core.tasks import validate_config

    return validate_config(TrialMeta.strip(config)).steps


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def checkpoint_uri(checkpoint) -> str:
    """A local path as it is; on object storage a URI (Tune keeps the bucket path without its scheme)."""
    kind = checkpoint.filesystem.type_name if checkpoint.filesystem is not None else "local"
    return checkpoint.path if kind == "local" else f"{ {'gcs': 'gs'}.get(kind, kind)}://{checkpoint.path}"


def _first_line(trial) -> str:
    # Tune writes the error to the driver's staging copy first and syncs it to storage later, so
    # trial.get_error() (which reads storage) can miss the latest failure; read the local file first
    err = None
    try:
        if trial.error_file and Path(trial.error_file).exists():
            err = Path(trial.error_file).read_text()
        err = err or trial.get_error()
    except Exception:  # noqa: BLE001 - any failure to read the error must not break the study
        pass
    text = str(err) if err else "unknown error"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # Ray wraps the trial's exception; the last line names it and its message
    return (lines[-1] if lines else text)[:300]
