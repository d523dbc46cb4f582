"""`denoise-study evaluate`'s classical baselines on the literature's test sets, against the published rows, with
the wall time of each: BM3D on Set12 at sigma 15, 25 and 50 (DnCNN paper, Table II), CBM3D on Kodak24 and McMaster
at sigma 25 (colour), and BSD68 / CBSD68 where the data root has them.

    python benchmarks/paper_protocol.py --data-root ../shared/data/benchmarks [--sets Set12 Kodak24] [--sigmas 25]

A row within TOLERANCE of its published value says the protocol (denoise_core.protocol) is the literature's: one
draw of noise moves a set's mean by a few hundredths of a dB.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TOLERANCE = 0.1  # dB
PLAN = {"Set12": (15, 25, 50), "BSD68": (15, 25, 50), "Kodak24": (25,), "McMaster": (25,), "CBSD68": (25,)}


def main() -> None:
    from studies.evaluate import evaluate

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--sets", nargs="*", default=list(PLAN))
    ap.add_argument("--sigmas", nargs="*", type=float, default=None)
    args = ap.parse_args()
    root = Path(args.data_root).resolve()
    print(f"{'set':9s} {'sigma':>5s} {'method':11s} {'images':>6s} {'psnr':>6s} {'published':>30s} {'diff':>6s} "
          f"{'within':>6s} {'wall s':>7s}", flush=True)
    for name in args.sets:
        if not (root / name).is_dir():
            print(f"{name:9s} (not under {root}: skipped)", flush=True)
            continue
        for sigma in args.sigmas or PLAN.get(name, (25,)):
            t0 = time.time()
            rows = evaluate(name, str(root), f"gaussian:sigma={sigma:g}")
            wall = time.time() - t0
            for r in rows:
                value = float(r.published.split()[0]) if r.published else None
                diff = f"{r.psnr - value:+.2f}" if value is not None else ""
                ok = ("yes" if abs(r.psnr - value) <= TOLERANCE else "NO") if value is not None else ""
                print(f"{name:9s} {sigma:5g} {r.method:11s} {r.images:6d} {r.psnr:6.2f} {r.published:>30s} {diff:>6s} "
                      f"{ok:>6s} {wall:7.0f}", flush=True)


if __name__ == "__main__":
    main()
