"""Adaptive confirmation's error rate and cost, simulated through the study's own analysis.

    python benchmarks/sequential_error.py [--studies 1000] [--effect 0.5] [--jobs 2]

Each simulated study compares three levels of a question factor in one slice on 16 test images, with looks at
3, 6 and 9 confirm runs a cell (`seeds: 3, max_seeds: 9`). A run's score on an image is

    image difficulty + level effect + level-by-image effect + the run's shift + residual

with the variance components of a real quick study (COMPONENTS, measured as its docstring says). Every study
goes through the real code: `studies.analysis.continuing` decides each wave as the driver does, and `analyse`
makes the page's comparisons, on a `StudyResults` built in memory (records as the recorder writes them).

It prints, for each design:
  null, adaptive       all levels equal; the looks stop cells as the driver does: the false-decision rate (studies
                       with any significant comparison; under the global null this is the FWER, which bounds the FDR)
  null, every look     the same studies with every cell confirmed at every look (the most peeking there is)
  null, naive          every look tested at the full 5%, no sharing: what the spending prevents
  null, one look       a single look of 3 or of 9 runs at 5%: the error rate of the per-look test itself
  effect, adaptive     one level better by --effect (dB): power (its two true differences found) and mean runs a cell
  effect, fixed n      one look of n runs a cell at 5%, n = 3 .. 9: the power of each, and the n that equals the
                       adaptive design's power
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Mixed-model variance components (dB^2) of n2n_loss at budget quick (15 cells, 3 then 6 confirm runs a cell, 32 test
# crops of 8 photographs), the median over its 15 level comparisons at the last look: run 0.168 (a seed's shift of all
# its images), source_side 0.179 (a level's effect varying from photograph to photograph; image_side within them 0),
# resid 0.518. Here each of 16 test images is its own photograph, with the photographs' level-by-image variance.
# Image difficulty cancels in a paired comparison; its spread is the test images' (about 3 dB).
COMPONENTS = {"run": 0.168, "image_side": 0.179, "resid": 0.518, "image": 9.0}
LEVELS = ("a", "b", "c")
N_IMAGES = 16
LOOKS = (3, 9)  # seeds, max_seeds


def _spec(seeds: int, max_seeds: int | None):
    from studies.spec import StudySpec

    budgets = {b: {"trials_per_cell": 1, "seeds": seeds, **({"max_seeds": max_seeds} if max_seeds else {})}
               for b in ("smoke", "quick", "full")}
    return StudySpec.model_validate({"name": "sim", "description": "simulated", "compare": {"level": list(LEVELS)},
                                     "seeds": seeds, "budgets": budgets})


def _draw(rng: np.random.Generator, effect: float, n_runs: int, components: dict) -> dict[str, np.ndarray]:
    """{level: [run, image] scores} for `n_runs` runs of each level; level c is better by `effect`."""
    image = rng.normal(28.0, math.sqrt(components["image"]), N_IMAGES)
    out = {}
    for lv in LEVELS:
        side = rng.normal(0, math.sqrt(components["image_side"]), N_IMAGES)
        run = rng.normal(0, math.sqrt(components["run"]), (n_runs, 1))
        resid = rng.normal(0, math.sqrt(components["resid"]), (n_runs, N_IMAGES))
        out[lv] = image + (effect if lv == "c" else 0.0) + side + run + resid
    return out


def results_of(spec, scores: dict[str, np.ndarray], runs: dict[str, int]):
    """A StudyResults in memory: the first runs[level] confirm runs of each level (scores[level][run, image]), stored
    as the recorder stores them. The tests build theirs with it too."""
    from denoise_core.results import Score
    from studies.cells import CONFIRM_SEED_BASE
    from studies.documents import COMPLETED
    from studies.store import StudyResults, trials_table

    key = Score("psnr", "test").key
    records = [{"trial_id": f"{lv}{i}", "cell": spec.key_of({"level": lv}), "phase": "confirm", "factors": {"level": lv},
                "seed": CONFIRM_SEED_BASE + i, "status": COMPLETED,
                "history": [{"step": 1, "psnr": float(v[i].mean()), key: float(v[i].mean())}],
                "per_image": {key: [float(x) for x in v[i]]}}
               for lv, v in scores.items() for i in range(runs[lv])]
    info = {"spec": spec.model_dump(mode="json"), "budget": "quick", "cells": spec.cell_keys(),
            "seeds": spec.seeds_for("quick")}
    return StudyResults(Path("."), info, spec, records, trials_table(Path("."), spec, records))


def adaptive(scores, spec, every_look: bool = False):
    """(significant comparisons, runs a cell on average) of one study run as the driver runs it."""
    from studies.analysis import analyse, continuing

    looks = spec.looks("quick")
    runs = {lv: looks[0] for lv in LEVELS}
    for k in range(len(looks) - 1):
        more = set(spec.cell_keys()) if every_look else continuing(results_of(spec, scores, runs), k)
        if not more:
            break
        for lv in LEVELS:
            if spec.key_of({"level": lv}) in more:
                runs[lv] = looks[k + 1]
    a = analyse(results_of(spec, scores, runs))
    return [c for c in a.family.comparisons if c.significant], sum(runs.values()) / len(LEVELS)


def naive(scores, spec_fixed_of) -> bool:
    """Any significant comparison when every look (3, 6, 9 runs) is tested at the full 5%."""
    from studies.analysis import analyse

    for n in range(LOOKS[0], LOOKS[1] + 1, LOOKS[0]):
        a = analyse(results_of(spec_fixed_of(n), scores, {lv: n for lv in LEVELS}))
        if any(c.significant for c in a.family.comparisons):
            return True
    return False


def fixed(scores, n: int, spec) -> list:
    from studies.analysis import analyse

    return [c for c in analyse(results_of(spec, scores, {lv: n for lv in LEVELS})).family.comparisons if c.significant]


def _found(sig: list) -> int:
    """The true differences found (c against a, c against b), in the right direction."""
    return sum(1 for c in sig if "c" in (c.a, c.b) and (c.a == "c") == (c.gain > 0))


def one_study(args: tuple) -> dict:
    """Every design on one simulated study (seeded): what each decided, and what it spent."""
    seed, effect, components, fixed_ns = args
    rng = np.random.default_rng(seed)
    scores = _draw(rng, effect, LOOKS[1], components)
    seq = _spec(LOOKS[0], LOOKS[1])
    specs = {n: _spec(n, None) for n in set(fixed_ns) | set(range(LOOKS[0], LOOKS[1] + 1, LOOKS[0]))}
    out = {}
    sig, runs = adaptive(scores, seq)
    out["adaptive"] = (sig, runs)
    if effect == 0:
        out["every_look"] = adaptive(scores, seq, every_look=True)
        out["naive"] = naive(scores, specs.__getitem__)
    for n in fixed_ns:
        out[f"fixed{n}"] = fixed(scores, n, specs[n])
    return {k: _summary(v, effect) for k, v in out.items()}


def _summary(v, effect: float):
    if isinstance(v, bool):
        return {"false": v}
    sig, runs = v if isinstance(v, tuple) else (v, None)
    false = any(True for c in sig) if effect == 0 else any(not ("c" in (c.a, c.b)) or (c.a == "c") != (c.gain > 0)
                                                           for c in sig)
    return {"false": false, "found": _found(sig), "runs": runs}


def simulate(n_studies: int, effect: float, components: dict = COMPONENTS, fixed_ns=(), seed: int = 0,
             jobs: int = 1) -> dict:
    """{design: {false: rate, power: share of studies finding both true differences, runs: mean runs a cell}}."""
    tasks = [(seed * 1_000_003 + i, effect, components, tuple(fixed_ns)) for i in range(n_studies)]
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            rows = list(pool.map(one_study, tasks, chunksize=4))
    else:
        rows = [one_study(t) for t in tasks]
    out = {}
    for design in rows[0]:
        got = [r[design] for r in rows]
        out[design] = {"false": float(np.mean([g["false"] for g in got])), "n": n_studies}
        if "found" in got[0]:
            out[design]["power"] = float(np.mean([g["found"] == 2 for g in got]))
        if got[0].get("runs") is not None:
            out[design]["runs"] = float(np.mean([g["runs"] for g in got]))
    return out


def equal_power_n(fixed_power: dict[int, float], power: float) -> float:
    """The runs a cell at which the fixed design reaches `power`, interpolated between the n simulated."""
    ns = sorted(fixed_power)
    for lo, hi in zip(ns, ns[1:]):
        if fixed_power[lo] < power <= fixed_power[hi]:
            return lo + (hi - lo) * (power - fixed_power[lo]) / (fixed_power[hi] - fixed_power[lo])
    return ns[0] if power <= fixed_power[ns[0]] else float("inf")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--studies", type=int, default=1000, help="simulated studies under the null (and half as many "
                                                             "under the effect)")
    p.add_argument("--effect", type=float, default=1.0, help="the better level's true advantage (dB)")
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args(argv)
    t0 = time.time()
    null = simulate(args.studies, 0.0, fixed_ns=(LOOKS[0], LOOKS[1]), jobs=args.jobs)
    print(f"null ({args.studies} studies, 3 levels, looks at 3, 6, 9 runs a cell; alpha 5%):")
    print(f"  adaptive (the driver's rule):   false-decision rate {null['adaptive']['false']:.3f}, "
          f"{null['adaptive']['runs']:.2f} runs a cell")
    print(f"  every look taken:               false-decision rate {null['every_look']['false']:.3f}")
    print(f"  naive (5% at every look):       false-decision rate {null['naive']['false']:.3f}")
    for n in (LOOKS[0], LOOKS[1]):
        print(f"  one look of {n} runs at 5%:      false-decision rate {null[f'fixed{n}']['false']:.3f} (the test itself)")
    ns = list(range(LOOKS[0], LOOKS[1] + 1))
    alt = simulate(max(args.studies // 2, 1), args.effect, fixed_ns=ns, seed=1, jobs=args.jobs)
    power = alt["adaptive"]["power"]
    fixed_power = {n: alt[f"fixed{n}"]["power"] for n in ns}
    n_eq = equal_power_n(fixed_power, power)
    print(f"effect {args.effect:+.2f} dB on one level ({alt['adaptive']['n']} studies):")
    print(f"  adaptive: power {power:.3f} (both true differences found), {alt['adaptive']['runs']:.2f} runs a cell "
          f"on average, false-decision rate {alt['adaptive']['false']:.3f}")
    print("  fixed design, one look at 5%: " + ", ".join(f"n={n}: power {fixed_power[n]:.3f}" for n in ns))
    print(f"  the fixed design of equal power needs {n_eq:.2f} runs a cell: adaptive spends "
          f"{alt['adaptive']['runs'] / n_eq:.0%} of it" if math.isfinite(n_eq) else
          "  no fixed design up to 9 runs a cell reaches the adaptive design's power")
    print(f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
