import pytest
import torch

from denoise_core.models import MODELS, build_model, count_parameters

# (name, input size, parameter range for 1 channel at default width)
CASES = [
    ("simple_unet", 32, (9e4, 1.2e5)),
    ("n2n_unet", 64, (9e5, 1.1e6)),  # the paper's network: about 1M parameters
    ("dncnn", 40, (5.5e5, 5.6e5)),  # DnCNN-S: 556k
    ("srresnet", 24, (1.2e6, 1.3e6)),
    ("conv_autoencoder", 32, (5e4, 1e5)),
    ("dense_autoencoder", 28, (4e5, 4.5e5)),
    ("ddpm_unet", 32, (4e5, 8e5)),
]


def test_every_model_is_covered():
    assert sorted(c[0] for c in CASES) == MODELS.names


@pytest.mark.parametrize("name,size,prange", CASES)
@pytest.mark.parametrize("channels", [1, 3])
def test_forward_backward_shape_and_size(name, size, prange, channels):
    model = build_model(name, channels=channels)
    x = torch.rand(2, channels, size, size, requires_grad=True)
    y = model(x, torch.tensor([3, 7])) if name == "ddpm_unet" else model(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    if channels == 1:
        assert prange[0] <= count_parameters(model) <= prange[1]


def test_width_scales_parameters():
    assert count_parameters(build_model("simple_unet", width=64)) > 3 * count_parameters(build_model("simple_unet"))


@pytest.mark.parametrize("name,bad,needle", [("simple_unet", 30, "divisible by 4"),
                                             ("n2n_unet", 48, "divisible by 32"),
                                             ("dense_autoencoder", 32, "built for")])
def test_bad_sizes_raise_clearly(name, bad, needle):
    with pytest.raises(ValueError, match=needle):
        build_model(name)(torch.rand(1, 1, bad, bad))


def test_unknown_model_and_channels():
    with pytest.raises(ValueError, match="unknown model 'resnet'; known: conv_autoencoder"):
        build_model("resnet")
    with pytest.raises(ValueError, match="channels=2"):
        build_model("dncnn", channels=2)
