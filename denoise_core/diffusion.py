"""Gaussian diffusion (DDPM, Ho et al. 2020): schedules, training losses, sampling, likelihood, denoising.

    betas = build_schedule("cosine", 1000)                 # float64 [T]
    diffusion = GaussianDiffusion(betas, prediction="v")
    loss = diffusion.training_loss(model, x0, generator=g)  # x0 in [-1, 1]
    x = diffusion.sample(model, (16, 1, 32, 32), generator=g)               # ancestral, T steps
    x = diffusion.sample(model, shape, generator=g, method="ddim", steps=50)
    bpd = diffusion.bits_per_dim(model, x0, generator=g)   # variational bound, full T

Equation numbers refer to Ho et al. 2020 ("DDPM") unless another paper is named:
Nichol & Dhariwal 2021 ("improved DDPM"), Song et al. 2021 ("DDIM"), Salimans & Ho 2022
("v-prediction"), Chen 2023 ("On the importance of noise scheduling").

Timesteps are 0-based: index t in [0, T) is the paper's t + 1, so `betas[0]` is beta_1 and
`alpha_bar[t]` is the paper's alpha-bar_{t+1}. The model sees the 0-based index.
Schedules and coefficients are kept in float64 and cast to the data's dtype when applied.
"""
from __future__ import annotations

import math
from typing import Callable, Literal

import torch

from denoise_core.registry import Registry

SCHEDULES: Registry[torch.Tensor] = Registry("schedule")
PREDICTIONS = ("eps", "x0", "v")
MAX_BETA = 0.999  # improved DDPM section 3.2: avoid singularities near t = T


def build_schedule(name: str, timesteps: int, **kw) -> torch.Tensor:
    """Betas (float64, shape [T]) of a named schedule.

    >>> b = build_schedule("linear", 1000)
    >>> round(b[0].item(), 6), round(b[-1].item(), 6)      # Ho et al.'s endpoints
    (0.0001, 0.02)
    >>> ab = torch.cumprod(1 - build_schedule("cosine", 1000), 0)
    >>> ab[0].item() > 0.9999, ab[-1].item() < 1e-4         # alpha-bar from ~1 to ~0
    (True, True)
    >>> build_schedule("sigmoid", 2.5)
    Traceback (most recent call last):
    ValueError: schedule 'sigmoid' needs an integer number of timesteps T >= 2, got 2.5
    """
    SCHEDULES.check(name)
    if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 2:
        raise ValueError(f"schedule {name!r} needs an integer number of timesteps T >= 2, got {timesteps!r}")
    betas = SCHEDULES.build(name, T=timesteps, **kw)
    assert betas.dtype == torch.float64 and betas.shape == (timesteps,)
    return betas


def _scaled_endpoints(T: int, start: float, end: float) -> tuple[float, float]:
    # improved-diffusion's get_named_beta_schedule: the T=1000 endpoints scaled by 1000/T,
    # so that every T spans roughly the same alpha-bar range
    scale = 1000.0 / T
    return scale * start, scale * end


@SCHEDULES.register("linear")
def linear_schedule(T: int, start: float = 1e-4, end: float = 0.02) -> torch.Tensor:
    """DDPM section 4: betas linear from 1e-4 to 0.02 (at T=1000)."""
    lo, hi = _scaled_endpoints(T, start, end)
    return torch.linspace(lo, hi, T, dtype=torch.float64)


@SCHEDULES.register("quadratic")
def quadratic_schedule(T: int, start: float = 1e-4, end: float = 0.02) -> torch.Tensor:
    """Betas linear in sqrt(beta) between the linear schedule's endpoints (as in DDIM's code)."""
    lo, hi = _scaled_endpoints(T, start, end)
    return torch.linspace(math.sqrt(lo), math.sqrt(hi), T, dtype=torch.float64) ** 2


def _betas_from_alpha_bar(f: Callable[[torch.Tensor], torch.Tensor], T: int) -> torch.Tensor:
    """beta_t = 1 - alpha-bar(t/T) / alpha-bar((t-1)/T), capped at 0.999 (improved DDPM eq. 17 and below)."""
    t = torch.arange(T + 1, dtype=torch.float64) / T
    ab = f(t) / f(t[:1])
    return (1 - ab[1:] / ab[:-1]).clamp(max=MAX_BETA)


@SCHEDULES.register("cosine")
def cosine_schedule(T: int, s: float = 0.008) -> torch.Tensor:
    """Improved DDPM eq. 17: alpha-bar = f(t)/f(0), f(t) = cos^2(((t/T + s)/(1 + s)) * pi/2)."""
    return _betas_from_alpha_bar(lambda u: torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2, T)


