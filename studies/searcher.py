"""Fair comparison: one Optuna study per cell, equal budgets, then seed confirmation.

`CellSearcher` is a Ray Tune `Searcher`. It hands out trials round-robin over the cells so
every cell gets exactly `trials_per_cell` tuning trials (TPE inside the cell, on the `tune`
space only: the compared factors are fixed by the cell, never chosen by the optimiser). When
a cell's tuning trials have all finished, it re-runs the cell's best configuration with
`seeds` seeds (phase `confirm`). With `max_seeds` (adaptive confirmation), that is the first look: once every cell's
confirm runs have finished, `studies.analysis.continuing` says which cells still have an undecided comparison,
and those get another wave of `seeds` runs, until none has or `max_seeds` is reached. A look's decision is a
function of the stored runs of the looks before it, so a driver that dies and resumes takes the same looks.

Parallel tuning with the same answer: a cell's tuning trials run in waves of q (`tune_parallel`).
Trial k belongs to wave k // q, starts once every trial of the waves before it has finished, and
its parameters come from TPE seeded by (cell, k) over exactly those trials (an in-memory Optuna
study holding copies of them: Optuna's own sampler over a fixed set of earlier trials). Early
stopping (`studies.scheduler.CellHalving`) compares it with those trials only. So trial k's
parameters, seed and stops are functions of the spec and the cell's earlier waves, never of
timing or of which trial of its own wave finished first; a slot lost to a kill and asked again
gets the same parameters. q = 1 is sequential TPE; cells run in parallel, so a study runs up to
cells x q tuning trials at once. The Optuna studies live in real Optuna storage; the searcher's
own bookkeeping is saved by Tune with the experiment, so a restarted driver resumes the plan
without repeating or losing a slot.
"""
from __future__ import annotations

import hashlib
import logging
from typing import Any

from ray.tune.search import Searcher

from studies.cells import CONFIRM_SEED_BASE, TrialMeta
from studies.spec import StudySpec, set_path
from studies.store import open_optuna_storage, optuna_study_name

log = logging.getLogger(__name__)


def wave_start(index: int, q: int) -> int:
    """The first tuning index of trial `index`'s wave: it sees, and waits for, the trials before it.

    >>> [wave_start(k, 2) for k in range(5)], [wave_start(k, 1) for k in range(3)]
    ([0, 0, 2, 2, 4], [0, 1, 2])
    """
    return index // q * q


