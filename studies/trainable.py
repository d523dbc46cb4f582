"""The Ray Tune trainable: `denoise_core.tasks.run_trial` with Tune's report and checkpoints.

Everything a trial needs travels in its config; it reads no file of the driver's (bundled
data loads inside the trial, user data roots must be on storage every node can reach).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path


def own_config(config: dict) -> dict:
    """The trial's own config from Tune's: its place in the study stripped, and its intra-op threads pinned to the
    CPUs it reserves (`cpus_per_trial`, at least 1). Left to torch, the threads would follow the machine's core count,
    the float reductions' order with them, and a study's scores (and TPE's choices after them) would differ from one
    machine to another."""
    from studies.cells import TrialMeta

    cfg = TrialMeta.strip(config)
    cfg.setdefault("threads", max(1, int(TrialMeta.of(config).cpus)))
    return cfg


def train_fn(config: dict) -> None:
    import ray
    from ray import tune

    from denoise_core.tasks import run_trial
    from studies.cells import TrialMeta

    meta = TrialMeta.of(config)
    cfg = own_config(config)
    node_id = ray.get_runtime_context().get_node_id()
    workdir = Path(tempfile.mkdtemp(prefix="denoise-trial-"))
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # a retried or restored trial continues from its last checkpoint
        resume = checkpoint.to_directory(str(workdir / "resume"))

    def report(metrics: dict) -> None:
        metrics = dict(metrics)
        path = metrics.pop("checkpoint", None)
        metrics.update(node_id=node_id, phase=meta.phase, resumed=resume is not None)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(path) if path else None)

    try:
        run_trial(cfg, report, workdir=workdir / "run", resume_from=resume)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
