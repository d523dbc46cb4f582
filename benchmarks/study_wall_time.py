"""Wall time of a whole study on bundled data, and where its trials' time went.

    python benchmarks/study_wall_time.py n2n_loss --budget quick          # runs it (--fresh) and reads it back
    python benchmarks/study_wall_time.py ddpm_schedule --budget quick
    python benchmarks/study_wall_time.py --from ~/denoise-studies/n2n_loss  # a finished study, nothing run

Prints: the wall time of `denoise-study run` (setup excluded: the venv exists), the trials, each trial's
time split into setup, training steps, evaluations, checkpoints and the rest (Ray, process start), and
the study's verdicts on its literature claims, as the report states them.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def split(records: list) -> dict[str, float]:
    """Seconds per finished trial (`TrialRecord`s), by part: medians over trials."""
    parts = {"wall": [], "setup": [], "steps": [], "evaluations": [], "checkpoints": [], "other": []}
    for r in records:
        h = r.history
        if not h or not (r.start and r.end):
            continue
        wall = r.end - r.start
        steps, evals = sum(e.get("step_s", 0) for e in h), sum(e.get("eval_s", 0) for e in h)
        ckpt, setup = h[-1].get("checkpoint_s", 0), h[0].get("setup_s", 0)
        for k, v in (("wall", wall), ("setup", setup), ("steps", steps), ("evaluations", evals),
                     ("checkpoints", ckpt), ("other", wall - setup - steps - evals - ckpt)):
            parts[k].append(v)
    return {k: statistics.median(v) if v else float("nan") for k, v in parts.items()}


def report(sdir: Path, wall: float | None) -> None:
    from studies.analysis import analyse
    from studies.store import StudyResults

    r = StudyResults.load(sdir)
    done = [x for x in r.records if x.finished]
    ran = wall if wall is not None else sum((x.end or x.start) - x.start for x in r.info.runs)
    print(f"{r.spec.name} ({r.info.budget}): {len(done)}/{r.info.planned} trials, wall {ran / 60:.1f} min")
    s = split(done)
    print("  per trial (median s): " + ", ".join(f"{k} {v:.1f}" for k, v in s.items()))
    for phase in ("tune", "confirm"):
        p = split([x for x in done if x.phase == phase])
        print(f"  {phase:8s} wall {p['wall']:.1f} s, steps {p['steps']:.1f} s, evaluations {p['evaluations']:.1f} s")
    a = analyse(r)
    print(f"  {a.family.m} comparisons, {a.family.discoveries} significant, intervals at {a.confidence:.1%}")
    for v in a.verdicts:
        c = v.comparison
        eff = f"{c.gain:+.2f} {a.unit} [{c.lo:+.2f}, {c.hi:+.2f}]" if c else "-"
        print(f"  verdict: {v.verdict:13s} {v.claim.a} vs {v.claim.b} {dict(v.claim.where)}: {eff}")
    for sl in a.slices:
        if sl.baseline:
            c = sl.baseline.comparison
            print(f"  {sl.label or 'all'}: best {sl.winner} vs {sl.baseline.name} {c.gain:+.2f} {a.unit} "
                  f"[{c.lo:+.2f}, {c.hi:+.2f}]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", nargs="?", default="n2n_loss")
    ap.add_argument("--budget", default="quick")
    ap.add_argument("--storage", default=None, help="[default: a temporary directory]")
    ap.add_argument("--from", dest="existing", default=None, help="read this study directory; run nothing")
    a = ap.parse_args()
    if a.existing:
        report(Path(a.existing).expanduser(), None)
        return
    storage = a.storage or tempfile.mkdtemp(prefix="wall-time-")
    exe = Path(sys.executable).parent / "denoise-study"
    t0 = time.perf_counter()
    subprocess.run([str(exe), "run", a.study, "--budget", a.budget, "--storage", storage, "--fresh", "--quiet"],
                   check=True, cwd=ROOT)
    report(Path(storage) / Path(a.study).stem, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
