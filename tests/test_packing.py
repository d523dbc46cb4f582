"""GPU packing: the default share and the memory-fit warning (pure functions, no GPU needed)."""

from studies.packing import fit_warning, gpu_share, probe_configs
from studies.spec import load_spec

GIB = 2 ** 30


def test_share_comes_from_the_flag_then_the_budget_then_the_default_when_there_are_gpus():
    assert gpu_share(0.5, 0.25, "full", cluster_gpus=8) == 0.5
    assert gpu_share(None, 0.125, "full", cluster_gpus=8) == 0.125
    assert gpu_share(None, None, "quick", cluster_gpus=1) == 0.25
    assert gpu_share(None, None, "quick", cluster_gpus=0) == 0.0  # a CPU machine runs trials on CPUs
    assert gpu_share(0.0, None, "quick", cluster_gpus=4) == 0.0  # an explicit 0 keeps trials on CPUs


def test_fit_warning_only_when_the_share_is_too_small():
    assert fit_warning(5 * GIB, 80 * GIB, 0.25) is None  # 5 GiB in a 20 GiB quarter
    w = fit_warning(int(7.5 * GIB), 24 * GIB, 0.25, "NVIDIA A10G")
    # 7.5 GiB needs 7.5 / (24 * 0.9) = 0.35 of the GPU: two per GPU fit, four do not
    assert w == ("warning: one trial peaks at 7.50 GiB of GPU memory, but --gpus-per-trial 0.25 packs 4 trials "
                 "on each 24.0 GiB NVIDIA A10G; use --gpus-per-trial 0.5 (2 per GPU) or more")
    assert "does not fit on one GPU at all" in fit_warning(30 * GIB, 24 * GIB, 0.5)
    assert fit_warning(30 * GIB, 24 * GIB, 1.0) is None  # a whole GPU: the trial itself will say if it cannot run


def test_probe_configs_take_each_shape_once_with_tuned_sizes_at_their_largest():
    arch = load_spec("architectures")
    shapes = probe_configs(arch, "quick", {})
    assert len(shapes) == len({c["model"] for c in shapes})  # one per model: losses etc. share a shape
    ddpm = probe_configs(load_spec("ddpm_schedule"), "full", {})
    assert len(ddpm) == 1 and ddpm[0]["model_params"]["width"] == 24 and ddpm[0]["task"] == "ddpm"

