"""Each training scheme's cost per training step relative to Noise2Clean, same model, batch, crop and noise.

    python benchmarks/scheme_cost.py [--device cpu|cuda] [--model simple_unet] [--crop 64] [--batch 32]

A step is the whole of `DenoiseTrial.train_step`: crops, noise (or the fixed captures), the scheme's inputs
(a blind spot's masking, Neighbor2Neighbor's two sub-images and its extra pass over the whole crop without
gradient), forward, loss, backward, optimiser. Each scheme trains on one fixed capture per image
(`train_captures: 1`, Noise2Noise 2), as the self-supervised comparison does.
"""
import argparse
import tempfile
from pathlib import Path

from _timing import rate

from denoise_core.schemes import SCHEMES
from denoise_core.tasks import validate_config
from denoise_core.tasks.denoise import DenoiseTrial


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="simple_unet")
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    a = ap.parse_args()
    rates = {}
    # Noise2Clean first and again last: the spread between the two is this machine's noise on the ratios
    # (the zero-shot schemes train nothing before evaluation: benchmarks/zero_shot.py times their fits)
    trained = [n for n in SCHEMES.names if n != "clean" and not SCHEMES.get(n).zero_shot]
    for name in ["clean", *trained, "clean"]:
        captures = SCHEMES.get(name).captures
        cfg = validate_config({"task": "denoise", "model": a.model, "crop": a.crop, "batch_size": a.batch,
                               "steps": 10**6, "device": a.device, "val_images": 4, "target": name,
                               "train_captures": captures})
        trial = DenoiseTrial(cfg, Path(tempfile.mkdtemp(prefix="scheme-cost-")))
        step = iter(range(10**9))
        measured = rate(lambda: trial.train_step(next(step)), a.steps, a.batch, trial.device, warmup=3)
        rates.setdefault(name, measured)
        print(f"{name:10s} {1000 * a.batch / measured:7.1f} ms/step  {rates['clean'] / measured:.2f}x "
              f"Noise2Clean's time  ({SCHEMES.get(name).needs})", flush=True)


if __name__ == "__main__":
    main()
