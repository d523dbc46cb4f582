"""The driver's Tune callback that keeps a record per trial while a study runs.

The records are small JSON files (`records/<trial_id>.json`, see `studies.store`) rewritten at
every result, so `status` and `report` read a study while it runs, without Ray.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from ray.tune import Callback

from studies.store import COMPLETED, DIVERGED, FAILED, FINISHED, STOPPED, delete_file, read_records, upload_file, write_json

class StudyRecorder(Callback):
    """Writes a record per trial and prints one line per finished trial (unless quiet)."""

    def __init__(self, study_dir: Path, planned: int, n_evals: int, cells: list[str], per_cell: int, quiet: bool,
                 remote: str | None = None):
        self.dir = Path(study_dir) / "records"
        self.planned, self.n_evals, self.cells, self.per_cell, self.quiet = planned, n_evals, cells, per_cell, quiet
        self.remote = remote  # object storage: every record is pushed there too, so `status` works from anywhere
        self._pruned = False

    def _path(self, trial) -> Path:
        return self.dir / f"{trial.trial_id}.json"

    def _load(self, trial) -> dict:
        p = self._path(trial)
        if p.exists():
            return json.loads(p.read_text())
        meta = trial.config.get("_study", {})
        return {"trial_id": trial.trial_id, "cell": meta.get("cell"), "phase": meta.get("phase"),
                "factors": meta.get("factors", {}), "params": meta.get("params", {}),
                "seed": trial.config.get("seed"), "config": {k: v for k, v in trial.config.items() if k != "_study"},
                "status": "pending", "history": [], "error": None, "start": None, "end": None,
                "checkpoint": None, "node_id": None, "attempts": 0,
                "resources": {"cpu": trial.config.get("_cpus", 1), "gpu": trial.config.get("_gpus", 0)}}

    def _save(self, rec: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"{rec['trial_id']}.json"
        write_json(path, rec)
        if self.remote:
            upload_file(path, self.remote, f"records/{path.name}")

    def on_step_begin(self, iteration, trials, **info):
        # after a driver restart, records of trials that Tune's restored state does not know were
        # created after its last checkpoint; the searcher asks their slots again, so drop them
        if self._pruned:
            return
        self._pruned = True
        known = {t.trial_id for t in trials}
        for p in self.dir.glob("*.json") if self.dir.exists() else []:
            if p.stem not in known and json.loads(p.read_text()).get("status") not in FINISHED:
                p.unlink()
                if self.remote:
                    delete_file(self.remote, f"records/{p.name}")

    def on_trial_start(self, iteration, trials, trial, **info):
        rec = self._load(trial)
        rec["status"], rec["attempts"] = "running", rec["attempts"] + 1
        rec["start"] = rec["start"] or time.time()
        self._save(rec)

    def on_trial_recover(self, iteration, trials, trial, **info):
        rec = self._load(trial)
        rec["status"] = "retrying"
        rec["error"] = _first_line(trial)
        self._save(rec)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        rec = self._load(trial)
        row = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        row["step"] = result.get("step")
        # a resumed trial repeats no step: keep history strictly increasing
        rec["history"] = [h for h in rec["history"] if h.get("step", 0) < (row["step"] or 0)] + [row]
        rec["node_id"] = result.get("node_id", rec["node_id"])
        rec["resumed"] = bool(result.get("resumed")) or rec.get("resumed", False)
        rec["status"] = "running"
        if result.get("diverged"):
            rec["diverged"] = {"step": result.get("diverged_step"), "reason": result.get("diverged_reason")}
        self._save(rec)

    def _finish(self, trials, trial, status: str):
        rec = self._load(trial)
        rec["status"], rec["end"] = status, time.time()
        if status == FAILED:
            rec["error"] = _first_line(trial)
        elif status == DIVERGED:
            rec["error"] = f"diverged at step {rec['diverged']['step']}: {rec['diverged']['reason']}"
        if trial.checkpoint is not None:
            rec["checkpoint"] = checkpoint_uri(trial.checkpoint)
        self._save(rec)
        if not self.quiet:
            self._progress(rec)

    def on_trial_complete(self, iteration, trials, trial, **info):
        rec = self._load(trial)
        if rec.get("diverged"):
            status = DIVERGED  # a result: the trial stopped itself, and is never ranked as completed
        else:
            status = COMPLETED if len(rec["history"]) >= self.n_evals else STOPPED
        self._finish(trials, trial, status)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trials, trial, FAILED)

    def _progress(self, rec: dict) -> None:
        recs = [r for r in read_records(self.dir.parent) if r["status"] in FINISHED]
        in_cell = sum(r["cell"] == rec["cell"] for r in recs)
        metric = rec["history"][-1] if rec["history"] else {}
        shown = ", ".join(f"{k} {metric[k]:.3f}" for k in ("psnr", "bits_per_dim") if k in metric)
        what = {COMPLETED: shown, FAILED: f"failed: {rec['error']}", DIVERGED: rec["error"]}.get(rec["status"],
                                                                                                 rec["status"])
        print(f"[{len(recs)}/{self.planned}] {rec['cell']} {rec['phase']}: {what} "
              f"(cell {in_cell}/{self.per_cell})", flush=True)


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
