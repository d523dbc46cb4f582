"""Schedules, the forward and reverse processes, the likelihood bound, sampling and the DDPM trial."""
import math

import pytest
import torch
from PIL import Image

from denoise_core.diffusion import GaussianDiffusion, build_schedule, discretized_gaussian_log_likelihood
from denoise_core.tasks import validate_config as validate_ddpm_config
from denoise_core.tasks import run_trial

SCHEDULES = ["linear", "cosine", "quadratic", "sigmoid"]


def alpha_bar(name, T):
    return torch.cumprod(1 - build_schedule(name, T), 0)


def test_linear_endpoints_exact_and_scaled_by_1000_over_T():
    b = build_schedule("linear", 1000)
    assert b.dtype == torch.float64 and b[0].item() == 1e-4 and b[-1].item() == 0.02
    b = build_schedule("linear", 100)
    assert b[0].item() == pytest.approx(1e-3, rel=1e-12) and b[-1].item() == pytest.approx(0.2, rel=1e-12)


def test_cosine_alpha_bar_is_the_closed_form_and_betas_are_capped():
    T, s = 1000, 0.008
    b = build_schedule("cosine", T)
    assert b.max().item() <= 0.999 and b[-1].item() == 0.999  # the cap is reached at the very end
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    ab = alpha_bar("cosine", T)
    for t in (1, 10, 250, 500, 900, 990):  # 0-based index t is the paper's t + 1
        assert ab[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)


