"""Apply a study's best model to a user's image file."""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F


def pick_cell(sdir: Path, cell: str | None) -> str:
    best = {}
    for p in (sdir / "best").glob("*/trial.json"):
        info = json.loads(p.read_text())
        best[info["cell"]] = info
    if not best:
        raise ValueError(f"study {sdir.name!r} has no finished confirm runs to take a model from")
    if cell is not None:
        if cell not in best:
            raise ValueError(f"unknown cell {cell!r}; cells with a model: {'; '.join(sorted(best))}")
        return cell
    spec = json.loads((sdir / "study.json").read_text())["spec"]
    sign = 1 if spec["mode"] == "max" else -1
    return max(best, key=lambda c: sign * best[c][spec["metric"]])


def denoise_file(sdir: Path, cell: str | None, inp: Path, out: Path, sigma: float | None = None) -> str:
    """Denoise one image file with a cell's best model. A DDPM cell needs the noise level `sigma`
    (0-255 scale): it denoises by one x0 prediction from the matching timestep."""
    from denoise_core.data import _read_image, _to_channels
    from denoise_core.models import build_model

    chosen = pick_cell(sdir, cell)
    from studies.runner import best_dir

    ckpt = torch.load(best_dir(sdir, chosen) / "model.pt", weights_only=True, map_location="cpu")
    cfg = ckpt["config"]
    if cfg.get("task") == "ddpm" and sigma is None:
        raise ValueError("a DDPM denoises Gaussian noise of a known level: pass --sigma (0-255 scale)")
    model = build_model(cfg["model"], cfg["channels"], **cfg["model_params"])
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    img = _read_image(inp)  # [C, H, W]
    c_in = img.shape[0]
    x = _to_channels(img, cfg["channels"])[None]
    h, w = x.shape[-2:]
    m = getattr(model, "size_multiple", 1)
    x = F.pad(x, (0, -w % m, 0, -h % m), mode="reflect") if (h % m or w % m) else x
    with torch.no_grad():
        if cfg.get("task") == "ddpm":
            from denoise_core.ddpm_train import denoise_image
            from denoise_core.diffusion import GaussianDiffusion, build_schedule

            d = GaussianDiffusion(build_schedule(cfg["schedule"], cfg["timesteps"], **cfg["schedule_params"]),
                                  cfg["prediction"])
            y = denoise_image(d, model, x, sigma)
        else:
            y = model(x)
        y = y.clamp(0, 1)[..., :h, :w]
    if cfg["channels"] == 1 and c_in >= 3:
        y = y.expand(1, 3, h, w)
    from torchvision.utils import save_image

    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(y, str(out))
    return chosen
