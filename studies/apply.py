"""Apply a study's best model to a user's image file (reads the store; no Ray).

The model must suit the image's noise: with `--noise NAME` the best cell among those trained on that
noise is used; with `--cell` that cell; with neither, the study must have trained on one noise only,
else the user is asked to choose (the error lists the cells and noises). Grayscale comes back
grayscale and RGB comes back RGB: a one-channel model denoises each colour channel on its own.
"""
from __future__ import annotations

from pathlib import Path

from studies.cells import cell_label, parse_cell
from studies.store import best_cells, best_dir, read_spec


def _noise_of(records, cell: str) -> str:
    """The noise a cell's models were trained on (a task without a noise model, a DDPM, learns Gaussian noise)."""
    from denoise_core.tasks import validate_config

    config = next((r.config for r in records if r.cell == cell), {})
    return str(getattr(validate_config(config), "noise", "gaussian"))


def pick_cell(sdir: Path, cell: str | None = None, noise: str | None = None) -> str:
    """The named cell; else the best-scoring cell trained on `noise`; else the best cell when the study
    trained on one noise only. A ValueError (the user's choice is wrong or missing) names the options."""
    best = best_cells(sdir)
    if not best:
        raise ValueError(f"study {sdir.name!r} has no finished confirm runs to take a model from")
    if cell is not None:
        wanted = _as_cell(cell)
        match = [c for c in best if parse_cell(c) == wanted]
        if not match and set(wanted) == set((spec := read_spec(sdir)).compare) and spec.excluded(wanted):
            raise ValueError(f"cell {cell!r} is excluded from study {sdir.name!r} ({spec.why_excluded(wanted)}), so it "
                             f"has no model; cells with a model: {'; '.join(cell_label(parse_cell(c)) for c in sorted(best))}")
        if not match:
            raise ValueError(f"unknown cell {cell!r}; cells with a model: {'; '.join(cell_label(parse_cell(c)) for c in sorted(best))}")
        return match[0]
    from studies.store import read_records

    records = read_records(sdir)
    noises = {c: _noise_of(records, c) for c in best}
    if noise is not None:
        candidates = [c for c in best if noises[c] == noise or parse_cell(c).get("noise") == noise]
        if not candidates:
            raise ValueError(f"no cell of study {sdir.name!r} was trained on noise {noise!r}; "
                             f"its noises: {', '.join(sorted(set(noises.values())))}")
    elif len(set(noises.values())) > 1:
        raise ValueError(f"study {sdir.name!r} trained on several noises ({', '.join(sorted(set(noises.values())))}): "
                         f"pass --noise NAME for the best model of that noise, or --cell, one of: "
                         f"{'; '.join(cell_label(parse_cell(c)) for c in sorted(best))}")
    else:
        candidates = list(best)
    spec = read_spec(sdir)
    return max(candidates, key=lambda c: spec.sign * (best[c].score(spec.metric) or -spec.sign * float("inf")))


def _as_cell(text: str) -> dict[str, str]:
    """A cell as the user typed it: 'noise=impulse,loss=l0' or the report's 'noise=impulse, loss=l0'."""
    try:
        return {k.strip(): v.strip() for k, v in parse_cell(text).items()}
    except ValueError:
        raise ValueError(f"--cell {text!r}: expected factor=level[,factor=level ...]") from None


def read_for_denoise(path: Path):
    """An image file as ([C, H, W] float in [0, 1] with C 1 or 3, alpha [H, W] as stored or None, bits 8 or
    16): grey stays grey (1-bit, grey+alpha and 16-bit included), the alpha channel is kept aside."""
    import numpy as np
    from PIL import Image

    from denoise_core.data import read_image

    img = read_image(path)[:3]  # [C, H, W]: C 1 or 3 (alpha, read as a fourth channel, dropped here); a bad file
    with Image.open(path) as im:  # is refused by read_image first, with one line naming it
        mode = im.mode
        alpha = np.asarray(im.getchannel("A")) if mode in ("LA", "RGBA", "PA") else None
        if mode == "P":
            alpha = np.asarray(im.convert("RGBA").getchannel("A")) if "transparency" in im.info else None
    bits = 16 if mode in ("I;16", "I;16B", "I;16L", "I") else 8
    if mode in ("LA", "1", "I;16", "I;16B", "I;16L", "I"):  # grey, though read_image may give RGB(A)
        img = img[:1]
    return img, alpha, bits


