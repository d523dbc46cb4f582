"""Each noise model's empirical statistics match its definition on >= 10^6 pixels."""
import pytest
import torch

from denoise_core.noise import NOISES, TEXT_TOLERANCE, build_noise

N = (16, 1, 256, 256)  # 1,048,576 pixels


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def clean():
    return torch.rand(N, generator=gen(123))


def test_gaussian_std_matches_sigma(clean):
    out = build_noise("gaussian", sigma=25)(clean, generator=gen())
    resid = out.noisy - clean
    assert out.mask is None
    assert abs(resid.std().item() / (25 / 255) - 1) < 0.02
    assert abs(resid.mean().item()) < 1e-3
    assert out.noisy.min() < 0  # not clipped by default
    clipped = build_noise("gaussian", sigma=25, clip=True)(clean, generator=gen()).noisy
    assert clipped.min() >= 0 and clipped.max() <= 1


def test_poisson_counts_have_mean_equal_variance():
    lam = 30.0
    x = torch.full(N, 0.4)
    counts = build_noise("poisson", lam=lam)(x, generator=gen()).noisy * lam
    assert torch.equal(counts, counts.round())
    assert abs(counts.mean().item() - 12.0) / 12.0 < 0.01
    assert abs(counts.var().item() - 12.0) / 12.0 < 0.02


def test_bernoulli_drop_fraction_and_mask(clean):
    x = clean + 0.01  # no clean pixel is exactly 0, so zeros in the output are drops
    out = build_noise("bernoulli", p=0.3)(x, generator=gen())
    dropped = 1 - out.mask
    assert abs(dropped.mean().item() - 0.3) < 0.005
    assert torch.equal(out.noisy == 0, out.mask == 0)
    assert torch.equal(out.noisy[out.mask == 1], x[out.mask == 1])


def test_salt_pepper_fraction_and_half_split(clean):
    x = clean * 0.98 + 0.01  # no clean pixel is 0 or 1
    noisy = build_noise("salt_pepper", p=0.2)(x, generator=gen()).noisy
    salt, pepper = (noisy == 1).float().mean().item(), (noisy == 0).float().mean().item()
    assert abs(salt + pepper - 0.2) < 0.005
    assert abs(salt / (salt + pepper) - 0.5) < 0.01


def test_impulse_fraction_and_uniform_values(clean):
    x = torch.full(N, 0.123456)
    noisy = build_noise("impulse", p=0.5)(x, generator=gen()).noisy
    hit = noisy != x
    assert abs(hit.float().mean().item() - 0.5) < 0.005
    values = noisy[hit]
    # U(0, 1): mean 1/2, variance 1/12, flat histogram
    assert abs(values.mean().item() - 0.5) < 0.005
    assert abs(values.var().item() - 1 / 12) < 0.002
    hist = torch.histc(values, bins=10, min=0, max=1) / values.numel()
    assert (hist - 0.1).abs().max() < 0.005


def test_uniform_blend_definition(clean):
    out = build_noise("uniform_blend", amount=0.4)(clean, generator=gen(5)).noisy
    u = torch.rand(N, generator=gen(5))
    torch.testing.assert_close(out, clean * 0.6 + u * 0.4)


@pytest.mark.parametrize("coverage", [0.1, 0.3, 0.5])
def test_text_coverage_within_tolerance(coverage):
    x = torch.full((16, 3, 256, 256), 0.5)
    noisy = build_noise("text", coverage=coverage)(x, generator=gen()).noisy
    frac = (noisy != x).any(1).flatten(1).float().mean(1)  # per image
    # a painted pixel can by chance get colour 0.5 exactly only with probability ~0
    assert (frac >= coverage - 1e-3).all() and (frac <= coverage + TEXT_TOLERANCE).all(), frac


def test_text_draws_glyph_strokes_not_blocks():
    x = torch.zeros(1, 1, 64, 64)
    covered = build_noise("text", coverage=0.2)(x, generator=gen()).noisy != 0
    # glyph strokes leave holes: the covered set is far from its bounding boxes filled
    rows = covered[0, 0].any(1).sum().item()
    assert 0 < covered.sum().item() < 0.6 * rows * 64


@pytest.mark.parametrize("name", [n for n in NOISES.names if not NOISES.get(n).captured])
def test_seeded_and_independent_and_input_untouched(name):
    x = torch.rand(4, 3, 64, 64, generator=gen(1))
    before = x.clone()
    noise = build_noise(name)
    a = noise(x, generator=gen(7)).noisy
    b = noise(x, generator=gen(7)).noisy
    assert torch.equal(a, b)
    assert torch.equal(x, before)
    # independence of two corruptions, on a flat image so the clean signal cannot correlate them
    x = torch.full((4, 3, 64, 64), 0.5)
    g = gen(7)
    n1 = noise(x, generator=g).noisy - x
    n2 = noise(x, generator=g).noisy - x
    assert not torch.equal(n1, n2)
    corr = torch.corrcoef(torch.stack([n1.flatten(), n2.flatten()]))[0, 1]
    assert abs(corr.item()) < 0.05


@pytest.mark.parametrize("name,param,rng", [("gaussian", "sigma", [0, 50]), ("impulse", "p", [0.0, 0.9]),
                                            ("poisson", "lam", [5, 100]), ("bernoulli", "p", [0.1, 0.9])])
def test_ranges_give_per_image_levels(name, param, rng):
    x = torch.full((8, 1, 64, 64), 0.5)
    noisy = build_noise(name, **{param: rng})(x, generator=gen()).noisy
    strength = (noisy - x).abs().flatten(1).mean(1)  # grows (poisson: shrinks) with the level
    assert strength.max() > 2 * strength.min()


@pytest.mark.parametrize("name,params,needle", [
    ("gaussian", {"sigma": -1}, "sigma=-1"),
    ("bernoulli", {"p": 1.5}, "p=1.5"),
    ("impulse", {"p": -0.1}, "p=-0.1"),
    ("salt_pepper", {"p": [0.5, 0.2]}, "p=[0.5, 0.2]"),
    ("text", {"coverage": 1.0}, "coverage=1.0"),
    ("poisson", {"lam": 0}, "lam=0"),
])
def test_bad_parameters_name_the_parameter(name, params, needle):
    with pytest.raises(ValueError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        build_noise(name, **params)


def test_unknown_noise_lists_known():
    with pytest.raises(ValueError, match="unknown noise 'speckle'.*gaussian.*impulse"):
        build_noise("speckle")


def test_real_noise_has_no_model_to_draw_from():
    """`noise: real` stands for captures in the data (tests/test_pairs.py): asked to draw, it says so."""
    noise = build_noise("real")
    assert noise.captured and noise.family == "real" and noise.gaussian_sigma is None
    with pytest.raises(ValueError, match="its noisy images are the captures of `dataset: pairs:PATH`"):
        noise(torch.zeros(1, 1, 8, 8))
