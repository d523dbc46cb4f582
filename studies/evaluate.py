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

COLUMNS = ("method", "test_set", "noise", "images", "channels", "psnr", "ssim", "seconds_per_image", "published", "note")
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
    seconds_per_image: float = 0.0  # wall time of denoising one image (a zero-shot method's whole fit)
    published: str = ""  # "29.97 (DnCNN paper, Table II)" where a published row matches
    note: str = ""  # a study's model scored under a noise or level it was not trained on says so


@dataclass
class StudyModel:
    """A study's best model of one cell, its trial config, and the study's published network rows set beside it."""

    model: object
    config: object
    references: list  # studies.spec.Reference: the spec's network rows whose `where` holds this cell


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
        if level:  # one fixed level to score at: within the test bounds (one wording whatever the value), and some noise
            NOISES.get(name).check_test_level(params[level])
        noise = build_noise(name, **params)
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
             models: dict[str, object] | None = None, progress: Callable[[str], None] = lambda line: None,
             methods: tuple[str, ...] = (), fit_steps: int | None = None) -> list[Row]:
    """Score the protocol's baselines, the single-image `methods` (zero-shot schemes, fitted on each image with the
    network initialised at `seed`, for `fit_steps` steps at most where given, else as published), and `models`
    ({name: (model, config)}) on every image of `test_set`."""
    from denoise_core.data import check_source, load_whole, own_channels
    from denoise_core.noise import NOISES
    from denoise_core.protocol import test_inputs
    from denoise_core.schemes import zero_shot_scheme
    from denoise_core.sources import has_captures, scenes_without_clean

    name, params, noise = parse_noise(noise_text)
    zero_shot = [zero_shot_scheme(m, noise) for m in methods]
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
    s = _Scoring(test_set, noise_text, name, params.get(NOISES.get(name).param), channels, noise, clean, noisy,
                 progress, time.time())
    rows = _baseline_rows(s)
    rows += [_zero_shot_row(s, scheme, seed, fit_steps) for scheme in zero_shot]
    rows += [_model_row(s, label, m) for label, m in (models or {}).items()]
    return rows


@dataclass
class _Scoring:
    """One `evaluate` call's test set, noise and images, that each method's row is scored on."""

    test_set: str
    noise_text: str
    name: str  # the noise's registered name
    level: float | None
    channels: int
    noise: object
    clean: list
    noisy: list
    progress: Callable[[str], None]
    started: float

    def tick(self, method: str, i: int, n: int) -> None:
        self.progress(f"{method}: {i}/{n} images ({time.time() - self.started:.0f} s)")

    def row(self, label: str, scores, ref) -> Row:
        return _row(label, self.test_set, self.noise_text, self.channels, scores, ref)


def _baseline_rows(s: _Scoring) -> list[Row]:
    from denoise_core.baselines import score_set

    rows = []
    for method in ("noisy", "bm3d"):
        t0 = time.time()
        for method, scores in score_set(s.clean, s.noisy, s.noise, names=(method,), progress=s.tick).items():
            label = METHOD_NAMES.get((method, s.channels), method)
            row = s.row(label, scores, published(label, s.test_set, s.name, s.level))
            row.seconds_per_image = round((time.time() - t0) / len(s.clean), 3)
            rows.append(row)
    return rows


def _zero_shot_row(s: _Scoring, scheme, seed: int, fit_steps: int | None) -> Row:
    """A single-image method fitted on each image in turn; its published row only where it was fitted as published."""
    from types import SimpleNamespace

    from denoise_core.protocol import quantize, score_images

    outputs, seconds = [], []
    for i, x in enumerate(s.noisy):
        outputs.append(quantize(scheme.infer(None, x[None], SimpleNamespace(seed=seed, fit_steps=fit_steps))[0]))
        seconds += scheme.take_seconds()
        s.tick(scheme.name, i + 1, len(s.noisy))
    row = s.row(scheme.label, score_images(outputs, s.clean),
                published(scheme.label, s.test_set, s.name, s.level) if fit_steps is None else None)
    row.note = f"fitted {fit_steps} steps at most, not as published" if fit_steps is not None else ""
    row.seconds_per_image = round(sum(seconds) / len(seconds), 3)
    return row