def write_like_input(path: Path, y, alpha, bits: int) -> None:
    """[C, H, W] in [0, 1] as the input was stored: 16-bit grey as 16-bit, alpha carried through unchanged."""
    import numpy as np
    from PIL import Image

    a = y.detach().float().clamp(0, 1).cpu().permute(1, 2, 0).numpy()  # [H, W, C]
    if bits == 16 and a.shape[-1] == 1:
        Image.fromarray((a[..., 0] * 65535).round().astype(np.uint16)).save(path)
        return
    a8 = (a * 255).round().astype(np.uint8)
    if alpha is not None:
        a8 = np.concatenate([a8, alpha[..., None].astype(np.uint8)], -1)
    Image.fromarray(a8[..., 0] if a8.shape[-1] == 1 else a8).save(path, optimize=True)


def denoise_file(sdir: Path, cell: str | None, inp: Path, out: Path, sigma: float | None = None,
                 noise: str | None = None, warn=lambda line: None) -> str:
    """Denoise one image file with a cell's best model; returns the cell used. The task decides how
    (a DDPM needs the noise level `sigma`, 0-255 scale). Errors about the input are ValueErrors; what
    the user should know but is not an error (an unused flag, padding) goes to `warn`."""
    import torch

    from denoise_core.data import to_channels
    from denoise_core.protocol import pad_to_multiple
    from denoise_core.tasks import get_task, load_model

    chosen = pick_cell(sdir, cell, noise)
    model, cfg = load_model(best_dir(sdir, chosen) / "model.pt")
    task = get_task(cfg.task)
    if task.needs_sigma and sigma is None:
        raise ValueError(f"a {cfg.task} model denoises noise of a known level: pass --sigma (0-255 scale)")
    if not task.needs_sigma and sigma is not None:
        warn(f"warning: --sigma is not used: a {cfg.task} model takes the noisy image alone")
    img, alpha, bits = read_for_denoise(inp)  # [C, H, W]
    if not out.parent.is_dir():
        raise ValueError(f"-o {str(out)!r}: the folder {str(out.parent)!r} does not exist (it is not created)")
    c_in = img.shape[0]
    # a one-channel model takes each colour channel as an image; a colour model takes gray as three equal channels
    x = img[:, None] if cfg.channels == 1 else to_channels(img, 3)[None]  # [B, C, H, W]
    h, w = x.shape[-2:]
    x, how = pad_to_multiple(x, getattr(model, "size_multiple", 1))
    if how == "replicate":
        warn(f"note: the {w}x{h} image is smaller than the model's size multiple; it was padded by repeating its "
             f"edge and cropped back")
    with torch.no_grad():
        y = task.apply(model, cfg, x, sigma).clamp(0, 1)[..., :h, :w]
    y = y[:, 0] if cfg.channels == 1 else (y[0] if c_in == 3 else to_channels(y[0], 1))  # [c_in, H, W]
    write_like_input(out, y, alpha, bits)
    return chosen


def denoise_file_zero_shot(method: str, inp: Path, out: Path, seed: int = 0, fit_steps: int | None = None,
                           say=lambda line: None) -> float:
    """Denoise one image file with a single-image method (a zero-shot scheme: its network fitted on this image
    alone, in the image's own channels); returns the seconds the fit took. Errors about the input are ValueErrors,
    raised before the fit starts (and before `say` hears that it does)."""
    from types import SimpleNamespace

    from denoise_core.schemes import zero_shot_scheme

    img, alpha, bits = read_for_denoise(inp)  # [C, H, W]
    if not out.parent.is_dir():
        raise ValueError(f"-o {str(out)!r}: the folder {str(out.parent)!r} does not exist (it is not created)")
    scheme = zero_shot_scheme(method)
    scheme.check_size(img[None])
    say(f"fitting {scheme.label} on {inp} ({img.shape[-1]}x{img.shape[-2]}) ...")
    y = scheme.infer(None, img[None], SimpleNamespace(seed=seed, fit_steps=fit_steps))[0]
    write_like_input(out, y, alpha, bits)
    return sum(scheme.take_seconds())

