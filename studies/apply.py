"""Apply a study's best model to a user's image file (reads the store; no Ray)."""
from __future__ import annotations

from pathlib import Path

from studies.store import best_cells, best_dir, read_spec


def pick_cell(sdir: Path, cell: str | None) -> str:
    """The named cell, or the cell whose best confirm run scored best."""
    best = best_cells(sdir)
    if not best:
        raise ValueError(f"study {sdir.name!r} has no finished confirm runs to take a model from")
    if cell is not None:
        if cell not in best:
            raise ValueError(f"unknown cell {cell!r}; cells with a model: {'; '.join(sorted(best))}")
        return cell
    spec = read_spec(sdir)
    sign = 1 if spec.mode == "max" else -1
    return max(best, key=lambda c: sign * best[c][spec.metric])


def denoise_file(sdir: Path, cell: str | None, inp: Path, out: Path, sigma: float | None = None) -> str:
    """Denoise one image file with a cell's best model; returns the cell used. The task decides how
    (a DDPM needs the noise level `sigma`, 0-255 scale). Errors about the input are ValueErrors."""
    import torch
    import torch.nn.functional as F
    from torchvision.utils import save_image

    from denoise_core.data import read_image, to_channels
    from denoise_core.tasks import TASKS, load_model

    chosen = pick_cell(sdir, cell)
    model, cfg = load_model(best_dir(sdir, chosen) / "model.pt")
    task = TASKS.get(cfg.task)
    if task.needs_sigma and sigma is None:
        raise ValueError(f"a {cfg.task} model denoises noise of a known level: pass --sigma (0-255 scale)")
    img = read_image(inp)  # [C, H, W]
    c_in = img.shape[0]
    x = to_channels(img, cfg.channels)[None]
    h, w = x.shape[-2:]
    m = getattr(model, "size_multiple", 1)
    x = F.pad(x, (0, -w % m, 0, -h % m), mode="reflect") if (h % m or w % m) else x
    with torch.no_grad():
        y = task.apply(model, cfg, x, sigma).clamp(0, 1)[..., :h, :w]
    if cfg.channels == 1 and c_in >= 3:
        y = y.expand(1, 3, h, w)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(y, str(out))
    return chosen