@SCHEDULES.register("sigmoid")
def sigmoid_schedule(T: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> torch.Tensor:
    """Chen 2023, algorithm 1 (also Jabri et al. 2022): a sigmoid on alpha-bar, not on beta.

    alpha-bar(u) = (sigmoid(end/tau) - sigmoid((u (end - start) + start)/tau)) / (sigmoid(end/tau) - sigmoid(start/tau))
    """
    v_start, v_end = (torch.sigmoid(torch.tensor(v / tau, dtype=torch.float64)) for v in (start, end))

    def f(u):
        ab = (v_end - torch.sigmoid((u * (end - start) + start) / tau)) / (v_end - v_start)
        return ab.clamp(min=1e-9)  # Chen 2023 clips alpha-bar at 1e-9

    return _betas_from_alpha_bar(f, T)


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """DDPM eq. 13: log p(x0 | x1) for 8-bit data scaled to [-1, 1], with open edge bins. Elementwise, nats."""
    inv_std = torch.exp(-log_scale)
    cdf_plus = torch.special.ndtr(inv_std * (x - mean + 1 / 255))
    cdf_minus = torch.special.ndtr(inv_std * (x - mean - 1 / 255))
    tiny = 1e-12
    mid = (cdf_plus - cdf_minus).clamp(min=tiny).log()
    return torch.where(x < -0.999, cdf_plus.clamp(min=tiny).log(),
                       torch.where(x > 0.999, (1 - cdf_minus).clamp(min=tiny).log(), mid))


def _mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(1)


class GaussianDiffusion:
    """The forward process q, the learned reverse process p, and what is computed from them.

    `prediction` is what the network outputs: the noise `eps` (DDPM eq. 11), the clean image
    `x0`, or `v` = sqrt(alpha-bar) eps - sqrt(1 - alpha-bar) x0 (Salimans & Ho 2022, section 4).
    The reverse variance is fixed to the posterior variance beta-tilde (DDPM section 3.2).
    """

    def __init__(self, betas: torch.Tensor, prediction: Literal["eps", "x0", "v"] = "eps"):
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; known: {', '.join(PREDICTIONS)}")
        betas = betas.double()
        if betas.dim() != 1 or not ((betas > 0) & (betas < 1)).all():
            raise ValueError("betas must be a 1-D tensor with every value in (0, 1)")
        self.prediction, self.T = prediction, len(betas)
        self.betas = betas
        self.alphas = 1 - betas
        self.alpha_bar = torch.cumprod(self.alphas, 0)
        self.alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar[:-1]])
        self.sqrt_ab, self.sqrt_1m_ab = self.alpha_bar.sqrt(), (1 - self.alpha_bar).sqrt()
        # eq. 7: q(x_{t-1} | x_t, x0) = N(mu-tilde, beta-tilde)
        self.post_var = betas * (1 - self.alpha_bar_prev) / (1 - self.alpha_bar)
        # beta-tilde_1 = 0: the log is clipped to beta-tilde_2 as in improved-diffusion
        self.post_logvar = torch.log(torch.cat([self.post_var[1:2], self.post_var[1:]]))
        self.post_c0 = betas * self.alpha_bar_prev.sqrt() / (1 - self.alpha_bar)
        self.post_ct = (1 - self.alpha_bar_prev) * self.alphas.sqrt() / (1 - self.alpha_bar)
        self.one_minus_ab = 1 - self.alpha_bar
        self._tables: dict[tuple, torch.Tensor] = {}  # (name, device, dtype) -> the table there

    def to(self, device) -> "GaussianDiffusion":
        """Copy the per-timestep tables to `device` once, in float32 (training and evaluation read them there)."""
        for name in ("sqrt_ab", "sqrt_1m_ab", "post_var", "post_logvar", "post_c0", "post_ct", "one_minus_ab"):
            self._table(name, torch.device(device), torch.float32)
        return self

    def _table(self, name: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (name, device, dtype)
        if key not in self._tables:
            self._tables[key] = getattr(self, name).to(device=device, dtype=dtype)
        return self._tables[key]

    def _at(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """table[t] as a [B, 1, 1, ...] tensor in `like`'s dtype and device (the table is copied there once)."""
        out = self._table(name, like.device, like.dtype)[t]
        return out.reshape(-1, *([1] * (like.dim() - 1)))

    # -- the forward process ------------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Eq. 4: x_t = sqrt(alpha-bar_t) x0 + sqrt(1 - alpha-bar_t) eps."""
        return self._at("sqrt_ab", t, x0) * x0 + self._at("sqrt_1m_ab", t, x0) * noise

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor):
        """Eqs. 6-7: the mean, variance and log variance of q(x_{t-1} | x_t, x0)."""
        mean = self._at("post_c0", t, xt) * x0 + self._at("post_ct", t, xt) * xt
        return mean, self._at("post_var", t, xt), self._at("post_logvar", t, xt)

    # -- conversions between what a network may predict ------------------------------------------
    def x0_from_eps(self, xt, t, eps):
        """Eq. 4 solved for x0 (DDPM eq. 15)."""
        return (xt - self._at("sqrt_1m_ab", t, xt) * eps) / self._at("sqrt_ab", t, xt)

    def eps_from_x0(self, xt, t, x0):
        return (xt - self._at("sqrt_ab", t, xt) * x0) / self._at("sqrt_1m_ab", t, xt)

    def v_from(self, x0, eps, t):
        """Salimans & Ho 2022, section 4: v = alpha eps - sigma x0, with alpha = sqrt(alpha-bar)."""
        return self._at("sqrt_ab", t, x0) * eps - self._at("sqrt_1m_ab", t, x0) * x0

    def x0_from_v(self, xt, t, v):
        """x0 = alpha x_t - sigma v (alpha^2 + sigma^2 = 1)."""
        return self._at("sqrt_ab", t, xt) * xt - self._at("sqrt_1m_ab", t, xt) * v

    def predict_x0(self, model, xt: torch.Tensor, t: torch.Tensor, clip: bool = True) -> torch.Tensor:
        """The network's estimate of x0, whatever it predicts; clipped to the data range [-1, 1]."""
        out = model(xt, t).float()
        x0 = {"eps": lambda: self.x0_from_eps(xt, t, out), "x0": lambda: out,
              "v": lambda: self.x0_from_v(xt, t, out)}[self.prediction]()
        return x0.clamp(-1, 1) if clip else x0

    # -- training -------------------------------------------------------------------------------
    def training_loss(self, model, x0: torch.Tensor, *, generator: torch.Generator | None = None,
                      t: torch.Tensor | None = None) -> torch.Tensor:
        """Eq. 14 (L_simple): mean squared error of the network's prediction at a uniform random t."""
        if t is None:
            t = torch.randint(0, self.T, (len(x0),), device=x0.device, generator=generator)
        noise = torch.randn(x0.shape, device=x0.device, generator=generator, dtype=x0.dtype)
        xt = self.q_sample(x0, t, noise)
        target = {"eps": noise, "x0": x0, "v": None}[self.prediction]
        if target is None:
            target = self.v_from(x0, noise, t)
        return ((model(xt, t).float() - target) ** 2).mean()

    # -- the reverse process --------------------------------------------------------------------
    def p_mean_variance(self, model, xt: torch.Tensor, t: torch.Tensor):
        """p(x_{t-1} | x_t) = q(x_{t-1} | x_t, x0-hat) with the clipped x0 estimate (DDPM section 3.2)."""
        x0 = self.predict_x0(model, xt, t)
        mean, var, logvar = self.q_posterior(x0, xt, t)
        return mean, logvar, x0

    @torch.no_grad()
    def sample(self, model, shape, *, generator: torch.Generator | None = None, device=None,
               method: Literal["ancestral", "ddim"] = "ancestral", steps: int | None = None, eta: float = 0.0,
               x: torch.Tensor | None = None, start: int | None = None, keep: int = 0):
        """Draw samples. Ancestral: DDPM algorithm 2 with x0 clipping, every step from `start` (T-1) to 0.
        DDIM: Song et al. eq. 12 on `steps` evenly spaced timesteps, stochasticity `eta`.

        `x`/`start` begin the chain from a given x_t instead of pure noise (used to denoise).
        With keep > 1, also returns `keep` snapshots of the chain x_t, from x_start to the final x_0.
        """
        device = device or (x.device if x is not None else None)
        start = self.T - 1 if start is None else start
        if x is None:
            x = torch.randn(shape, device=device, generator=generator)
        if method == "ancestral":
            ts = list(range(start, -1, -1))
        elif method == "ddim":
            n = min(steps or 50, start + 1)
            ts = sorted({round(v) for v in torch.linspace(0, start, n).tolist()}, reverse=True)
        else:
            raise ValueError(f"unknown sampling method {method!r}; known: ancestral, ddim")
        snap_after = set(torch.linspace(0, len(ts) - 1, keep - 1).round().long().tolist()) if keep > 1 else set()
        snaps = [x] if keep > 1 else []
        for i, t_int in enumerate(ts):
            t = torch.full((len(x),), t_int, device=x.device, dtype=torch.long)
            if method == "ancestral":
                mean, logvar, x0 = self.p_mean_variance(model, x, t)
                z = torch.randn(x.shape, device=x.device, generator=generator) if t_int > 0 else 0
                x = mean + (0.5 * logvar).exp() * z
            else:
                t_prev = ts[i + 1] if i + 1 < len(ts) else -1
                x0 = self.predict_x0(model, x, t)
                eps = self.eps_from_x0(x, t, x0)
                ab = self.alpha_bar[t_int]
                ab_prev = self.alpha_bar[t_prev] if t_prev >= 0 else torch.tensor(1.0, dtype=torch.float64)
                sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).sqrt()
                x = ab_prev.sqrt().item() * x0 + (1 - ab_prev - sigma ** 2).clamp(min=0).sqrt().item() * eps
                if sigma > 0:
                    x = x + sigma.item() * torch.randn(x.shape, device=x.device, generator=generator)
            if i in snap_after:
                snaps.append(x)
        return (x, snaps) if keep > 1 else x

    # -- likelihood -----------------------------------------------------------------------------
    def prior_bpd(self, x0: torch.Tensor) -> torch.Tensor:
        """L_T = KL(q(x_T | x0) || N(0, I)) in bits per dimension, per image."""
        t = torch.full((len(x0),), self.T - 1, device=x0.device, dtype=torch.long)
        mean, logvar = self._at("sqrt_ab", t, x0) * x0, torch.log(self._at("one_minus_ab", t, x0))
        return _mean_flat(normal_kl(mean, logvar, torch.zeros_like(mean), torch.zeros_like(logvar))) / math.log(2)

    def term_bpd(self, model, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """One term of eq. 5, per image, in bits/dim: L_{t-1} = KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t)) for t > 0
        (0-based), and the decoder term L_0 = -log p(x0 | x1) (eq. 13) at t = 0."""
        xt = self.q_sample(x0, t, noise)
        true_mean, _, true_logvar = self.q_posterior(x0, xt, t)
        mean, logvar, _ = self.p_mean_variance(model, xt, t)
        kl = _mean_flat(normal_kl(true_mean, true_logvar, mean, logvar)) / math.log(2)
        nll = -_mean_flat(discretized_gaussian_log_likelihood(x0, mean, 0.5 * logvar)) / math.log(2)
        return torch.where(t == 0, nll, kl)

    @torch.no_grad()
    def bits_per_dim(self, model, x0: torch.Tensor, *, generator: torch.Generator | None = None,
                     timesteps: int = 0, chunk: int = 256) -> torch.Tensor:
        """The variational bound (eq. 5) in bits per dimension, per image. `x0`: 8-bit images in [-1, 1].

        timesteps=0 (or >= T) sums all T terms exactly (one Monte-Carlo draw of x_t per term).
        Otherwise an unbiased stratified estimate: the decoder term L_0 exactly, and for each of
        `timesteps` equal strata of t in [1, T) one t drawn uniformly, weighted by its stratum's size.
        """
        if timesteps <= 0 or timesteps >= self.T:
            ts, weights = list(range(self.T)), [1.0] * self.T
        else:
            edges = torch.linspace(1, self.T, timesteps + 1).round().long()
            lo, hi = edges[:-1], edges[1:]
            lo, hi = lo[hi > lo], hi[hi > lo]
            # one uniform draw per stratum, on the generator's own device (a CUDA generator draws on CUDA)
            u = torch.rand(len(lo), generator=generator,
                           device=generator.device if generator is not None else None).cpu().double()
            draws = (lo + (u * (hi - lo)).floor().long()).clamp(max=hi - 1)
            ts, weights = [0, *draws.tolist()], [1.0, *(hi - lo).double().tolist()]
        total = self.prior_bpd(x0)
        for t_int, w in zip(ts, weights):
            parts = []
            for i in range(0, len(x0), chunk):
                xb = x0[i:i + chunk]
                noise = torch.randn(xb.shape, device=xb.device, generator=generator)
                t = torch.full((len(xb),), t_int, device=xb.device, dtype=torch.long)
                parts.append(self.term_bpd(model, xb, t, noise))
            total = total + w * torch.cat(parts)
        return total

    # -- denoising an image with Gaussian noise ---------------------------------------------------
    def timestep_for_sigma(self, sigma: float) -> int:
        """The t whose noise-to-signal ratio sqrt(1 - alpha-bar)/sqrt(alpha-bar) is closest to `sigma`
        (noise std in the model's [-1, 1] data scale, i.e. 2 sigma_255 / 255)."""
        ratio = self.sqrt_1m_ab / self.sqrt_ab
        return int((ratio - sigma).abs().argmin())

    @torch.no_grad()
    def denoise(self, model, noisy: torch.Tensor, sigma: float, *, reverse: bool = False,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Denoise y = x0 + sigma * n (x0, y in [-1, 1] scale): x_t = sqrt(alpha-bar_t) y at the matching t,
        then one x0 prediction, or (reverse=True) the ancestral reverse process from t to 0."""
        t_int = self.timestep_for_sigma(sigma)
        xt = self.sqrt_ab[t_int].item() * noisy
        if reverse:
            return self.sample(model, noisy.shape, generator=generator, x=xt, start=t_int).clamp(-1, 1)
        t = torch.full((len(noisy),), t_int, device=noisy.device, dtype=torch.long)
        return self.predict_x0(model, xt, t)
