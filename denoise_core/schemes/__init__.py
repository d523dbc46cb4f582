"""Training schemes (`target:` and `target_params:`): what a denoiser is trained towards, and on what data.

    scheme = build_scheme("blindspot", fraction=0.01)
    loss, monitor = scheme.train(trial, clean, captures, masks, progress)

Each scheme trains on the crops of a batch: `clean` [B, C, h, w], `captures` [B, K, C, h, w] (K noisy captures of
each crop: drawn fresh at every step, fixed once by `train_captures`, or real ones from `pairs:` scenes) and their
`masks` (1 = observed, where the noise has them). It says what it needs of the data (`clean`: the clean images;
`captures`: how many captures of each image; `needs_sigma`: the noise's Gaussian sigma), so that a study that
cannot train it is refused before Ray, and the report can say beside each score what the method needed.

One file per scheme in this package; nothing else lists them (`denoise_core.registry`).
"""
from __future__ import annotations

import torch

from denoise_core.registry import Registry

SCHEMES: Registry["Scheme"] = Registry("training scheme", package="denoise_core.schemes")


def build_scheme(name: str, **params) -> "Scheme":
    return SCHEMES.build(name, **params)


def zero_shot_scheme(name: str, noise=None) -> "Scheme":
    """A single-image method (a zero-shot scheme: zs_n2n, noise2fast) by name, with its published settings, refusing
    a `noise` (a noise model; None: unknown, a user's own image) it cannot denoise."""
    names = [n for n in SCHEMES.names if SCHEMES.get(n).zero_shot]
    if name not in names:
        raise ValueError(f"method {name!r} is not a single-image method; known: {', '.join(names)}")
    scheme = build_scheme(name)
    if noise is not None:
        scheme.check_noise(noise)
    return scheme


class Scheme:
    clean: bool = False  # trains towards the clean images (Noise2Clean)
    captures: int = 1  # the captures of each training image it trains on (at least)
    needs_sigma: bool = False  # needs the noise's Gaussian sigma (a noise model, not real captures)
    needs: str = ""  # what the data must hold, in words, for the report
    crop_scale: int = 1  # the side of the crop it cuts per side of the network's training input (`crop`)
    zero_shot: bool = False  # trains nothing before evaluation: fits a network on each image it denoises (_zero_shot)

    def check(self, cfg) -> None:
        """Refuse a trial config this scheme cannot train (a ValueError naming the key)."""

    def train(self, trial, clean: torch.Tensor, captures: torch.Tensor, masks: torch.Tensor | None,
              progress: float) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        """(loss, monitor) of one batch: the loss to optimise and a divergence monitor, device scalars."""
        raise NotImplementedError

    def infer(self, model, x: torch.Tensor, cfg) -> torch.Tensor:
        """The trained network on evaluation inputs (R2R may average over recorruptions), for a trial config `cfg`:
        the trial's evaluations and every later use of its stored model (`evaluate`, `apply`) go through this."""
        return model(x)

    def passes(self) -> int:
        """Passes of the network per evaluated image (compute at test time)."""
        return 1


def one_capture(captures: torch.Tensor, masks: torch.Tensor | None, gen: torch.Generator,
                fresh: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """A random capture of each crop (the first of fresh draws, which are alike), with its mask, and its index."""
    b, k = captures.shape[:2]
    row = torch.arange(b, device=captures.device)
    a = (torch.zeros(b, dtype=torch.long, device=captures.device) if fresh or k == 1
         else torch.randint(0, k, (b,), generator=gen, device=captures.device))
    return captures[row, a], None if masks is None else masks[row, a], a
