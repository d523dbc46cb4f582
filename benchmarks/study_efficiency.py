"""How well a finished study used its machines, from its own records (nothing is re-run).

    python benchmarks/study_efficiency.py STUDY_DIR [STUDY_DIR ...]     # e.g. ~/denoise-studies/n2n_loss

For each study it prints, all measured in that study's run:
  efficiency      (sum of trial times / concurrency) / study wall time; 1.0 means Ray, the searcher
                  and scheduling cost nothing beyond the trials themselves
  trials/hour     finished trials per hour of wall time, and per device-hour (GPU-hours when
                  the trials used GPUs, otherwise CPU-hours of the slots the trials held)
  checkpoints     time spent writing and handing over checkpoints, as a fraction of trial time
  retries         trials that needed more than one attempt
"""
import json
import sys
from pathlib import Path

import pandas as pd


def summarise(sdir: Path) -> dict:
    info = json.loads((sdir / "study.json").read_text())
    df = pd.read_parquet(sdir / "trials.parquet")
    runs = [r for r in info["runs"] if r.get("end")]
    wall = sum(r["end"] - r["start"] for r in runs)
    done = df[df.status.isin(["completed", "stopped"])]
    trial_s = float(done.duration_s.sum())
    conc = info["concurrency"]
    gpus = float(df.gpus.max()) if "gpus" in df and len(df) else 0.0
    cpus = float(df.cpus.max()) if "cpus" in df and len(df) else 1.0
    device_hours = wall / 3600 * (conc * gpus if gpus > 0 else conc * cpus)
    ckpt = float(done["final.checkpoint_s"].sum()) if "final.checkpoint_s" in done else float("nan")
    return {"study": sdir.name, "budget": info["budget"], "trials": len(done), "planned": info["planned"],
            "concurrency": conc, "wall_s": wall, "mean_trial_s": trial_s / max(len(done), 1),
            "efficiency": trial_s / conc / wall if wall else float("nan"),
            "trials_per_hour": len(done) / (wall / 3600) if wall else float("nan"),
            "device": "GPU" if gpus > 0 else "CPU", "trials_per_device_hour": len(done) / device_hours,
            "checkpoint_fraction": ckpt / trial_s if trial_s else float("nan"),
            "retried": int((df.attempts > 1).sum()), "failed": int((df.status == "failed").sum())}


def main(paths):
    if not paths:
        sys.exit(__doc__)
    for p in paths:
        s = summarise(Path(p).expanduser())
        print(f"{s['study']} ({s['budget']}): {s['trials']}/{s['planned']} trials, {s['concurrency']} at a time, "
              f"wall {s['wall_s']:.0f} s, mean trial {s['mean_trial_s']:.1f} s")
        print(f"  efficiency {s['efficiency']:.1%}   {s['trials_per_hour']:.0f} trials/hour   "
              f"{s['trials_per_device_hour']:.0f} trials per {s['device']}-hour")
        print(f"  checkpoints {s['checkpoint_fraction']:.2%} of trial time   retried {s['retried']}   failed {s['failed']}")


if __name__ == "__main__":
    main(sys.argv[1:])
