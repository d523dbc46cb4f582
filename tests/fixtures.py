"""Generated image sets laid out like the literature's standard sets (a folder of that name under a data root,
the set's image count, sizes within its range), so the tests never need ../shared/data/benchmarks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def picture(h: int, w: int, seed: int, colour: bool = False) -> np.ndarray:
    """A smooth 8-bit picture with edges and texture: something a denoiser can be scored on."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    fx, fy, phase = rng.uniform(2, 9, 3)
    base = 0.5 + 0.3 * np.sin(2 * np.pi * (fx * x + phase)) * np.cos(2 * np.pi * fy * y)
    base += 0.2 * ((x + y * rng.uniform(0.5, 2)) % 0.25 > 0.125)  # stripes: edges
    if colour:
        base = np.stack([base, np.roll(base, 7, 0), np.roll(base, 11, 1)], -1)
    return (np.clip(base, 0, 1) * 255).round().astype(np.uint8)


def standard_set(root: Path, name: str, count: int | None = None) -> Path:
    """`root/name/` with the set's own image count (or `count`), each at the smallest size the set allows."""
    from denoise_core.sources import STANDARD

    s = STANDARD[name]
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    side = s.sides[0]
    for i in range(s.count if count is None else count):
        Image.fromarray(picture(side, side + (i % 2) * min(16, s.sides[1] - side), i, s.colour)).save(
            folder / f"{i + 1:03d}.png")
    return folder


def image_folder(path: Path, count: int, sizes=((48, 40), (40, 56)), colour: bool = False) -> Path:
    """A folder of `count` small pictures, of the given sizes in turn (whole images of different shapes)."""
    path.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        h, w = sizes[i % len(sizes)]
        Image.fromarray(picture(h, w, 100 + i, colour)).save(path / f"img{i:02d}.png")
    return path


def camera_capture(img: np.ndarray, rng, peak: float = 60.0, read_sigma: float = 0.02) -> np.ndarray:
    """One noisy capture of an 8-bit picture: shot noise at `peak` photons for white plus read noise of `read_sigma`,
    rounded to 8 bits as a camera writes it."""
    x = img.astype(np.float64) / 255
    noisy = rng.poisson(x * peak) / peak + rng.normal(0, read_sigma, x.shape)
    return (np.clip(noisy, 0, 1) * 255).round().astype(np.uint8)


def noisy_folder(path: Path, count: int, size=(64, 64), seed: int = 1) -> Path:
    """`path/` laid out as `noisy:PATH` reads it: one noisy capture of each of `count` pictures, no clean images
    (pictures of their own, none of `pair_scenes`')."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(camera_capture(picture(*size, 500 + i), rng)).save(path / f"shot{i:02d}.png")
    return path


def pair_scenes(path: Path, scenes: int, captures: int = 2, size=(40, 48), colour: bool = False, clean: bool = True,
                peak: float = 60.0, read_sigma: float = 0.02, seed: int = 0) -> Path:
    """`path/sceneNN/` laid out as `pairs:PATH` reads it: clean.png (unless `clean` is False) and `captures` noisy
    captures of it, each an independent Poisson-Gaussian draw (shot noise at `peak` photons for white, plus
    read noise of `read_sigma`), rounded to 8 bits as a camera writes them."""
    rng = np.random.default_rng(seed)
    for i in range(scenes):
        scene = path / f"scene{i:02d}"
        scene.mkdir(parents=True, exist_ok=True)
        img = picture(*size, 200 + i, colour)
        if clean:
            Image.fromarray(img).save(scene / "clean.png")
        for k in range(captures):
            Image.fromarray(camera_capture(img, rng, peak, read_sigma)).save(scene / f"capture{k}.png")
    return path