class CellSearcher(Searcher):
    restored: "CellSearcher | None" = None  # the instance Tune restored in this driver, if any
    q: int = 1  # a state saved before waves has none: it tuned one trial at a time
    # a state saved before adaptive confirmation has none of these: one look, taken by no one, no remote copy
    looks: list[int] = []
    continuing: tuple = ()
    remote: str | None = None

    def __init__(self, spec: StudySpec, budget: str, storage_url: str, extra: dict[str, Any] | None = None):
        super().__init__(metric=spec.metric, mode=spec.mode)
        self.spec, self.budget, self.storage_url, self.extra = spec, budget, storage_url, extra or {}
        self.cells = spec.cells()
        self.keys = spec.cell_keys()
        self.resources = (1.0, 0.0)  # set by the runner: (CPUs, GPUs) each trial holds
        self.space = spec.tune_for(budget)
        self.n_tune = spec.budgets[budget].trials_per_cell
        self.n_seeds = spec.seeds_for(budget)
        self.q = spec.tune_parallel(budget)  # the runner sets --tune-parallel's, if given
        self.n_evals = 1  # set by the runner: evaluations per trial (the scheduler's rungs count them)
        self.sdir: str | None = None  # set by the runner: the study folder, whose records a restarted driver reads
        # bookkeeping, all plain data (pickled by Tune with the experiment state)
        self.slots: dict[str, dict] = {}  # tune trial id -> {cell, phase, number, index}
        self.asked = {k: 0 for k in self.keys}
        self.finished = {k: 0 for k in self.keys}
        self.confirmed = {k: 0 for k in self.keys}  # confirm runs asked
        self.confirm_done = {k: 0 for k in self.keys}  # confirm runs finished: see _confirm_done
        self.looks = spec.looks(budget)  # confirm runs a cell has at each look
        self.continuing: list[list[str]] = []  # after each look taken: the cells given another wave
        self.remote: str | None = None  # set by the runner: the study's URI on object storage, if any
        self._studies: dict[str, Any] = {}
        self._storage = None  # the Optuna storage, opened on first use (a handle does not pickle)

    @property
    def planned(self) -> int:
        """The trials planned now: every cell's tuning trials, and its confirm runs to the looks that gave it waves."""
        return len(self.cells) * self.n_tune + sum(self.target(k) for k in self.keys)

    def target(self, key: str) -> int:
        """The confirm runs cell `key` gets: the first look's, and a wave more for each look that continued it."""
        t = 0
        while t < len(self.continuing) and key in self.continuing[t]:
            t += 1
        return (self.looks or [self.n_seeds])[t]

    @property
    def most_at_once(self) -> int:
        """The most trials the plan runs at once: every cell's wave of tuning trials, or its confirm runs."""
        return len(self.cells) * max(min(self.q, self.n_tune), self.n_seeds, 1)

    # -- Optuna ---------------------------------------------------------------------------------
    def storage(self):
        if self._storage is None:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            self._storage = open_optuna_storage(self.storage_url)
        return self._storage

    def study(self, key: str):
        if key not in self._studies:
            import optuna

            self._studies[key] = optuna.create_study(
                study_name=optuna_study_name(self.spec.name, key), storage=self.storage(), sampler=self.sampler(key, 0),
                direction="maximize" if self.spec.mode == "max" else "minimize", load_if_exists=True)
        return self._studies[key]

    def sampler(self, key: str, index: int):
        """TPE for the cell's tuning slot `index`, seeded by (cell, index): the same earlier trials give the same
        parameters, however many times the slot is asked."""
        import optuna

        seed = (int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) + 7919 * index) % 2**32
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, self.n_tune // 3))

    def report_intermediate(self, key: str, number: int, value: float, step: int) -> None:
        """A running trial's intermediate value, through the storage's public API (Tune holds the trial,
        not an optuna.Trial object; after a driver restart there is none to hold)."""
        storage = self.storage()
        study_id = storage.get_study_id_from_name(optuna_study_name(self.spec.name, key))
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
        storage.set_trial_intermediate_value(trial_id, int(step), float(value))

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_studies"], state["_storage"] = {}, None  # storage handles do not pickle; they reopen lazily
        state.pop("_steps_of", None)
        return state

    def best_params(self, key: str) -> dict[str, Any]:
        import optuna

        study = self.study(key)
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if done:
            return study.best_trial.params
        # every tuning trial failed or was pruned: confirm the one that got furthest
        pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED and t.intermediate_values]
        if pruned:
            return max(pruned, key=lambda t: self.spec.sign * t.intermediate_values[max(t.intermediate_values)]).params
        return {k: p.middle() for k, p in self.space.items()}

    # -- Tune's Searcher API ----------------------------------------------------------------------
    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # metric and mode come from the study spec

    def suggest(self, trial_id: str):
        # tuning first, round-robin over the cells whose next trial's earlier waves have all finished
        ready = [k for k in self.keys if self.asked[k] < self.n_tune and self._tuned(k) >= wave_start(self.asked[k], self.q)]
        if ready:
            key = min(ready, key=self.asked.__getitem__)  # ties: the first in the spec's cell order (min keeps it)
            return self._tune_trial(trial_id, key)
        for key in self.keys:  # then confirm runs of cells whose tuning is complete
            if self._tuned(key) >= self.n_tune and self.confirmed[key] < self.target(key):
                return self._confirm_trial(trial_id, key)
        if not self._wave_done():
            return None  # waiting for tuning trials or confirm runs to finish
        if self._another_look():
            self._take_look()
            return self.suggest(trial_id)
        return Searcher.FINISHED

    def _wave_done(self) -> bool:
        """Every cell is tuned and has finished every confirm run it was given."""
        done = self._confirm_done()
        return all(self._tuned(k) >= self.n_tune and done[k] >= self.confirmed[k] >= self.target(k) for k in self.keys)

    def _confirm_done(self) -> dict[str, int]:
        """Confirm runs finished per cell (completed, failed or diverged); a state saved before it kept them counts
        none."""
        return self.__dict__.setdefault("confirm_done", {k: 0 for k in self.keys})

    def _another_look(self) -> bool:
        return len(self.continuing) < len(self.looks) - 1 and (not self.continuing or bool(self.continuing[-1]))

    def _take_look(self) -> None:
        """Decide, from the stored runs, which cells get the next wave; the plan is stored (looks.json) and said."""
        from pathlib import Path

        from studies.analysis import continuing
        from studies.documents import LookPlan
        from studies.store import LOOKS, StudyResults

        k = len(self.continuing)
        more = sorted(continuing(StudyResults.load(Path(self.sdir)), k))
        self.continuing = [*self.continuing, more]
        path = LookPlan(seeds=self.looks, continuing=self.continuing, planned=self.planned).write(Path(self.sdir) / LOOKS)
        if self.remote:
            from studies.remote import upload_file

            upload_file(path, self.remote, LOOKS)
        decided = len(self.keys) - len(more) if k == 0 else len(self.continuing[k - 1]) - len(more)
        print(f"look {k + 1} of at most {len(self.looks)}, at {self.looks[k]} confirm runs a cell: {decided} cell(s) "
              f"decided; " + (f"{len(more)} undecided get runs {self.looks[k] + 1}-{self.looks[k + 1]} (plan now "
                              f"{self.planned} trials)" if more else "every comparison is decided"), flush=True)

    def _tuned(self, key: str) -> int:
        """Finished tuning trials of a cell, as this searcher was told (after a driver restart, `reconcile` has
        brought the count in line with Tune's restored trials). Not Optuna's count: a trial Optuna was told of
        before a kill may be running again in Tune, and the cell's next trial must wait for it, as it did."""
        return self.finished[key]

    def _steps(self, key: str) -> int:
        """The training steps of a cell's trials: a tuning trial that reported fewer was stopped early (its own
        reported step counts, not Tune's training_iteration, which a resumed trial counts differently)."""
        from denoise_core.tasks import validate_config

        cache = self.__dict__.setdefault("_steps_of", {})  # validated once per cell, not per trial
        if key not in cache:
            cell = self.cells[self.keys.index(key)]
            cache[key] = validate_config(self.spec.cell_config(cell, self.budget, self.extra)).steps
        return cache[key]

    def _config(self, key: str, phase: str, params: dict, seed: int, number: int) -> dict:
        cell = self.cells[self.keys.index(key)]
        cfg = self.spec.cell_config(cell, self.budget, self.extra)
        for name, value in params.items():
            set_path(cfg, name, value)
        cfg["seed"] = seed
        cpus, gpus = self.resources
        return TrialMeta(key, phase, cell, params, number, cpus, gpus).attach(cfg)

    def _tune_trial(self, trial_id: str, key: str) -> dict:
        index = self.asked[key]
        params = self._sample(key, index)
        study = self.study(key)
        study.enqueue_trial(params)  # recorded in the cell's study with exactly these values
        otrial = study.ask({k: p.distribution() for k, p in self.space.items()})
        self.asked[key] += 1
        self.slots[trial_id] = {"cell": key, "phase": "tune", "number": otrial.number, "index": index}
        return self._config(key, "tune", dict(otrial.params), seed=index, number=otrial.number)

    def _sample(self, key: str, index: int) -> dict:
        """Trial `index`'s parameters: TPE seeded by (cell, index) over copies of the cell's trials of the waves before
        its own (in an in-memory study), whatever else has finished or is running."""
        import optuna

        numbers = {s["number"] for s in self.slots.values()
                   if s["cell"] == key and s["phase"] == "tune" and s["index"] < wave_start(index, self.q)}
        earlier = [t for t in self.study(key).get_trials(deepcopy=False) if t.number in numbers and t.state.is_finished()]
        scratch = optuna.create_study(sampler=self.sampler(key, index),
                                      direction="maximize" if self.spec.mode == "max" else "minimize")
        scratch.add_trials(earlier)
        return dict(scratch.ask({k: p.distribution() for k, p in self.space.items()}).params)

    def _confirm_trial(self, trial_id: str, key: str) -> dict:
        index = self.confirmed[key]
        self.confirmed[key] += 1
        self.slots[trial_id] = {"cell": key, "phase": "confirm", "number": None, "index": index}
        cfg = self._config(key, "confirm", self.best_params(key), seed=CONFIRM_SEED_BASE + index, number=index)
        # confirm runs are what findings compare: scored on the held-out test split, with the weights of
        # their best validation evaluation (tuning and early stopping never see the test split)
        return cfg | {"test": True, "select": self.spec.metric, "select_mode": self.spec.mode}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        slot = self.slots.get(trial_id)
        if slot and slot["phase"] == "tune" and self.metric in result and "step" in result \
                and not result.get("diverged"):
            try:
                self.report_intermediate(slot["cell"], slot["number"], result[self.metric], result["step"])
            except Exception as e:  # a finished trial replayed after a restore: nothing to record
                log.debug("intermediate value not recorded: %s", e)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        slot = self.slots.get(trial_id)
        if slot is None or slot.get("done"):
            return
        slot["done"] = True
        if slot["phase"] != "tune":
            self._confirm_done()[slot["cell"]] += 1
            return
        import optuna

        key = slot["cell"]
        self.finished[key] += 1
        value = (result or {}).get(self.metric)
        if error or value is None or (result or {}).get("diverged"):
            state, value = optuna.trial.TrialState.FAIL, None  # a diverged trial failed: never a best value
        elif (result or {}).get("step", 0) < self._steps(key):
            state, value = optuna.trial.TrialState.PRUNED, None  # stopped early within its cell
        else:
            state = optuna.trial.TrialState.COMPLETE
        try:
            self.study(key).tell(slot["number"], value, state=state)
        except (RuntimeError, ValueError) as e:  # already told before a driver restart
            log.debug("optuna tell skipped: %s", e)

    # -- persistence (Tune calls these with its experiment checkpoint) ----------------------------
    def save(self, checkpoint_path: str) -> None:
        import pickle

        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__getstate__(), f)

    def restore(self, checkpoint_path: str) -> None:
        import pickle

        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
        CellSearcher.restored = self  # studies.recovery.RestoreRepair reconciles it with Tune's trials

    def reconcile(self, trials) -> list[str]:
        """After a driver restart, agree with Tune's restored trials (saved at another moment than this
        searcher's state): a trial Tune knows and this state does not is adopted; then Optuna trials of no slot
        are failed (`fail_orphans`); a slot whose trial Tune does not know is kept if its record says it finished,
        else asked again; a trial Tune holds as finished but this state does not is completed here. Returns what
        it changed, for the log."""
        import optuna

        from pathlib import Path

        from studies.store import read_records

        changed = self._adopt(trials)
        self.fail_orphans()
        known = {t.trial_id: t for t in trials}
        done = {r.trial_id: r for r in (read_records(Path(self.sdir)) if getattr(self, "sdir", None) else []) if r.finished}
        for trial_id, slot in list(self.slots.items()):
            if slot.get("done"):
                continue
            trial = known.get(trial_id)
            if trial is None and trial_id in done:  # it ran to its end after Tune's last checkpoint: keep it; running
                self._keep_finished(trial_id, slot, done[trial_id])  # it again would ask TPE after its own result
                changed.append(f"{slot['cell']} {slot['phase']}: finished before the driver died, kept")
            elif trial is None:  # asked after Tune's last experiment checkpoint, never finished: ask this slot again
                key = slot["cell"]
                if slot["phase"] == "tune":
                    self.asked[key] -= 1
                    try:
                        self.study(key).tell(slot["number"], state=optuna.trial.TrialState.FAIL)
                    except (RuntimeError, ValueError):
                        pass
                else:
                    self.confirmed[key] -= 1
                del self.slots[trial_id]
                changed.append(f"{key} {slot['phase']}: asked again")
            elif trial.status in ("TERMINATED", "ERROR"):
                self.on_trial_complete(trial_id, trial.last_result or {}, error=trial.status == "ERROR")
                changed.append(f"{slot['cell']} {slot['phase']}: counted as finished")
            elif trial_id in done:  # Tune runs it again from its checkpoint; its cell waits for it, as it did
                changed.append(f"{slot['cell']} {slot['phase']}: finished before the driver died, run again by Tune "
                               f"from its checkpoint")
        return changed

    def _adopt(self, trials) -> list[str]:
        """Tune writes its trials, then this searcher's state: a driver killed between the two leaves trials Tune
        knows and this state does not (asked in the last moments before the kill). They are this study's next slots,
        with the very parameters asking again would give: adopted, not asked twice."""
        changed = []
        for trial in trials:
            meta = TrialMeta.of(trial.config)
            if trial.trial_id in self.slots or meta.cell not in self.asked:
                continue
            if meta.phase == "tune":
                index = trial.config.get("seed")
                self.slots[trial.trial_id] = {"cell": meta.cell, "phase": "tune", "number": meta.number, "index": index}
                self.asked[meta.cell] += 1
            else:
                self.slots[trial.trial_id] = {"cell": meta.cell, "phase": "confirm", "number": None, "index": meta.number}
                self.confirmed[meta.cell] += 1
            changed.append(f"{meta.cell} {meta.phase}: asked just before the driver died, kept")
        return changed

    def _keep_finished(self, trial_id: str, slot: dict, record) -> None:
        """A slot whose trial finished (its record, a `TrialRecord`, says so) though Tune's restored state never saw
        it: counted as done, and Optuna told its result from the record if the killed driver had not told it yet."""
        from studies.store import COMPLETED, STOPPED

        ran = record.status in (COMPLETED, STOPPED)
        result = {self.metric: record.last.get(self.metric), "step": record.last_step} if ran else {}
        self.on_trial_complete(trial_id, result, error=not ran)

    def fail_orphans(self) -> None:
        """Optuna trials asked after Tune's last experiment checkpoint belong to no Tune trial now:
        mark them failed so they neither block nor bias the cell; their slots are asked again."""
        import optuna

        known = {(s["cell"], s["number"]) for s in self.slots.values() if s["phase"] == "tune"}
        for key in self.keys:
            for t in self.study(key).trials:
                if t.state == optuna.trial.TrialState.RUNNING and (key, t.number) not in known:
                    self.study(key).tell(t.number, state=optuna.trial.TrialState.FAIL)

