"""Early stopping that compares a trial only with trials of its own cell, and decides the same way
however often the driver is killed and resumed.

A hard noise is not "worse" than an easy one, so one global rule would starve the hard cells: a
tuning trial is compared only with the tuning trials of its own cell. Within a cell they run one
after another (`studies.searcher.CellSearcher`), so when trial k reaches a rung the trials compared
with it are exactly trials 0..k-1 of its cell, all finished, their histories in the study's records.

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
    def __init__(self, records_dir: Path, metric: str, mode: str, max_t: int, grace_period: int,
                 reduction_factor: float = 3):
        super().__init__()
        self.records_dir = str(records_dir)  # the study folder: plain data, pickled with the experiment
        self._metric, self.sign = metric, (1 if mode == "max" else -1)
        self.rungs = rungs(max_t, grace_period, reduction_factor)
        self.reduction_factor = reduction_factor

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True  # fixed by the study spec

    def earlier_values(self, cell: str, trial_id: str, step: int) -> list[float]:
        """The metric that every finished tuning trial of `cell` other than `trial_id` reached at `step`."""
        out = []
        for rec in read_records(Path(self.records_dir)):
            if rec.cell != cell or rec.phase != "tune" or rec.trial_id == trial_id or rec.status not in (COMPLETED, STOPPED):
                continue
            value = rec.value_at(self._metric, step)
            if value is not None:
                out.append(value)
        return out

    def on_trial_result(self, tune_controller, trial, result) -> str:
        meta = TrialMeta.of(trial.config)
        value, step = result.get(self._metric), result.get("step")
        if meta.phase != "tune" or value is None or step is None or result.get("diverged"):
            return TrialScheduler.CONTINUE  # a diverged trial ends itself; its score must not set a rung
        every = min(trial.config.get("eval_every", step), trial.config.get("steps", step)) or step
        if step % every or step // every not in self.rungs:
            return TrialScheduler.CONTINUE
        earlier = self.earlier_values(meta.cell, trial.trial_id, step)
        return TrialScheduler.STOP if stops(float(value), earlier, self.sign, self.reduction_factor) \
            else TrialScheduler.CONTINUE

    def debug_string(self) -> str:
        return f"CellHalving: rungs at evaluations {self.rungs}"

