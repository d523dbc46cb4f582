"""The classical baselines of a study (`denoise_core.baselines`), computed beside its trials.

One Ray task, submitted when the study starts, scores every distinct evaluation setting of the
study's cells (data, noise, crop, evaluation sets: the loss or the target of a cell does not change
what a baseline sees), one after another in one process. It reserves no CPU slot, and runs at a lower
OS priority: holding a slot would keep a trial from starting (on a 2-CPU machine, half the study's
concurrency), while niced it takes what the trials leave and finishes by the time they do. Its
results land in

    <study>/baselines/scores.json   {"cells": {cell: key}, "entries": {key: scores}}
    <study>/baselines/<key>/*.png   the report's whole test image: clean, noisy, the best baseline's output

and are kept across runs: a resumed study computes only what is missing.
"""
from __future__ import annotations

import sys
from pathlib import Path

from studies.documents import BaselineEntry, BaselineScores
from studies.store import read_baselines

NICE = 10


def _score_all(configs: dict[str, dict]) -> dict[str, dict]:
    """In a Ray task: every setting's scores (errors kept per setting), the showcase images as 8-bit arrays."""
    import os

    import torch

    from denoise_core.baselines import score_baselines
    from denoise_core.tasks import validate_config

    os.nice(NICE)
    torch.set_num_threads(1)
    out = {}
    for key, config in configs.items():
        try:
            scores = score_baselines(validate_config(config).model_dump())
        except Exception as e:  # noqa: BLE001 - one setting's failure must not lose the others
            out[key] = {"error": f"{type(e).__name__}: {e}"}
            continue
        scores["showcase"] = {k: (v.clamp(0, 1) * 255).round().byte().numpy() for k, v in scores.get("showcase", {}).items()}
        out[key] = scores
    return out


class BaselineRun:
    def __init__(self, sdir: Path, scores: BaselineScores, future, quiet: bool):
        self.sdir, self.scores, self.future, self.quiet = Path(sdir), scores, future, quiet

    @classmethod
    def start(cls, spec, budget: str, extra: dict, sdir: Path, quiet: bool = False) -> "BaselineRun":
        import ray

        from denoise_core.baselines import setting_key
        from denoise_core.tasks import validate_config

        scores = read_baselines(sdir)
        todo = {}
        for cell, key in zip(spec.cells(), spec.cell_keys()):
            cfg = validate_config(spec.cell_config(cell, budget, extra)).model_dump()
            scores.cells[key] = bkey = setting_key(cfg)
            if bkey not in scores.entries:
                todo.setdefault(bkey, cfg)
        task = ray.remote(num_cpus=0, max_retries=1)(_score_all)
        return cls(sdir, scores, task.remote(todo) if todo else None, quiet)

    def finish(self, timeout_s: float = 1800) -> None:
        """Wait for the tasks (usually long done), store their scores and images; a failure is noted, not fatal."""
        import ray

        results = {}
        if self.future is not None:
            try:
                results = ray.get(self.future, timeout=timeout_s)
            except Exception as e:  # noqa: BLE001 - baselines that fail must not fail the study
                print(f"note: classical baselines failed: {str(e).splitlines()[-1][:200]}", file=sys.stderr, flush=True)
        for key, out in results.items():
            if "error" in out:
                print(f"note: classical baselines failed: {out['error'][:200]}", file=sys.stderr, flush=True)
                continue
            self.scores.entries[key] = self._entry(key, out)
        self.scores.write(_mkdir(self.sdir / "baselines") / "scores.json")

    def _entry(self, key: str, out: dict) -> BaselineEntry:
        """One setting's scores as stored, its showcase images written beside them (paths relative to the study)."""
        import torch

        from denoise_core.trial import save_png

        d = _mkdir(self.sdir / "baselines" / key)
        images = {name: str(save_png(d / f"{name}.png", torch.from_numpy(arr.copy()).float() / 255).relative_to(self.sdir))
                  for name, arr in out.pop("showcase", {}).items()}
        return BaselineEntry.model_validate({**out, "images": images})


def _mkdir(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    return d
