"""After a driver restart: point trials at checkpoints that still exist.

Tune saves its experiment state every few seconds, while each trial keeps only its newest
checkpoint (`CheckpointConfig(num_to_keep=1)`). A driver killed between the two leaves a state
that names a checkpoint already replaced and deleted, and Tune would then fail the trial on
restore ("does not exist on storage anymore"). Before the first step of a run, such a trial is
pointed at its newest checkpoint on storage: the one that replaced the missing one, so the trial
resumes from later, never earlier, than the state says. (Tune's `training_iteration` then counts
on from the older result; the study's records key on each result's own `step`.)
"""
from __future__ import annotations

import posixpath
import sys

import pyarrow.fs as pafs
from ray.tune import Callback, Checkpoint


def newest_checkpoint(missing: Checkpoint) -> Checkpoint | None:
    """The newest `checkpoint_*` directory beside `missing` in its trial's storage, if any."""
    parent = posixpath.dirname(missing.path.rstrip("/"))
    infos = missing.filesystem.get_file_info(pafs.FileSelector(parent, allow_not_found=True))
    names = sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory
                   and i.base_name.startswith("checkpoint_"))
    return Checkpoint(posixpath.join(parent, names[-1]), filesystem=missing.filesystem) if names else None


def repair_checkpoint(trial) -> bool:
    """Point `trial` at its newest stored checkpoint when the one it names is gone; True if it did."""
    result = trial.latest_checkpoint_result
    if result is None or result.checkpoint is None:
        return False
    ckpt = result.checkpoint
    if ckpt.filesystem.get_file_info(ckpt.path).type != pafs.FileType.NotFound:
        return False
    newer = newest_checkpoint(ckpt)
    if newer is None:
        return False
    print(f"trial {trial.trial_id}: its saved state names a deleted checkpoint; resuming from "
          f"{posixpath.basename(newer.path)}, its newest", file=sys.stderr, flush=True)
    result.checkpoint = newer
    return True


class RestoreRepair(Callback):
    """Once, before Tune starts or restores any trial: `repair_checkpoint` over every trial, and the
    restored searcher reconciled with Tune's trials (`CellSearcher.reconcile`)."""

    def __init__(self):
        self._done = False

    def on_step_begin(self, iteration, trials, **info):
        if self._done:
            return
        self._done = True
        for trial in trials:
            repair_checkpoint(trial)
        from studies.searcher import CellSearcher

        if CellSearcher.restored is not None:
            for line in CellSearcher.restored.reconcile(trials):
                print(f"resume: {line}", file=sys.stderr, flush=True)
            CellSearcher.restored = None


CheckpointRepair = RestoreRepair  # the name experiment states saved before 2026-11 pickled
