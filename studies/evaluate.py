"""`denoise-study evaluate`: the classical baselines, and a study's best models, on any test set under the
literature's protocol (`denoise_core.protocol`), beside the published rows of the same set, noise and level.

    rows = evaluate("Set12", root, "gaussian:sigma=25")      # [Row(method, test_set, noise, images, psnr, ssim, published)]

No Ray: it reads image files and, with a study, its stored best checkpoints.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

COLUMNS = ("method", "test_set", "noise", "images", "channels", "psnr", "ssim", "published")
METHOD_NAMES = {("bm3d", 1): "BM3D", ("bm3d", 3): "CBM3D", ("noisy", 1): "noisy input", ("noisy", 3): "noisy input"}


@dataclass
class Row:
    method: str
    test_set: str
    noise: str
    images: int
    channels: str  # grey or colour: what the images were scored as
    psnr: float
    ssim: float
    published: str = ""  # "29.97 (DnCNN paper, Table II)" where a published row matches


def parse_noise(text: str):
    """'gaussian:sigma=25' -> (name, {"sigma": 25.0}) and the noise model; a ValueError names what is wrong."""
    from denoise_core.noise import NOISES, build_noise

    name, _, rest = text.partition(":")
    params = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"--noise {text!r}: expected NAME:param=value[,param=value], e.g. gaussian:sigma=25")
        try:
            params[key.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--noise {text!r}: {key.strip()}={value!r} is not a number") from None
    NOISES.check(name)
    level = NOISES.get(name).param
    if level and level not in params:
        raise ValueError(f"--noise {text!r}: give the level, e.g. {name}:{level}=...")
    try:
        noise = build_noise(name, **params)
        if level:  # one fixed level to score at: within the noise's own bounds, and some noise
            NOISES.get(name).check_test_level(params[level])
    except ValueError as e:
        raise ValueError(f"--noise {text!r}: {e}") from None
    return name, params, noise


def published(method: str, test_set: str, noise: str, level: float | None, metric: str = "psnr"):
    """The catalog's published row for this method, set, noise and level, if any."""
    from studies.spec import published_rows

    for r in published_rows():
        if (r.method, r.test_set, r.noise, r.metric) == (method, test_set, noise, metric) and r.level == level:
            return r
    return None


def evaluate(test_set: str, root: str | None, noise_text: str, channels: int | None = None, seed: int = 0,
             models: dict[str, object] | None = None, progress: Callable[[str], None] = lambda line: None) -> list[Row]:
    """Score the protocol's baselines (and `models`: {name: (model, config)}) on every image of `test_set`."""
    import torch

    from denoise_core.baselines import score_set
    from denoise_core.data import check_source, load_whole, own_channels
    from denoise_core.noise import NOISES
    from denoise_core.protocol import apply_whole, score_images, test_inputs
    from denoise_core.sources import has_captures, scenes_without_clean

    name, params, noise = parse_noise(noise_text)
    if noise.captured != has_captures(test_set)[0]:
        raise ValueError(f"--noise {noise_text!r} on --test {test_set!r}: real noise (--noise real) and a pairs:PATH "
                         f"set of noisy captures go together")
    check_source(test_set, root, channels or 1, parts=("all",))
    if missing := scenes_without_clean(test_set, "all"):  # as `run` refuses them for validation and test
        raise ValueError(f"--test {test_set!r}: {len(missing)} scene(s) have no clean image (clean.png) to score "
                         f"against ({', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''})")
    channels = channels or own_channels(test_set, root)
    images, _ = load_whole(test_set, root, "all", channels)
    clean, noisy = test_inputs(noise, images, seed, channels)
    level = params.get(NOISES.get(name).param)
    started = time.time()

    def tick(method, i, n):
        progress(f"{method}: {i}/{n} images ({time.time() - started:.0f} s)")

    rows = []
    for method, scores in score_set(clean, noisy, noise, progress=tick).items():
        label = METHOD_NAMES.get((method, channels), method)
        rows.append(_row(label, test_set, noise_text, channels, scores, published(label, test_set, name, level)))
    for label, (model, cfg) in (models or {}).items():
        from denoise_core.tasks import get_task

        task = get_task(cfg.task)
        sigma = noise.gaussian_sigma * 255 if noise.gaussian_sigma is not None else None
        with torch.no_grad():
            out = apply_whole(lambda x: task.apply(model, cfg, x, sigma), noisy, getattr(model, "size_multiple", 1))
        rows.append(_row(label, test_set, noise_text, channels, score_images(out, clean), None))
        progress(f"{label}: {len(clean)} images ({time.time() - started:.0f} s)")
    return rows


def _row(method, test_set, noise_text, channels, scores, ref) -> Row:
    return Row(method, test_set, noise_text, int(len(scores["psnr"])), "colour" if channels == 3 else "grey",
               round(float(scores["psnr"].mean()), 2),
               round(float(scores["ssim"].mean()), 4), f"{ref.value:.2f} ({ref.source})" if ref else "")


def study_models(sdir: Path, cell: str | None) -> dict:
    """{'study NAME, cell': (model, config)} for one cell (--cell), or every cell with a stored best model."""
    from studies.apply import pick_cell
    from studies.cells import cell_label, parse_cell
    from studies.store import best_cells, best_dir

    from denoise_core.tasks import load_model

    cells = [pick_cell(sdir, cell)] if cell else sorted(best_cells(sdir))
    if not cells:
        raise ValueError(f"study {sdir.name!r} has no finished confirm runs to take a model from")
    return {f"{sdir.name} ({cell_label(parse_cell(c))})": load_model(best_dir(sdir, c) / "model.pt") for c in cells}


def table(rows: list[Row]) -> str:
    """The rows as an aligned text table."""
    cells = [list(COLUMNS)] + [[str(v) for v in asdict(r).values()] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip() for c in cells)


def write_csv(rows: list[Row], path: Path) -> None:
    import csv
    import io

    from studies.store import write_atomic

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS)
    w.writeheader()
    for r in rows:
        w.writerow(asdict(r))
    write_atomic(path, buf.getvalue())
