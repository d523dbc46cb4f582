"""Zero-shot (single-image) methods on the standard sets: the cost of a published fit on this machine, and, with
--images N, the fit itself on the first N images of a set, scored under the literature's protocol beside the rows
the catalog carries.

    python benchmarks/zero_shot.py --data-root ../shared/data/benchmarks                 # timings only (minutes)
    python benchmarks/zero_shot.py --data-root ... --set Kodak24 --images 2 --sigma 25   # real fits (an hour each on 2 cores)

Timings: `--steps` steps of each method's fit on each set's first image, whole, as `evaluate --method` fits it; the
seconds per step, and the seconds a published fit of that image would take (ZS-N2N: 3000 steps; Noise2Fast: the
steps its stopping rule took on a 128x128 centre crop of the image, as a guide, since its rule decides the count).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _first_image(test_set: str, root: str):
    from denoise_core.data import load_whole, own_channels

    channels = own_channels(test_set, root)
    images, names = load_whole(test_set, root, "all", channels)
    return images, names, channels


def timings(sets: list[str], root: str, steps: int, threads: int) -> None:
    import torch

    from denoise_core.noise import build_noise
    from denoise_core.protocol import test_inputs
    from denoise_core.schemes import build_scheme
    from denoise_core.schemes import noise2fast as n2f_module

    torch.set_num_threads(threads)
    print(f"{'set':10} {'image':12} {'size':>11} {'method':10} {'s/step':>7} {'steps':>6} {'s/image':>8}")
    for test_set in sets:
        images, names, channels = _first_image(test_set, root)
        _, (y,) = test_inputs(build_noise("gaussian", sigma=25), images[:1], 0, channels)
        y = y[None]
        size = "x".join(map(str, y.shape[-2:])) + ("x3" if channels == 3 else "")
        zs = build_scheme("zs_n2n")
        zs.fit(y, 0, 2)  # warm-up
        t0 = time.perf_counter()
        zs.fit(y, 0, steps)
        per = (time.perf_counter() - t0) / steps
        print(f"{test_set:10} {names[0]:12} {size:>11} {'ZS-N2N':10} {per:7.3f} {3000:6d} {per * 3000:8.0f}", flush=True)
        # Noise2Fast: how many steps its rule takes, on a centre crop; then the cost of a step on the whole image
        h, w = y.shape[-2:]
        crop = y[..., (h - 128) // 2:(h - 128) // 2 + 128, (w - 128) // 2:(w - 128) // 2 + 128]
        counted, mse = [], n2f_module.F.mse_loss
        n2f_module.F.mse_loss = lambda a, b: (counted.append(1), mse(a, b))[1]
        try:
            build_scheme("noise2fast").fit(crop, 0)
        finally:
            n2f_module.F.mse_loss = mse
        n2f = build_scheme("noise2fast")
        t0 = time.perf_counter()
        n2f.fit(y, 0, max(2, steps // 10))
        per = (time.perf_counter() - t0) / max(2, steps // 10)
        print(f"{test_set:10} {names[0]:12} {size:>11} {'Noise2Fast':10} {per:7.3f} {len(counted):6d} "
              f"{per * len(counted):8.0f}", flush=True)


def fits(test_set: str, root: str, n: int, sigma: float, threads: int) -> None:
    import torch

    from studies.evaluate import evaluate, table

    torch.set_num_threads(threads)
    images, names, channels = _first_image(test_set, root)
    if n < len(images):  # the first n images, as a folder: evaluate reads a set whole
        import tempfile

        from PIL import Image

        tmp = Path(tempfile.mkdtemp(prefix="zs-bench-"))
        for img, name in zip(images[:n], names[:n]):
            a = (img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
            Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).save(tmp / f"{Path(name).stem}.png")
        source = f"folder:{tmp}"
    else:
        source = test_set
    started = time.time()
    rows = evaluate(source, root, f"gaussian:sigma={sigma:g}", channels, 0, methods=("zs_n2n",),
                    progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(table(rows))
    print(f"{test_set}, first {n} of {len(images)} images, {time.time() - started:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--set", dest="sets", action="append", help="Kodak24, McMaster, Set12 (default: all three)")
    ap.add_argument("--steps", type=int, default=50, help="timed steps of ZS-N2N (Noise2Fast: a tenth)")
    ap.add_argument("--images", type=int, default=0, help="also fit ZS-N2N on the first N images of each set")
    ap.add_argument("--sigma", type=float, default=25)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    root = str(Path(args.data_root).expanduser().resolve())
    sets = args.sets or ["Kodak24", "McMaster", "Set12"]
    timings(sets, root, args.steps, args.threads)
    for s in sets if args.images else []:
        fits(s, root, args.images, args.sigma, args.threads)


if __name__ == "__main__":
    main()
