"""Noise models in the literature's units, batched and seedable.

    noise = build_noise("gaussian", sigma=25)      # sigma on the 0-255 scale
    out = noise(clean, generator=g)                # Corruption(noisy, mask)

A level is a number or a [lo, hi] range; a range is drawn independently per
image (blind training). Every model works on the tensor's device, never loops
over pixels in Python, and never modifies its input. Two calls on the same
clean batch give independent corruptions (how Noise2Noise targets are made).
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence, Union

import torch

from denoise_core.registry import Registry

Level = Union[float, Sequence[float]]
NOISES: Registry["Noise"] = Registry("noise")


@dataclass
class Corruption:
    noisy: torch.Tensor  # [B, C, H, W]
    mask: torch.Tensor | None = None  # [B, C, H, W], 1 where the pixel was observed


def build_noise(name: str, **params) -> "Noise":
    """A noise model by name, its level in the literature's units.

    >>> clean = torch.full((2, 1, 64, 64), 0.5)
    >>> out = build_noise("gaussian", sigma=25)(clean, generator=torch.Generator().manual_seed(0))
    >>> round(((out.noisy - clean).std() * 255).item())          # sigma on the 0-255 scale
    25
    >>> drop = build_noise("bernoulli", p=0.5)(clean, generator=torch.Generator().manual_seed(0))
    >>> round(1 - drop.mask.mean().item(), 1), bool((drop.noisy[drop.mask == 0] == 0).all())
    (0.5, True)
    >>> build_noise("gaussian", sigma=-5)
    Traceback (most recent call last):
    ValueError: sigma=-5 is out of range; allowed [0, inf)
    """
    return NOISES.build(name, **params)


def _check_level(param: str, level: Level, lo: float, hi: float, hi_open: bool = False,
                 lo_open: bool = False) -> tuple[float, float]:
    """Normalise a level to (lo, hi) and check it lies in the allowed interval (one wording for every value).

    >>> _check_level("lam", 0, 0.0, float("inf"), lo_open=True)
    Traceback (most recent call last):
    ValueError: lam=0 is out of range; allowed (0, inf)
    """
    if isinstance(level, (int, float)):
        bounds = (float(level), float(level))
    elif isinstance(level, Sequence) and len(level) == 2 and all(isinstance(v, (int, float)) for v in level):
        bounds = (float(level[0]), float(level[1]))
        if bounds[0] > bounds[1]:
            raise ValueError(f"{param}={list(level)}: a range must be [lo, hi] with lo <= hi")
    else:
        raise ValueError(f"{param}={level!r}: expected a number or a [lo, hi] range")
    for v in bounds:
        if v < lo or v > hi or (hi_open and v >= hi) or (lo_open and v <= lo):
            raise ValueError(f"{param}={level!r} is out of range; allowed {_interval(lo, hi, lo_open, hi_open)}")
    return bounds


def _interval(lo: float, hi: float, lo_open: bool, hi_open: bool) -> str:
    """An allowed range as every message writes it: (0, 255], [0, 1], (0, inf) (an infinite end is always open)."""
    return f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open or hi == float('inf') else ']'}"


class Noise:
    """Base class: subclasses implement `corrupt(clean, level[B,1,1,1], generator)`.

    A noise model says what it is, so that generic code (classical baselines, the report) never tests a
    name: `family` is "additive" (a zero-mean perturbation of every pixel, where BM3D, TV and NLM apply) or
    "impulse" (some pixels replaced or dropped, where a median filter applies), and `gaussian_sigma` is its
    standard deviation on the [0, 1] scale when it is Gaussian with one fixed level, else None."""

    param: str = ""
    family: str = "additive"
    captured: bool = False  # True: no model; the data holds the noisy images (real noise, `Real`)
    # the level's allowed interval (lo, hi, lo_open, hi_open) in its own units, and the level at which the model
    # adds no noise at all (a range may start there, a test at one level may not: its PSNR would be infinite)
    bounds: tuple[float, float, bool, bool] = (0.0, 1.0, False, False)
    absent_at: float | None = 0.0
    test_bounds: tuple[float, float, bool, bool] | None = None  # narrower bounds for a test level, if any

    @classmethod
    def checked(cls, level: Level) -> tuple[float, float]:
        """A level normalised to (lo, hi) and checked against the model's `bounds`."""
        lo, hi, lo_open, hi_open = cls.bounds
        return _check_level(cls.param, level, lo, hi, hi_open=hi_open, lo_open=lo_open)

    @classmethod
    def check_test_level(cls, value: float) -> None:
        """One fixed level to score a test set at: within `bounds`, and not the level that adds no noise."""
        lo, hi, lo_open, hi_open = cls.test_bounds or cls.bounds
        if cls.absent_at is not None and value == cls.absent_at:
            raise ValueError(f"{cls.param}={value:g} adds no noise (the noisy input would score an infinite PSNR); "
                             f"allowed {_interval(lo, hi, True, hi_open)}")
        _check_level(cls.param, value, lo, hi, hi_open=hi_open, lo_open=lo_open)

    def __init__(self, level: tuple[float, float]):
        self.level = level

    def draw_level(self, clean: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Per-image level [B, 1, 1, 1]: constant, or uniform in [lo, hi] (blind)."""
        lo, hi = self.level
        b = clean.shape[0]
        if lo == hi:
            return torch.full((b, 1, 1, 1), lo, device=clean.device, dtype=clean.dtype)
        u = torch.rand((b, 1, 1, 1), generator=generator, device=clean.device, dtype=clean.dtype)
        return lo + (hi - lo) * u

    def __call__(self, clean: torch.Tensor, generator: torch.Generator | None = None) -> Corruption:
        if clean.ndim != 4:
            raise ValueError(f"expected images [B, C, H, W], got shape {tuple(clean.shape)}")
        return self.corrupt(clean, self.draw_level(clean, generator), generator)

    def corrupt(self, clean, level, generator) -> Corruption:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def gaussian_sigma(self) -> float | None:
        return None

    def __repr__(self) -> str:
        lo, hi = self.level
        return f"{type(self).__name__}({self.param}={lo if lo == hi else [lo, hi]})"


def _uniform(like: torch.Tensor, generator) -> torch.Tensor:
    return torch.rand(like.shape, generator=generator, device=like.device, dtype=like.dtype)


@NOISES.register("gaussian")
class Gaussian(Noise):
    """Additive N(0, (sigma/255)^2); clipped to [0, 1] only if `clip=True`."""

    param = "sigma"
    # a trial takes any sigma (a huge one is how the tests make a loss overflow); a test level is on the 0-255 scale
    bounds = (0.0, float("inf"), False, False)
    test_bounds = (0.0, 255.0, True, False)

    def __init__(self, sigma: Level = 25.0, clip: bool = False):
        super().__init__(self.checked(sigma))
        self.clip = clip

    @property
    def gaussian_sigma(self) -> float | None:
        lo, hi = self.level
        return lo / 255.0 if lo == hi and not self.clip else None

    def corrupt(self, clean, level, generator):
        n = torch.randn(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype)
        noisy = clean + n * (level / 255.0)
        return Corruption(noisy.clamp(0, 1) if self.clip else noisy)


@NOISES.register("poisson")
class Poisson(Noise):
    """Shot noise: noisy = Poisson(lam * x) / lam (larger lam, less noise)."""

    param = "lam"
    bounds = (0.0, float("inf"), True, False)
    absent_at = None  # no finite photon count is noise-free

    def __init__(self, lam: Level = 30.0):
        super().__init__(self.checked(lam))

    def corrupt(self, clean, level, generator):
        counts = torch.poisson(clean.clamp(min=0) * level, generator=generator)
        return Corruption(counts / level)


@NOISES.register("bernoulli")
class Bernoulli(Noise):
    """Multiplicative: each pixel dropped to 0 with probability p; mask = 1 where kept."""

    param = "p"
    family = "impulse"

    def __init__(self, p: Level = 0.5):
        super().__init__(self.checked(p))

    def corrupt(self, clean, level, generator):
        mask = (_uniform(clean, generator) >= level).to(clean.dtype)
        return Corruption(clean * mask, mask)


@NOISES.register("salt_pepper")
class SaltPepper(Noise):
    """A fraction p of pixels set to 0 or 1, half each."""

    param = "p"
    family = "impulse"

    def __init__(self, p: Level = 0.1):
        super().__init__(self.checked(p))

    def corrupt(self, clean, level, generator):
        hit = _uniform(clean, generator) < level
        salt = (_uniform(clean, generator) < 0.5).to(clean.dtype)
        return Corruption(torch.where(hit, salt, clean))


@NOISES.register("impulse")
class Impulse(Noise):
    """Random-valued impulse noise: a fraction p of pixels replaced by U(0, 1)."""

    param = "p"
    family = "impulse"

    def __init__(self, p: Level = 0.5):
        super().__init__(self.checked(p))

    def corrupt(self, clean, level, generator):
        hit = _uniform(clean, generator) < level
        return Corruption(torch.where(hit, _uniform(clean, generator), clean))


@NOISES.register("uniform_blend")
class UniformBlend(Noise):
    """x * (1 - a) + U(0, 1) * a, the simple corruption many tutorials use."""

    param = "amount"

    def __init__(self, amount: Level = 0.3):
        super().__init__(self.checked(amount))

    def corrupt(self, clean, level, generator):
        return Corruption(clean * (1 - level) + _uniform(clean, generator) * level)


# -- text overlay --------------------------------------------------------------------------------
# Glyphs are rendered once with PIL's bundled font into an atlas. An overlay is a sequence of
# rounds; in each round every image gets one string of glyphs at a random place in a random colour.
# Rounds are drawn in chunks, all images at once: one scatter (amin) records, per pixel, the first
# round whose string covers it. An image's coverage after r rounds is then the share of pixels
# whose first round is below r, so each image stops at the first round that reaches its target,
# found with a cumulative sum, and a pixel shows the colour of the first string that covered it.
# No host sync per round: one per chunk (are all images covered?), usually a single chunk.
# Coverage lands within TEXT_TOLERANCE above the target (at most one string's worth of overshoot).
TEXT_TOLERANCE = 0.02
_ALPHABET = string.ascii_letters + string.digits


@lru_cache(maxsize=4)
def _glyph_atlas(size: int) -> torch.Tensor:
    """[N, h, w] bool masks of the alphabet's glyphs in PIL's default font."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the bitmap font
        font = ImageFont.load_default()
    boxes = [font.getbbox(ch) for ch in _ALPHABET]
    h = max(b[3] for b in boxes) + 1
    w = max(b[2] for b in boxes) + 1
    masks = []
    for ch in _ALPHABET:
        img = Image.new("L", (w, h), 0)
        ImageDraw.Draw(img).text((0, 0), ch, fill=255, font=font)
        masks.append(torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(h, w) > 127)
    return torch.stack(masks)


@NOISES.register("text")
class TextOverlay(Noise):
    """Random strings drawn over the image in random colours until `coverage` of pixels is covered."""

    param = "coverage"
    family = "impulse"
    bounds = (0.0, 1.0, False, True)

    def __init__(self, coverage: Level = 0.25, font_size: int = 10, max_rounds: int = 400, chunk: int = 32):
        super().__init__(self.checked(coverage))
        self.font_size, self.max_rounds, self.chunk = font_size, max_rounds, chunk

    def _strings(self, b: int, rounds: int, h: int, w: int, atlas: torch.Tensor, generator) -> torch.Tensor:
        """Flat pixel indices [B, rounds * k * gh * gw] of `rounds` random strings per image; pixels of a
        glyph's background or outside the image point at the extra slot h * w."""
        n_glyph, gh, gw = atlas.shape
        dev = atlas.device
        k = max(1, w // (2 * gw))  # glyphs per string: short strings keep the overshoot small
        idx = torch.randint(0, n_glyph, (b, rounds, k), generator=generator, device=dev)
        y0 = torch.randint(-gh // 2, h, (b, rounds, 1), generator=generator, device=dev)
        x0 = torch.randint(-gw, w, (b, rounds, 1), generator=generator, device=dev)
        x0 = x0 + torch.arange(k, device=dev) * gw  # glyphs side by side: a string  [B, R, k]
        yy = y0[..., None, None] + torch.arange(gh, device=dev).view(gh, 1)  # [B, R, 1, gh, 1]
        xx = x0[..., None, None] + torch.arange(gw, device=dev).view(1, gw)  # [B, R, k, 1, gw]
        ink = atlas[idx] & (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)  # [B, R, k, gh, gw]
        return torch.where(ink, yy * w + xx, h * w).flatten(1)

    def corrupt(self, clean, level, generator):
        b, c, h, w = clean.shape
        dev = clean.device
        atlas = _glyph_atlas(self.font_size).to(dev)
        per_string = max(1, w // (2 * atlas.shape[2])) * atlas.shape[1] * atlas.shape[2]
        target = level.view(b, 1) * (h * w)  # pixels to cover, per image
        never = self.max_rounds
        first = torch.full((b, h * w + 1), never, dtype=torch.long, device=dev)  # first round covering a pixel
        colours = []
        for start in range(0, self.max_rounds, self.chunk):
            rounds = min(self.chunk, self.max_rounds - start)
            flat = self._strings(b, rounds, h, w, atlas, generator)
            which = (start + torch.arange(rounds, device=dev)).repeat_interleave(per_string).expand(b, -1)
            first.scatter_reduce_(1, flat, which, reduce="amin")
            colours.append(torch.rand((b, rounds, c), generator=generator, device=dev, dtype=clean.dtype))
            drawn = start + rounds
            if bool(((first[:, :-1] < drawn).sum(1, keepdim=True) >= target).all()):  # one sync per chunk
                break
        first = first[:, :-1]  # [B, H*W]
        # covered pixels after rounds 0..r, per image; the rounds an image uses: up to the first that reaches its target
        hist = torch.zeros(b, drawn + 1, device=dev).scatter_add_(1, first.clamp(max=drawn), torch.ones_like(first, dtype=torch.float))
        cum = hist[:, :drawn].cumsum(1)
        used = torch.where(target > 0, (cum < target).sum(1, keepdim=True) + 1, 0).clamp(max=drawn)  # [B, 1]
        covered = first < used  # [B, H*W]
        rgb = torch.cat(colours, 1)  # [B, rounds, C]
        colour = rgb.gather(1, first.clamp(max=drawn - 1).unsqueeze(-1).expand(b, h * w, c))  # [B, H*W, C]
        colour = colour.transpose(1, 2).reshape(b, c, h, w)
        return Corruption(torch.where(covered.view(b, 1, h, w), colour, clean))


@NOISES.register("real")
class Real(Noise):
    """Real noise, no model: the noisy images are the captures of `dataset: pairs:PATH`.

    Its images arrive as views stacked along the channels (`denoise_core.data.views`): view 0 the clean image,
    views 1.. the captures; a trial takes its noisy inputs from the captures, never from this object."""

    param = ""
    captured = True
    family = "real"  # camera noise: no Gaussian sigma, no impulses; the baselines that need no model apply

    def __init__(self):
        super().__init__((0.0, 0.0))

    def corrupt(self, clean, level, generator):
        raise ValueError("noise 'real' has no model to draw from: its noisy images are the captures of "
                         "`dataset: pairs:PATH`")

    def __repr__(self) -> str:
        return "Real()"
