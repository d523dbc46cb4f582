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

from studies.documents import BaselineEntry, BaselineMetrics, BaselineScores
from studies.store import read_baselines

NICE = 10


def _score_all(configs: dict[str, dict], done: dict[str, dict], queue=None) -> dict[str, dict]:
    """In a Ray task: every setting's scores (errors kept per setting), the showcase images as 8-bit arrays. The
    `queue` (a `ray.util.queue.Queue`) carries to the driver each progress line, ("line", text), and each
    baseline as soon as it is scored, ("scored", key, name, metrics), so that an interrupted run keeps it;
    `done` holds the baselines an interrupted run scored ({key: {name: metrics}}), not scored again."""
    import os

    import torch

    from denoise_core.baselines import score_baselines
    from denoise_core.tasks import validate_config

    os.nice(NICE)
    torch.set_num_threads(1)
    put = queue.put if queue is not None else (lambda item: None)
    out = {}
    for i, (key, config) in enumerate(configs.items()):
        say = lambda line, i=i: put(("line", f"setting {i + 1}/{len(configs)}: {line}"))  # noqa: E731
        try:
            scores = score_baselines(validate_config(config).model_dump(), progress=say, done=done.get(key),
                                     on_scored=lambda name, metrics, key=key: put(("scored", key, name, metrics)))
        except Exception as e:  # noqa: BLE001 - one setting's failure must not lose the others
            out[key] = {"error": f"{type(e).__name__}: {e}"}
            continue
        scores["showcase"] = {k: (v.clamp(0, 1) * 255).round().byte().numpy() for k, v in scores.get("showcase", {}).items()}
        out[key] = scores
    return out


class BaselineRun:
    def __init__(self, sdir: Path, scores: BaselineScores, future, quiet: bool, queue=None):
        self.sdir, self.scores, self.future, self.quiet, self.queue = Path(sdir), scores, future, quiet, queue

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
        if not todo:
            return cls(sdir, scores, None, quiet)
        from ray.util.queue import Queue

        done = {k: {name: m.model_dump() for name, m in scores.partial.get(k, {}).items()} for k in todo}
        queue = Queue(actor_options={"num_cpus": 0})  # the task's progress lines and scored baselines
        task = ray.remote(num_cpus=0, max_retries=1)(_score_all)
        return cls(sdir, scores, task.remote(todo, done, queue), quiet, queue)

    def finish(self, timeout_s: float = 1800) -> None:
        """Wait for the tasks (usually long done: one line says so; else their progress, line by line), store their
        scores and images; a failure is noted, not fatal."""
        results = {}
        if self.future is not None:
            try:
                results = self._wait(timeout_s)
            except Exception as e:  # noqa: BLE001 - baselines that fail must not fail the study
                print(f"note: classical baselines failed: {str(e).splitlines()[-1][:200]}", file=sys.stderr, flush=True)
            self._close()  # (an interruption leaves the queue to `keep`)
        for key, out in results.items():
            if "error" in out:
                print(f"note: classical baselines failed: {out['error'][:200]}", file=sys.stderr, flush=True)
                continue
            self.scores.entries[key] = self._entry(key, out)
            self.scores.partial.pop(key, None)
        self._write()

    def keep(self) -> None:
        """The run was interrupted: store the baselines scored so far, so that a resume does not score them again."""
        self._close()
        self._write()

    def _close(self) -> None:
        """Take the last of what the task sent, then end the queue."""
        import ray

        self._drain()  # (which forgets a queue whose actor died: nothing left to end)
        if self.queue is not None:
            try:
                ray.kill(self.queue.actor)
            except Exception:  # noqa: BLE001 - Ray already going down
                pass
        self.queue = None

    def _write(self) -> None:
        self.scores.write(_mkdir(self.sdir / "baselines") / "scores.json")

    def _drain(self) -> list[str]:
        """Take everything the task has sent: scored baselines are recorded (partial until their setting is done);
        returns the progress lines."""
        if self.queue is None:
            return []
        try:
            items = self.queue.get_nowait_batch(self.queue.qsize())
        except Exception:  # noqa: BLE001 - its actor died with its node: the task's own results still come
            self.queue = None
            return []
        lines = []
        for item in items:
            if item[0] == "scored":
                _, key, name, metrics = item
                self.scores.partial.setdefault(key, {})[name] = BaselineMetrics.model_validate(metrics)
            else:
                lines.append(item[1])
        return lines

    def _wait(self, timeout_s: float) -> dict:
        """The task's results; while it runs, each of its progress lines as it comes (unless quiet)."""
        import time

        import ray

        started, waited, first = time.time(), False, True
        while True:  # a signal interrupts it within a second (studies.interrupt)
            ready, _ = ray.wait([self.future], timeout=1.0)
            if ready:
                results = ray.get(self.future)
                if not self.quiet:
                    print(f"classical baselines: {len(results)} setting(s) scored"
                          + (f", {time.time() - started:.0f} s after the trials ended" if waited else ""), flush=True)
                return results
            waited = True
            news = self._drain()
            shown = news[-1:] if first else news  # at first where it is now, not all it did before
            first = first and not shown
            for line in shown if not self.quiet else []:
                print(f"classical baselines: {line} [{time.time() - started:.0f} s after the trials ended]", flush=True)
            if time.time() - started > timeout_s:
                raise TimeoutError(f"not done after {timeout_s:.0f} s")

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
