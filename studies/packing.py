"""GPU packing: how many trials share one GPU, and whether that many fit in its memory.

Most trials are small (28x28 to 64x64 crops, models under a few million parameters), so one
trial leaves a GPU mostly idle; a fraction `--gpus-per-trial` of 0.25 runs four on each GPU.
Before a study starts on GPUs, one trial of each distinct shape (model, width, crop, batch) is
measured on a real GPU of the cluster (a few training steps and one evaluation, peak memory as
reserved by PyTorch's allocator), and the runner warns when the packing does not fit.
"""
from __future__ import annotations

import math

# when the budget names no share and the cluster has GPUs: a quarter GPU per trial. The catalog's
# trials (models under ~1M parameters, batches of 16-128 small crops) need far less than a quarter
# of a 24 GB GPU; rather than trust that, `check_packing` measures each shape's real peak on a GPU of
# the cluster before every study and warns where the share does not fit.
DEFAULT_GPU_SHARE = 0.25
HEADROOM = 0.9  # of a trial's share of memory: CUDA context, allocator fragmentation


def gpu_share(requested: float | None, budget_value: float | None, budget: str, cluster_gpus: float) -> float:
    """The GPU fraction per trial: the flag, else the budget's, else the default when there are GPUs."""
    if requested is not None:
        return requested
    if budget_value is not None:
        return budget_value
    return DEFAULT_GPU_SHARE if cluster_gpus > 0 else 0.0


def fit_warning(peak_bytes: int, total_bytes: int, share: float, device: str = "GPU") -> str | None:
    """One line when a trial peaking at `peak_bytes` does not fit in `share` of a GPU of `total_bytes`."""
    if share >= 1 or peak_bytes <= share * total_bytes * HEADROOM:
        return None
    need = peak_bytes / (total_bytes * HEADROOM)
    per_gpu = math.floor(1 / need) if need <= 1 else 0
    advice = (f"use --gpus-per-trial {1 / per_gpu:g} ({per_gpu} per GPU) or more" if per_gpu >= 1
              else "it does not fit on one GPU at all: lower batch_size or crop")
    gib = 2 ** 30
    return (f"warning: one trial peaks at {peak_bytes / gib:.2f} GiB of GPU memory, but --gpus-per-trial {share:g} "
            f"packs {math.floor(1 / share)} trials on each {total_bytes / gib:.1f} GiB {device}; {advice}")


def probe_configs(spec, budget: str, extra: dict) -> list[dict]:
    """One trial config per distinct memory shape of the study, with tuned sizes at their largest."""
    from studies.spec import set_path

    shapes = {}
    for cell in spec.cells():
        cfg = spec.cell_config(cell, budget, extra)
        for name, p in spec.tune_for(budget).items():
            numeric = [v for v in (p.values or []) if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if p.type == "int" or (p.type == "choice" and numeric and len(numeric) == len(p.values)):
                set_path(cfg, name, int(p.high) if p.type == "int" else max(numeric))
            else:
                set_path(cfg, name, p.middle())
        key = repr([cfg.get(k) for k in ("task", "model", "model_params", "crop", "batch_size", "channels")])
        shapes.setdefault(key, cfg)
    return list(shapes.values())


def check_packing(spec, budget: str, extra: dict, share: float, cpus: float, timeout_s: float = 300) -> list[str]:
    """Measure each shape on a GPU of the cluster; return the warnings (empty when everything fits)."""
    import ray

    if share <= 0:
        return []
    if ray.cluster_resources().get("GPU", 0) == 0:
        return [f"note: --gpus-per-trial {share:g} but the cluster has no GPU now; trials wait for GPU workers"]
    from denoise_core.tasks import measure_step_memory

    probe = ray.remote(num_gpus=share, num_cpus=cpus)(measure_step_memory)
    out = []
    for cfg in probe_configs(spec, budget, extra):
        try:
            m = ray.get(probe.remote({**cfg, "device": "cuda"}), timeout=timeout_s)
        except Exception as e:  # noqa: BLE001 - a failed probe must not stop the study; the trials will tell
            out.append(f"note: could not measure GPU memory of {cfg.get('model')}: {str(e).splitlines()[-1][:200]}")
            continue
        if m and (w := fit_warning(m["peak_bytes"], m["total_bytes"], share, m["device"])):
            out.append(f"{w} ({cfg.get('model')}, crop {cfg.get('crop')}, batch {cfg.get('batch_size')})")
    return out


def slots(cpus: float, gpus: float) -> int:
    """How many trials the cluster holds at once now: its CPUs (or GPUs) over a trial's share."""
    import ray

    have = ray.cluster_resources()
    return int(math.floor(have.get("GPU", 0) / gpus + 1e-9)) if gpus else int(math.floor(have.get("CPU", 0) / cpus + 1e-9))