def _model_row(s: _Scoring, label: str, m: StudyModel) -> Row:
    """A study's stored best model on the whole images, beside the study's own published rows for this set and noise."""
    import torch

    from denoise_core.protocol import apply_whole, score_images
    from denoise_core.tasks import get_task

    task, cfg = get_task(m.config.task), m.config
    sigma = s.noise.gaussian_sigma * 255 if s.noise.gaussian_sigma is not None else None
    t0 = time.time()
    with torch.no_grad():
        out = apply_whole(lambda x: task.apply(m.model, cfg, x, sigma), s.noisy, getattr(m.model, "size_multiple", 1))
    took = (time.time() - t0) / len(s.clean)
    refs = [r for r in m.references if (r.test_set, r.noise, r.metric) == (s.test_set, s.name, "psnr")
            and r.level == s.level]
    row = s.row(label, score_images(out, s.clean), None)
    row.published = "; ".join(f"{r.value:.2f} ({r.method}, {r.source})" for r in refs)
    row.note = untrained_note(cfg, s.name, s.level)
    row.seconds_per_image = round(took, 3)
    s.progress(f"{label}: {len(s.clean)} images ({time.time() - s.started:.0f} s)")
    return row


def untrained_note(cfg, noise: str, level: float | None) -> str:
    """What a model is scored on that it was not trained on (another noise, or a level outside its training range),
    in words for the table; "" when it was trained on this noise at this level.

    >>> from types import SimpleNamespace as C
    >>> untrained_note(C(noise="poisson", noise_params={"lam": 30}), "gaussian", 25.0)
    'trained on Poisson(lam=30.0), not on gaussian'
    >>> untrained_note(C(noise="gaussian", noise_params={"sigma": [0, 50]}), "gaussian", 25.0)
    ''
    >>> untrained_note(C(noise="gaussian", noise_params={"sigma": 15}), "gaussian", 25.0)
    'trained at sigma=15, not at 25'
    """
    from denoise_core.noise import NOISES, build_noise

    if getattr(cfg, "noise", None) is None:
        return ""
    trained = build_noise(cfg.noise, **cfg.noise_params)
    if cfg.noise != noise:
        return f"trained on {trained!r}, not on {noise}"
    lo, hi = trained.level
    if level is not None and not lo <= level <= hi:
        at = f"{lo:g}" if lo == hi else f"{lo:g} to {hi:g}"
        return f"trained at {NOISES.get(noise).param}={at}, not at {level:g}"
    return ""


def _row(method, test_set, noise_text, channels, scores, ref) -> Row:
    return Row(method, test_set, noise_text, int(len(scores["psnr"])), "colour" if channels == 3 else "grey",
               round(float(scores["psnr"].mean()), 2),
               round(float(scores["ssim"].mean()), 4), f"{ref.value:.2f} ({ref.source})" if ref else "")


def study_models(sdir: Path, cell: str | None) -> dict[str, StudyModel]:
    """{'study NAME (cell)': StudyModel} for one cell (--cell), or every cell with a stored best model."""
    from studies.apply import pick_cell
    from studies.cells import cell_label, in_slice, parse_cell
    from studies.store import best_cells, best_dir, read_spec

    from denoise_core.tasks import load_model

    cells = [pick_cell(sdir, cell)] if cell else sorted(best_cells(sdir))
    if not cells:
        raise ValueError(f"study {sdir.name!r} has no finished confirm runs to take a model from")
    refs = [r for r in read_spec(sdir).references if r.baseline is None]  # the network rows, not the baselines'
    return {f"{sdir.name} ({cell_label(parse_cell(c))})":
            StudyModel(*load_model(best_dir(sdir, c) / "model.pt"), [r for r in refs if in_slice(parse_cell(c), r.where)])
            for c in cells}


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
