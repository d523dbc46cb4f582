"""The classical baselines of a study (`denoise_core.baselines`), computed beside its trials.

One Ray task per distinct evaluation setting of the study's cells (data, noise, crop, evaluation
sets: the loss or the target of a cell does not change what a baseline sees), submitted when the
study starts. They reserve no CPU slot: a task is seconds of single-threaded work after its imports,
and holding a slot would keep a trial from starting (on a 2-CPU machine, half the study's
concurrency) for longer than the task computes. Their results land in

    <study>/baselines/scores.json   {"cells": {cell: key}, "entries": {key: scores}}
    <study>/baselines/<key>/*.png   the report's whole test image: clean, noisy, the best baseline's output

and are kept across runs: a resumed study computes only what is missing.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from studies.store import write_json

KEYS = ("dataset", "data_root", "download", "channels", "crop", "val_images", "test_images", "val_seed", "noise",
        "noise_params", "eval_levels")


def baseline_key(cfg: dict) -> str:
    return hashlib.sha1(json.dumps({k: cfg.get(k) for k in KEYS}, sort_keys=True).encode()).hexdigest()[:12]


def read_scores(sdir: Path) -> dict:
    p = Path(sdir) / "baselines" / "scores.json"
    return json.loads(p.read_text()) if p.exists() else {"cells": {}, "entries": {}}


def _score(config: dict) -> dict:
    """In a Ray task: the scores, with the showcase images as 8-bit arrays (small, picklable)."""
    import torch

    from denoise_core.baselines import score_baselines
    from denoise_core.tasks import validate_config

    torch.set_num_threads(1)
    out = score_baselines(validate_config(config).model_dump())
    out["showcase"] = {k: (v.clamp(0, 1) * 255).round().byte().numpy() for k, v in out.get("showcase", {}).items()}
    return out


class BaselineRun:
    def __init__(self, sdir: Path, scores: dict, futures: dict, quiet: bool):
        self.sdir, self.scores, self.futures, self.quiet = Path(sdir), scores, futures, quiet

    @classmethod
    def start(cls, spec, budget: str, extra: dict, sdir: Path, quiet: bool = False) -> "BaselineRun":
        import ray

        from denoise_core.tasks import validate_config

        scores = read_scores(sdir)
        todo = {}
        for cell, key in zip(spec.cells(), spec.cell_keys()):
            cfg = validate_config(spec.cell_config(cell, budget, extra)).model_dump()
            scores["cells"][key] = bkey = baseline_key(cfg)
            if bkey not in scores["entries"]:
                todo.setdefault(bkey, cfg)
        task = ray.remote(num_cpus=0, max_retries=1)(_score)
        return cls(sdir, scores, {k: task.remote(cfg) for k, cfg in todo.items()}, quiet)

    def finish(self, timeout_s: float = 1800) -> None:
        """Wait for the tasks (usually long done), store their scores and images; a failure is noted, not fatal."""
        import ray

        from denoise_core.trial import save_png

        for key, ref in self.futures.items():
            try:
                out = ray.get(ref, timeout=timeout_s)
            except Exception as e:  # noqa: BLE001 - a baseline that fails must not fail the study
                print(f"note: classical baselines failed: {str(e).splitlines()[-1][:200]}", file=sys.stderr, flush=True)
                continue
            d = self.sdir / "baselines" / key
            d.mkdir(parents=True, exist_ok=True)
            import torch

            out["images"] = {}
            for name, arr in out.pop("showcase", {}).items():
                out["images"][name] = str(save_png(d / f"{name}.png", torch.from_numpy(arr.copy()).float() / 255).relative_to(self.sdir))
            self.scores["entries"][key] = out
        (self.sdir / "baselines").mkdir(parents=True, exist_ok=True)
        write_json(self.sdir / "baselines" / "scores.json", self.scores)
