"""Classic denoisers: DnCNN, SRResNet (as a same-size denoiser) and two autoencoders."""
from __future__ import annotations

from torch import nn

from denoise_core.models import MODELS, SizedModel


@MODELS.register("dncnn")
class DnCNN(SizedModel):
    """Zhang et al. 2017: `depth` 3x3 conv layers (conv+ReLU, conv+BN+ReLU x depth-2, conv) that
    predict the noise; the output is input minus predicted noise (residual learning). Any size."""

    def __init__(self, channels: int = 1, width: int = 64, depth: int = 17):
        super().__init__()
        layers = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(width, channels, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return x - self.body(x)


class _ResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.PReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width),
        )

    def forward(self, x):
        return x + self.body(x)


@MODELS.register("srresnet")
class SRResNet(SizedModel):
    """Ledig et al. 2017 without the upsampler: 9x9 head, `blocks` residual blocks with batch
    norm and PReLU, conv+BN with a long skip, 9x9 tail. Any size."""

    def __init__(self, channels: int = 1, width: int = 64, blocks: int = 16):
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(channels, width, 9, padding=4), nn.PReLU())
        self.blocks = nn.Sequential(*[_ResBlock(width) for _ in range(blocks)])
        self.neck = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width))
        self.tail = nn.Conv2d(width, channels, 9, padding=4)

    def forward(self, x):
        h = self.head(x)
        return self.tail(h + self.neck(self.blocks(h)))


@MODELS.register("conv_autoencoder")
class ConvAutoencoder(SizedModel):
    """Two stride-2 convs down to a `latent`-channel bottleneck at 1/4 resolution, two transposed
    convs up, sigmoid output. Input: H and W divisible by 4."""

    size_multiple = 4

    def __init__(self, channels: int = 1, width: int = 32, latent: int = 16):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, latent, 1),  # bottleneck [B, latent, H/4, W/4]
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(latent, 2 * width, 4, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, channels, 3, padding=1), nn.Sigmoid(),
        )

    def forward(self, x):
        self.check_size(x)
        return self.decoder(self.encoder(x))


@MODELS.register("dense_autoencoder")
class DenseAutoencoder(SizedModel):
    """Fully connected 784-256-64-256-784 style autoencoder for small images of one fixed `size`
    (28 for MNIST-like data; hidden sizes scale with `width`, default 256). Sigmoid output."""

    def __init__(self, channels: int = 1, width: int = 256, size: int = 28):
        super().__init__()
        self.shape = (channels, size, size)
        n = channels * size * size
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(n, width), nn.ReLU(inplace=True), nn.Linear(width, width // 4),
            nn.ReLU(inplace=True), nn.Linear(width // 4, width), nn.ReLU(inplace=True), nn.Linear(width, n), nn.Sigmoid(),
        )

    def size_error(self, h: int, w: int) -> str | None:
        size = self.shape[1]
        return None if (h, w) == (size, size) else f"DenseAutoencoder takes {size}x{size} images (size={size}), got {h}x{w}"

    def forward(self, x):
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"DenseAutoencoder was built for {self.shape} images, got {tuple(x.shape[1:])}")
        return self.net(x).view(x.shape)
