"""Early stopping that compares a trial only with trials of its own cell.

A hard noise is not "worse" than an easy one, so one global ASHA would starve the hard
cells. `CellASHA` keeps one asynchronous successive-halving scheduler per cell and routes
each tuning trial to its cell's; confirm trials are never stopped.
"""
from __future__ import annotations

from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from studies.cells import TrialMeta


def _cell(trial) -> tuple[str, str]:
    meta = TrialMeta.of(trial.config)
    return meta.cell, meta.phase


class CellASHA(FIFOScheduler):
    def __init__(self, metric: str, mode: str, max_t: int, grace_period: int, reduction_factor: float = 3):
        super().__init__()
        self._metric, self._mode = metric, mode
        self.max_t, self.grace_period, self.reduction_factor = max_t, grace_period, reduction_factor
        self._per_cell: dict[str, AsyncHyperBandScheduler] = {}
        self.stopped: list[str] = []  # trial ids stopped early, for the record

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True  # fixed by the study spec

    def _asha(self, cell: str) -> AsyncHyperBandScheduler:
        if cell not in self._per_cell:
            self._per_cell[cell] = AsyncHyperBandScheduler(
                time_attr="training_iteration", metric=self._metric, mode=self._mode, max_t=self.max_t,
                grace_period=min(self.grace_period, self.max_t), reduction_factor=self.reduction_factor)
        return self._per_cell[cell]

    def on_trial_add(self, tune_controller, trial):
        cell, phase = _cell(trial)
        if phase == "tune":
            self._asha(cell).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result) -> str:
        cell, phase = _cell(trial)
        if phase != "tune" or self._metric not in result or result.get("diverged"):
            return TrialScheduler.CONTINUE  # a diverged trial ends itself; its score must not set a rung
        decision = self._asha(cell).on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP and result.get("training_iteration", 0) < self.max_t:
            self.stopped.append(trial.trial_id)
        return decision

    def on_trial_complete(self, tune_controller, trial, result):
        cell, phase = _cell(trial)
        if phase == "tune" and result is not None and self._metric in result and not result.get("diverged"):
            self._asha(cell).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial):
        cell, phase = _cell(trial)
        if phase == "tune":
            self._asha(cell).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return f"CellASHA: {len(self._per_cell)} cells, {len(self.stopped)} trials stopped early"
