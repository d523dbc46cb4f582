"""Training images/s of run_trial's loop vs a tutorial-style pipeline, same model and batch.

    python benchmarks/train_throughput.py [--device cpu|cuda] [--model simple_unet] [--crop 64]

The tutorial pipeline: a per-sample torch Dataset that builds each item from a PIL image
(crop, to tensor, add noise per sample), fed by a DataLoader with workers. Ours: data on the
device as one tensor, crops and noise drawn batched there. Also prints the fraction of a
training step spent outside the model's forward/backward in our loop.
"""
import argparse

import numpy as np
import torch
from PIL import Image

from denoise_core.tasks.denoise import DenoiseConfig, DenoiseTrial
from _timing import rate


class TutorialDataset(torch.utils.data.Dataset):
    def __init__(self, images, crop, sigma, length):
        self.images = [Image.fromarray((im[0].numpy() * 255).astype(np.uint8)) for im in images]
        self.crop, self.sigma, self.length = crop, sigma, length

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        im = self.images[np.random.randint(len(self.images))]
        x0, y0 = np.random.randint(0, im.width - self.crop + 1), np.random.randint(0, im.height - self.crop + 1)
        patch = np.asarray(im.crop((x0, y0, x0 + self.crop, y0 + self.crop)), dtype=np.float32) / 255.0
        clean = torch.from_numpy(patch)[None]
        noisy = clean + torch.randn_like(clean) * self.sigma / 255.0
        return noisy, clean


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="simple_unet")
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    cfg = DenoiseConfig(model=a.model, crop=a.crop, batch_size=a.batch, steps=10**6, device=a.device, val_images=4)
    trial = DenoiseTrial(cfg, __import__("pathlib").Path("/tmp/bench-train"))
    dev = trial.device

    def model_step(noisy, clean):
        with trial.autocast:
            loss = trial.loss(trial.model(noisy).float(), clean)
        trial.opt.zero_grad()
        loss.backward()
        trial.opt.step()

    # ours: whole steps, and the model-only part of a step on one fixed batch
    step = iter(range(10**9))
    ours = rate(lambda: trial.train_step(next(step)), a.steps, a.batch, dev)
    x = torch.rand(a.batch, 1, a.crop, a.crop, device=dev)
    model_only = rate(lambda: model_step(x, x), a.steps, a.batch, dev)

    # tutorial: same model, batch and optimiser, data through Dataset + DataLoader
    ds = TutorialDataset(trial.train_data.cpu(), a.crop, 25, a.batch * (a.steps + 2))
    it = iter(torch.utils.data.DataLoader(ds, batch_size=a.batch, num_workers=a.workers, shuffle=True))

    def tutorial_step():
        noisy, clean = next(it)
        model_step(noisy.to(dev), clean.to(dev))

    tutorial = rate(tutorial_step, a.steps, a.batch, dev)
    outside = max(0.0, 1 - ours / model_only)
    print(f"device {dev}, model {a.model}, batch {a.batch}, crop {a.crop}, {a.steps} steps, {a.workers} loader workers")
    print(f"our loop             {ours:10.1f} images/s")
    print(f"tutorial pipeline    {tutorial:10.1f} images/s")
    print(f"ratio                {ours / tutorial:10.2f}x")
    print(f"model fwd/bwd only   {model_only:10.1f} images/s -> {100 * outside:.1f}% of our step is outside the model")


if __name__ == "__main__":
    main()
