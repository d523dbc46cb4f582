"""Early stopping that compares a trial only with trials of its own cell, and decides the same way
however often the driver is killed and resumed.

A hard noise is not "worse" than an easy one, so one global rule would starve the hard cells: a
tuning trial is compared only with the tuning trials of its own cell. Within a cell they run in waves
of q (`studies.searcher.CellSearcher`), and trial k is compared with the trials of the waves before its
own only: all finished when it starts, whatever its own wave's trials have reached meanwhile.

The values compared come from an in-memory index (cell -> tuning index -> step -> value, and whether the
trial ran to a result), kept from the results as they come: a decision reads no file, so it costs the
same at 10,000 trials as at 100. The index is filled from the study's records once, when Tune adds the
first trial of a run: after a restart, before any trial has run again.

The rule is successive halving at rungs of `grace * reduction_factor ** i` evaluations (below the
last): at a rung, the trial's value joins the values the earlier trials reached at that same
evaluation, and the trial stops when it is below their (1 - 1/reduction_factor) quantile, i.e.
outside the best 1/reduction_factor (ASHA's cutoff, Li et al. 2020, eq. in Alg. 2). Because the
decision is a function of the stored records and of the trial's own (deterministic) result, a
trial replayed after a SIGKILL, or re-asked with the same parameters and seed, is stopped, or not,
exactly as in an uninterrupted run. Asynchronous ASHA depends on which results arrive first and on
Tune's `training_iteration` (which a resumed trial counts differently); this does not. Confirm
trials are never stopped.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from studies.cells import TrialMeta
from studies.store import COMPLETED, STOPPED, read_records

OK, BAD = "ok", "bad"  # a finished tuning trial ran to a result (completed or stopped early), or failed or diverged


def rungs(n_evals: int, grace: int, reduction_factor: float) -> list[int]:
    """The evaluation counts at which trials are compared: grace, grace*rf, ... below n_evals.

    >>> rungs(10, 2, 3)
    [2, 6]
    >>> rungs(2, 2, 3)
    []
    """
    out, r = [], max(1, grace)
    while r < n_evals:
        out.append(int(r))
        r = math.ceil(r * reduction_factor)
    return out


def stops(own: float, earlier: list[float], sign: int, reduction_factor: float) -> bool:
    """Whether a trial whose value at a rung is `own` stops, given the values earlier trials of its cell
    reached at that rung (sign +1: higher is better). Nothing to compare with: it goes on.

    >>> stops(20.0, [25.0], +1, 3), stops(25.0, [20.0], +1, 3), stops(20.0, [], +1, 3)
    (True, False, False)
    """
    if not earlier:
        return False
    values = sign * np.array([*earlier, own], dtype=float)
    cutoff = np.nanpercentile(values, (1 - 1 / reduction_factor) * 100)
    return bool(sign * own < cutoff)


class CellHalving(FIFOScheduler):
    q, _index = 1, None  # a scheduler pickled before waves has neither

    def __init__(self, records_dir: Path, metric: str, mode: str, max_t: int, grace_period: int,
                 reduction_factor: float = 3, q: int = 1):
        super().__init__()
        self.records_dir = str(records_dir)  # the study folder: plain data, pickled with the experiment
        self._metric, self.sign = metric, (1 if mode == "max" else -1)
        self.rungs = rungs(max_t, grace_period, reduction_factor)
        self.reduction_factor = reduction_factor
        self.q = q
        self._index: dict[str, dict[int, dict]] | None = None  # cell -> index -> {"values": {step: v}, "end": OK|BAD}

    def __getstate__(self):
        return {**self.__dict__, "_index": None}  # refilled from the records after a restore

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True  # fixed by the study spec

    # -- the index ----------------------------------------------------------------------------------
    def _entry(self, cell: str, index: int) -> dict:
        return self.index().setdefault(cell, {}).setdefault(index, {"values": {}, "end": None})

    def index(self) -> dict:
        """The cells' tuning results; read from the records once per run (they hold what earlier runs saw)."""
        if self._index is None:
            self._index = {}
            for rec in read_records(Path(self.records_dir)):
                if rec.phase != "tune" or rec.seed is None:
                    continue
                entry = self._entry(rec.cell, rec.seed)
                entry["values"] = {s: v for s, v in rec.curve(self._metric)}
                if rec.finished:
                    entry["end"] = OK if rec.status in (COMPLETED, STOPPED) else BAD
        return self._index

    def on_trial_add(self, tune_controller, trial):
        self.index()  # before any trial of this run reports: the records still say how the last run left them

    def _record(self, trial, end: str | None = None, result: dict | None = None) -> None:
        meta = TrialMeta.of(trial.config)
        if meta.phase != "tune":
            return
        entry = self._entry(meta.cell, trial.config.get("seed"))
        if result and result.get(self._metric) is not None and result.get("step") is not None \
                and not result.get("diverged"):
            entry["values"][result["step"]] = float(result[self._metric])
        if end is not None and entry["end"] is None:  # the first end stands: a trial run again ends the same way
            entry["end"] = end

    def on_trial_complete(self, tune_controller, trial, result):
        self._record(trial, BAD if (result or {}).get("diverged") else OK, result)

    def on_trial_error(self, tune_controller, trial):
        self._record(trial, BAD)

    def earlier_values(self, cell: str, index: int, step: int) -> list[float]:
        """The metric at `step` of every tuning trial of `cell` in the waves before trial `index`'s that ran to a
        result (completed, or stopped early): all finished before trial `index` started."""
        from studies.searcher import wave_start

        trials = self.index().get(cell, {})
        return [e["values"][step] for i, e in sorted(trials.items())
                if i < wave_start(index, self.q) and e["end"] == OK and step in e["values"]]

    def on_trial_result(self, tune_controller, trial, result) -> str:
        meta = TrialMeta.of(trial.config)
        value, step = result.get(self._metric), result.get("step")
        self._record(trial, result=result)
        if meta.phase != "tune" or value is None or step is None or result.get("diverged"):
            return TrialScheduler.CONTINUE  # a diverged trial ends itself; its score must not set a rung
        every = min(trial.config.get("eval_every", step), trial.config.get("steps", step)) or step
        if step % every or step // every not in self.rungs:
            return TrialScheduler.CONTINUE
        earlier = self.earlier_values(meta.cell, trial.config.get("seed"), step)
        return TrialScheduler.STOP if stops(float(value), earlier, self.sign, self.reduction_factor) \
            else TrialScheduler.CONTINUE

    def debug_string(self) -> str:
        return f"CellHalving: rungs at evaluations {self.rungs}"