def test_sigmoid_is_defined_on_alpha_bar():
    T = 1000
    ab = alpha_bar("sigmoid", T)
    # symmetric start/end: alpha-bar crosses one half at the middle of the time axis (Chen 2023, algorithm 1);
    # a sigmoid on beta (as in some libraries) would give a far smaller alpha-bar there
    assert ab[T // 2 - 1].item() == pytest.approx(0.5, abs=1e-12)
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    u = 0.3
    expected = (sig(3) - sig(u * 6 - 3)) / (sig(3) - sig(-3))
    assert ab[int(u * T) - 1].item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("T", [50, 100, 1000])
def test_every_schedule_decreases_from_near_one_to_near_zero(name, T):
    ab = alpha_bar(name, T)
    assert (ab[1:] < ab[:-1]).all()
    assert ab[0].item() > 0.99 and ab[-1].item() < 1e-3
    assert build_schedule(name, T).max().item() <= 0.999


def test_schedule_errors_are_clear():
    with pytest.raises(ValueError, match="unknown schedule 'cosin'; known: cosine, linear, quadratic, sigmoid"):
        build_schedule("cosin", 100)
    for bad in (1, 0, 10.5, "100"):
        with pytest.raises(ValueError, match="T >= 2"):
            build_schedule("linear", bad)
    with pytest.raises(ValueError, match="unknown prediction"):
        GaussianDiffusion(build_schedule("linear", 10), prediction="score")


def test_q_sample_mean_and_variance():
    d = GaussianDiffusion(build_schedule("linear", 1000))
    g = torch.Generator().manual_seed(0)
    n = 200_000
    x0 = torch.full((n, 1), 0.7)
    for t_int in (0, 100, 500, 999):
        t = torch.full((n,), t_int)
        xt = d.q_sample(x0, t, torch.randn(x0.shape, generator=g))
        ab = d.alpha_bar[t_int].item()
        se = math.sqrt((1 - ab) / n)
        assert abs(xt.mean().item() - math.sqrt(ab) * 0.7) < 5 * se
        assert xt.var().item() == pytest.approx(1 - ab, rel=0.02)


def test_posterior_matches_bayes_on_a_1d_gaussian():
    """q(x_{t-1} | x_t, x0) ∝ N(x_{t-1}; sqrt(ab_{t-1}) x0, 1 - ab_{t-1}) N(x_t; sqrt(alpha_t) x_{t-1}, beta_t)."""
    d = GaussianDiffusion(build_schedule("cosine", 200))
    x0, xt = torch.tensor([[0.3]], dtype=torch.float64), torch.tensor([[-0.4]], dtype=torch.float64)
    for t_int in (1, 50, 199):
        ab_prev, alpha, beta = d.alpha_bar[t_int - 1], d.alphas[t_int], d.betas[t_int]
        precision = 1 / (1 - ab_prev) + alpha / beta
        mean = (ab_prev.sqrt() * x0 / (1 - ab_prev) + alpha.sqrt() * xt / beta) / precision
        got_mean, got_var, got_logvar = d.q_posterior(x0, xt, torch.tensor([t_int]))
        assert got_mean.item() == pytest.approx(mean.item(), rel=1e-10)
        assert got_var.item() == pytest.approx((1 / precision).item(), rel=1e-10)
        assert got_logvar.item() == pytest.approx(math.log((1 / precision).item()), rel=1e-10)


def test_eps_x0_v_conversions_round_trip():
    d = GaussianDiffusion(build_schedule("sigmoid", 100))
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.rand(8, 1, 4, 4, generator=g) * 2 - 1, torch.randn(8, 1, 4, 4, generator=g)
    t = torch.randint(0, 100, (8,), generator=g)
    xt = d.q_sample(x0, t, eps)
    torch.testing.assert_close(d.x0_from_eps(xt, t, eps), x0, atol=2e-4, rtol=0)
    torch.testing.assert_close(d.eps_from_x0(xt, t, x0), eps, atol=2e-4, rtol=0)
    torch.testing.assert_close(d.x0_from_v(xt, t, d.v_from(x0, eps, t)), x0, atol=1e-5, rtol=0)


class ConstantX0:
    """A 'network' that predicts x0 = value everywhere (use with prediction='x0')."""

    def __init__(self, value):
        self.value = value

    def __call__(self, x, t):
        return torch.full_like(x, self.value)


def test_vlb_of_the_exact_denoiser_beats_a_model_predicting_zeros():
    c = round(0.6 * 255) / 255 * 2 - 1  # an 8-bit value in [-1, 1]
    x0 = torch.full((4, 1, 8, 8), c)
    d = GaussianDiffusion(build_schedule("linear", 200), prediction="x0")
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    exact = d.bits_per_dim(ConstantX0(c), x0, generator=g())
    zeros = d.bits_per_dim(ConstantX0(0.0), x0, generator=g())
    assert (zeros > exact + 1.0).all()
    # every KL term of the exact denoiser is zero: its bound is the prior term plus the decoder term,
    # the mass of x0's 8-bit bin under N(x0, beta-tilde_2) (the clipped decoder variance)
    std = math.exp(0.5 * d.post_logvar[0].item())
    bin_mass = math.erf(1 / 255 / std / math.sqrt(2))
    expected = d.prior_bpd(x0).mean().item() - math.log2(bin_mass)
    assert exact.mean().item() == pytest.approx(expected, rel=1e-4)


def test_stratified_bound_estimates_the_full_bound():
    c = 0.2
    x0 = torch.full((16, 1, 4, 4), c)
    d = GaussianDiffusion(build_schedule("cosine", 100), prediction="x0")
    model = ConstantX0(0.1)  # a wrong model, so every term contributes
    full = d.bits_per_dim(model, x0, generator=torch.Generator().manual_seed(0)).mean().item()
    est = torch.tensor([d.bits_per_dim(model, x0, generator=torch.Generator().manual_seed(s), timesteps=10)
                        .mean().item() for s in range(400)], dtype=torch.float64)
    se = (est.std() / len(est) ** 0.5).item()  # one estimate's spread is large: 10 strata of a steep bound
    assert se < 0.04 * full  # so the check below resolves a bias of about 12%
    assert abs(est.mean().item() - full) < 3 * se, (est.mean().item(), full, se)


def test_discretized_decoder_is_a_distribution_over_256_levels():
    levels = torch.arange(256, dtype=torch.float64) / 255 * 2 - 1
    for mean, log_scale in ((0.1, -3.0), (-0.95, -2.0), (0.99, -4.0)):
        p = discretized_gaussian_log_likelihood(levels, torch.full_like(levels, mean),
                                                torch.full_like(levels, log_scale)).exp()
        assert p.sum().item() == pytest.approx(1.0, abs=1e-6)


class GaussianPosteriorMean:
    """The exact E[x0 | x_t] when x0 ~ N(mu, s^2): a model with a known answer (prediction='x0')."""

    def __init__(self, d, mu, s):
        self.d, self.mu, self.s = d, mu, s

    def __call__(self, x, t):
        ab = self.d.alpha_bar.to(x.dtype)[t].reshape(-1, 1, 1, 1)
        gain = self.s ** 2 * ab.sqrt() / (ab * self.s ** 2 + 1 - ab)
        return self.mu + gain * (x - ab.sqrt() * self.mu)


def test_ddim_with_eta_1_and_all_steps_is_ancestral_sampling():
    d = GaussianDiffusion(build_schedule("linear", 100), prediction="x0")
    model = GaussianPosteriorMean(d, mu=0.2, s=0.1)
    shape = (20_000, 1, 1, 1)
    anc = d.sample(model, shape, generator=torch.Generator().manual_seed(3), method="ancestral")
    ddim = d.sample(model, shape, generator=torch.Generator().manual_seed(3), method="ddim", steps=100, eta=1.0)
    # the same noise draws give the same chains: the two updates are one formula (DDIM eq. 16 with eta = 1)
    torch.testing.assert_close(ddim, anc, atol=1e-4, rtol=0)
    # independent draws have the same marginal statistics, centred on the data's mean
    other = d.sample(model, shape, generator=torch.Generator().manual_seed(5), method="ddim", steps=100, eta=1.0)
    se = anc.std().item() / math.sqrt(shape[0])
    assert abs(other.mean().item() - anc.mean().item()) < 5 * math.sqrt(2) * se
    assert other.std().item() == pytest.approx(anc.std().item(), rel=0.03)
    assert anc.mean().item() == pytest.approx(0.2, abs=0.005)
    # deterministic DDIM with fewer steps also lands on the data's mean
    fast = d.sample(model, shape, generator=torch.Generator().manual_seed(4), method="ddim", steps=20, eta=0.0)
    assert fast.mean().item() == pytest.approx(0.2, abs=0.005)


def test_matching_timestep_for_a_noise_level():
    d = GaussianDiffusion(build_schedule("linear", 1000))
    sigma = 2 * 25 / 255
    t = d.timestep_for_sigma(sigma)
    ratio = (d.sqrt_1m_ab / d.sqrt_ab)
    assert abs(ratio[t] - sigma) <= abs(ratio[t - 1] - sigma) and abs(ratio[t] - sigma) <= abs(ratio[t + 1] - sigma)


def test_ddpm_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown schedule 'cos'"):
        validate_ddpm_config({"task": "ddpm", "schedule": "cos"})
    with pytest.raises(ValueError, match="ddpm_unet"):
        validate_ddpm_config({"task": "ddpm", "model": "dncnn"})
    with pytest.raises(ValueError, match="prediction"):
        validate_ddpm_config({"task": "ddpm", "prediction": "score"})


def test_a_tiny_ddpm_trained_briefly_denoises_and_samples(tmp_path):
    reports = []
    cfg = {"task": "ddpm", "schedule": "cosine", "timesteps": 100, "prediction": "eps", "steps": 120,
           "eval_every": 60, "crop": 16, "batch_size": 32, "lr": 2e-3, "val_images": 16, "n_samples": 4,
           "threads": 2, "device": "cpu", "test": True, "select": "bits_per_dim", "select_mode": "min"}
    res = run_trial(cfg, reports.append, workdir=tmp_path)
    assert [r["step"] for r in reports] == [60, 120]
    m = res["metrics"]
    assert m["psnr_sigma25"] > m["input_psnr_sigma25"] + 3  # it removes noise
    # the reverse chain from the matching timestep, scored where findings read it: the held-out test images
    assert m["test_psnr_reverse_sigma25"] > m["test_input_psnr_sigma25"] and "psnr_reverse_sigma25" not in m
    assert 0 < m["bits_per_dim"] < 8
    assert reports[1]["bits_per_dim"] < reports[0]["bits_per_dim"] + 0.5
    assert Image.open(res["images"]["samples"]).size == (2 * 18 + 2, 2 * 18 + 2)  # 2x2 samples of 16 px, 2 px padding
    assert Image.open(res["images"]["progress"]).size == (10 * 18 + 2, 18 + 2)  # x_T ... x_0 in ten frames
