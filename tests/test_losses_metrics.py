import numpy as np
import pytest
import torch
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from denoise_core.losses import L0_EPS, build_loss
from denoise_core.metrics import psnr, ssim


def test_l1_l2_values():
    pred, target = torch.zeros(1, 1, 2, 2), torch.tensor([0.0, 1.0, 2.0, 3.0]).view(1, 1, 2, 2)
    assert build_loss("l1")(pred, target).item() == pytest.approx(1.5)
    assert build_loss("l2")(pred, target).item() == pytest.approx(3.5)


def test_l0_anneals_from_l2_to_count():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(2, 1, 32, 32, generator=g), torch.rand(2, 1, 32, 32, generator=g)
    target[:, :, :8] = pred[:, :, :8]  # a quarter of residuals exactly zero
    l0, l2 = build_loss("l0"), build_loss("l2")
    assert l0(pred, target, progress=0.0).item() == pytest.approx(l2(pred, target).item(), rel=1e-5)
    # near the end every non-zero residual costs ~1 whatever its size: the loss counts them
    g_late = l0.gamma(0.999)
    costs = l0.elementwise(torch.tensor([0.02, 0.3, 1.0]), 0.999)
    assert (costs - 1).abs().max() < 0.01
    zero_cost = L0_EPS ** g_late
    nonzero = l0.elementwise(pred - target, 0.999)[:, :, 8:].mean().item()
    late = l0(pred, target, progress=0.999).item()
    assert late == pytest.approx(0.75 * nonzero + 0.25 * zero_cost, rel=1e-5)
    assert l0(pred, target, progress=0.999) < l0(pred, target + 0.5, progress=0.999)
    assert l0(pred, pred, progress=1.0).item() == pytest.approx(1.0)  # (0 + eps)**0
    assert build_loss("l0").gamma(0.5) == 1.0 and L0_EPS == 1e-8


@pytest.mark.parametrize("name", ["l1", "l2", "l0"])
def test_mask_ignores_masked_pixels_exactly(name):
    g = torch.Generator().manual_seed(1)
    pred, target = torch.rand(2, 3, 16, 16, generator=g), torch.rand(2, 3, 16, 16, generator=g)
    mask = (torch.rand(2, 3, 16, 16, generator=g) > 0.5).float()
    loss = build_loss(name)
    a = loss(pred, target, mask=mask, progress=0.3)
    wild = target + (1 - mask) * 1000.0  # change only masked-out pixels
    b = loss(pred, wild, mask=mask, progress=0.3)
    assert a.item() == b.item()
    expected = loss.elementwise(pred - target, 0.3)[mask.bool()].mean()
    assert a.item() == pytest.approx(expected.item(), rel=1e-6)


def test_unknown_loss_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown loss 'huber'; known: l0, l1, l2"):
        build_loss("huber")


def _pairs():
    g = torch.Generator().manual_seed(2)
    rand = torch.rand(3, 1, 48, 48, generator=g)
    cam = torch.from_numpy(data.camera()[::4, ::4].astype(np.float32) / 255).expand(3, 1, 128, 128).clone()
    astro = torch.from_numpy(data.astronaut()[::4, ::4].astype(np.float32) / 255).permute(2, 0, 1)[None]
    for x in (rand, cam, astro):
        noisy = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
        yield x, noisy


def test_psnr_and_ssim_match_skimage():
    for clean, noisy in _pairs():
        ours_p, ours_s = psnr(noisy, clean), ssim(noisy, clean)
        assert ours_p.shape == ours_s.shape == (clean.shape[0],)
        for i in range(clean.shape[0]):
            c, n = clean[i].permute(1, 2, 0).numpy(), noisy[i].permute(1, 2, 0).numpy()
            ref_p = peak_signal_noise_ratio(c, n, data_range=1.0)
            ref_s = structural_similarity(c, n, data_range=1.0, channel_axis=2, gaussian_weights=True,
                                          sigma=1.5, use_sample_covariance=False, win_size=11)
            assert ours_p[i].item() == pytest.approx(ref_p, abs=1e-3)
            assert ours_s[i].item() == pytest.approx(ref_s, abs=1e-3)


def test_known_psnr_value():
    clean = torch.zeros(1, 1, 10, 10)
    assert psnr(clean + 0.1, clean).item() == pytest.approx(20.0, abs=1e-4)  # 10 log10(1 / 0.01)
