"""Where a study's trial time goes under Ray: wall time against time in training steps and evaluations.

    python benchmarks/trial_overhead.py [--study tests/data/tiny.yaml] [--budget quick] [--gpus-per-trial 0.25]
    python benchmarks/trial_overhead.py --from DIR      # an existing study's records, nothing run

Runs the study on a local Ray (reused actors, as the runner configures them), then reads its records:
for each trial, wall = the driver's end - start, busy = the sum over its evaluations of `step_s`
(the training steps) + `eval_s` (the evaluations) + `checkpoint_s`, and overhead = wall - busy, which
holds setup (data, model, validation sets, CUDA init), Ray's scheduling and result handling.
Trials are split into the first trial of each worker process and the later ones, whose setup the
per-process caches make short. Target: later trials at most 1 s of overhead.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def overheads(sdir: Path) -> list[dict]:
    from studies.store import read_records

    rows = []
    for r in read_records(sdir):
        h = r.history
        if not r.finished or not h or not (r.start and r.end):
            continue
        busy = sum(e.get("step_s", 0) + e.get("eval_s", 0) for e in h) + h[-1].get("checkpoint_s", 0)
        wall = r.end - r.start
        rows.append({"pid": h[0].get("pid"), "start": r.start, "wall": wall, "busy": busy,
                     "overhead": wall - busy, "setup": h[0].get("setup_s", float("nan"))})
    rows.sort(key=lambda x: x["start"])
    seen = set()
    for row in rows:
        row["first_in_worker"] = row["pid"] not in seen
        seen.add(row["pid"])
    return rows


def summarise(rows: list[dict]) -> None:
    for label, group in (("first trial of a worker", [r for r in rows if r["first_in_worker"]]),
                         ("later trials", [r for r in rows if not r["first_in_worker"]])):
        if not group:
            print(f"{label:24s} none")
            continue
        med = {k: statistics.median(r[k] for r in group) for k in ("wall", "busy", "overhead", "setup")}
        worst = max(r["overhead"] for r in group)
        print(f"{label:24s} n={len(group):3d}  median wall {med['wall']:6.2f} s, in steps+evals {med['busy']:6.2f} s, "
              f"overhead {med['overhead']:5.2f} s (setup {med['setup']:5.2f} s), worst overhead {worst:5.2f} s")
    total_wall = sum(r["wall"] for r in rows)
    print(f"all {len(rows)} trials: {100 * sum(r['busy'] for r in rows) / total_wall:.1f}% of trial wall time "
          f"is training steps and evaluations; {len({r['pid'] for r in rows})} worker processes")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", default=str(Path(__file__).resolve().parent.parent / "tests/data/tiny.yaml"))
    ap.add_argument("--budget", default="quick")
    ap.add_argument("--gpus-per-trial", type=float, default=None)
    ap.add_argument("--storage", default=None, help="where the study runs [default: a temporary directory]")
    ap.add_argument("--from", dest="existing", default=None, help="read this study directory; run nothing")
    a = ap.parse_args()
    if a.existing:
        sdir = Path(a.existing)
    else:
        from studies.runner import RunOptions, run_study
        from studies.spec import load_spec

        spec = load_spec(a.study)
        storage = a.storage or tempfile.mkdtemp(prefix="trial-overhead-")
        sdir = run_study(spec, RunOptions(budget=a.budget, storage=storage, gpus_per_trial=a.gpus_per_trial,
                                          quiet=True, fresh=True))
    print(f"study {sdir}")
    summarise(overheads(sdir))


if __name__ == "__main__":
    main()
