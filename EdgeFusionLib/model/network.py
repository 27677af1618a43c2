"""EH-DRAN: the Edge-Enhanced Dilated Residual Attention Network (docs/method.md §1).

One module per block of the paper. Shapes use B = batch, H x W = image size
(both even: the attention mask pools 2x2), 64 latent channels at full resolution.
Only the modules used in the forward pass are built: 414,081 parameters.

Reference: Zhou et al., "Edge-Enhanced Dilated Residual Attention Network for
Multimodal Medical Image Fusion", IEEE BIBM 2024, arXiv:2411.11799.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LATENT_CHANNELS = 64

SOBEL_X = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])


def attention_mask(z: torch.Tensor) -> torch.Tensor:
    """M(z) = ReLU(nearest-upsample-2x(avg-pool-2x2(z))); same shape as z (B, C, H, W)."""
    if z.shape[-2] % 2 or z.shape[-1] % 2:
        raise ValueError(f"EH-DRAN needs even image sizes, got {tuple(z.shape[-2:])}; pad before calling")
    return F.relu(F.interpolate(F.avg_pool2d(z, 2), scale_factor=2, mode="nearest"))


def residual_attention(base: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """base + M(base) * features. base (B, 1 or C, H, W) broadcasts over features (B, C, H, W)."""
    return base + attention_mask(base) * features


def conv3x3(in_channels: int, out_channels: int, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution with bias and "same" zero padding."""
    return nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation)


class DilatedBlock(nn.Module):
    """Three parallel 3x3 convolutions (dilation 1, 3, 5), no activation, merged by a 1x1.

    (B, 64, H, W) -> (B, 64, H, W). The BatchNorm that follows is the encoder's shared one.
    """

    def __init__(self, channels: int = LATENT_CHANNELS, dilations: tuple[int, ...] = (1, 3, 5)):
        super().__init__()
        self.branches = nn.ModuleList(conv3x3(channels, channels, d) for d in dilations)
        self.merge = nn.Conv2d(channels * len(dilations), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.merge(torch.cat([branch(x) for branch in self.branches], dim=1))


class PyramidAttention(nn.Module):
    """P = D + M(D) * (C(D) + C(C(D)) + C(C(C(D)))) with ONE shared 3x3 conv C.

    Applying C 1, 2 and 3 times gives receptive fields 3, 5 and 7. (B, 64, H, W) -> same.
    """

    def __init__(self, channels: int = LATENT_CHANNELS, levels: int = 3):
        super().__init__()
        self.shared_conv = conv3x3(channels, channels)
        self.levels = levels

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        level = d
        pyramid = torch.zeros_like(d)
        for _ in range(self.levels):
            level = self.shared_conv(level)
            pyramid = pyramid + level
        return residual_attention(d, pyramid)


class SobelGradient(nn.Module):
    """|Sx * f| + |Sy * f| per channel, with depthwise kernels initialised to Sobel and trainable.

    (B, C, H, W) -> (B, C, H, W). This is the paper's "learnable gradient operator".
    """

    def __init__(self, channels: int = LATENT_CHANNELS):
        super().__init__()
        self.sobel_x = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.sobel_y = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        with torch.no_grad():
            self.sobel_x.weight.copy_(SOBEL_X.expand(channels, 1, 3, 3))
            self.sobel_y.weight.copy_(SOBEL_X.T.expand(channels, 1, 3, 3))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.sobel_x(f).abs() + self.sobel_y(f).abs()


class DRGO(nn.Module):
    """Dense residual gradient operator on the shallow features F0. (B, 64, H, W) -> same.

    dense branch:    G1 = phi(conv3x3(F0)), G2 = phi(conv3x3([F0, G1])), A = conv1x1(dropout(G2))
    gradient branch: B = conv1x1(|Sx * F0| + |Sy * F0|)
    output:          dropout(A + B), phi = LeakyReLU(0.2)
    """

    def __init__(self, channels: int = LATENT_CHANNELS, dropout: float = 0.2):
        super().__init__()
        self.dense1 = conv3x3(channels, channels)
        self.dense2 = conv3x3(2 * channels, 2 * channels)
        self.dense_out = nn.Conv2d(2 * channels, channels, 1)
        self.gradient = SobelGradient(channels)
        self.gradient_out = nn.Conv2d(channels, channels, 1)
        self.activation = nn.LeakyReLU(0.2)
        self.dropout = nn.Dropout(dropout)

    def forward(self, f0: torch.Tensor) -> torch.Tensor:
        g1 = self.activation(self.dense1(f0))
        g2 = self.activation(self.dense2(torch.cat([f0, g1], dim=1)))
        dense = self.dense_out(self.dropout(g2))
        gradient = self.gradient_out(self.gradient(f0))
        return self.dropout(dense + gradient)


class SharedBatchNorm(nn.Module):
    """One BatchNorm's scale and shift, applied at several places, with running statistics per place.

    (B, C, H, W) -> same; ``use`` (0 .. uses-1) says which place is calling. The paper applies
    one ``nn.BatchNorm2d`` twice (after the dilated block and after the pyramid), so its running
    statistics average two distributions that differ by a factor of ~10 in mean and fit neither
    at inference: the previous release's models reconstructed the validation MRIs 7-9 dB worse
    in eval mode than with statistics per use (Resources/Models/README.md). Sharing the affine parameters keeps the paper's
    414,081 parameters; separate statistics (buffers, not parameters) make eval mode match training.
    In training mode each use normalises with its batch statistics, as nn.BatchNorm2d does;
    ``momentum`` None gives cumulative averages (used to recalibrate, see training.py).
    """

    def __init__(self, channels: int, uses: int = 2, eps: float = 1e-5, momentum: float | None = 0.1):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(uses, channels))
        self.register_buffer("running_var", torch.ones(uses, channels))
        self.register_buffer("num_batches_tracked", torch.zeros(uses, dtype=torch.long))
        self.eps = eps
        self.momentum = momentum

    def reset_running_stats(self) -> None:
        self.running_mean.zero_()
        self.running_var.fill_(1)
        self.num_batches_tracked.zero_()

    def forward(self, x: torch.Tensor, use: int) -> torch.Tensor:
        momentum = 0.0
        if self.training:
            self.num_batches_tracked[use] += 1
            momentum = 1.0 / float(self.num_batches_tracked[use]) if self.momentum is None else self.momentum
        # Rows of the (uses, C) buffers are contiguous views: batch_norm updates them in place.
        return F.batch_norm(x, self.running_mean[use], self.running_var[use], self.weight, self.bias,
                            self.training, momentum, self.eps)


class Encoder(nn.Module):
    """Image (B, 1, H, W) in [0, 1] -> latent E(I) (B, 64, H, W). docs/method.md §1, steps 1-8."""

    def __init__(self, channels: int = LATENT_CHANNELS):
        super().__init__()
        self.shallow = nn.Conv2d(1, channels, 1)
        self.dilated = DilatedBlock(channels)
        # One BatchNorm used twice (after the dilated block and after the pyramid), as in the
        # paper, but with running statistics per use (see SharedBatchNorm for why).
        self.shared_norm = SharedBatchNorm(channels, uses=2)
        self.pyramid = PyramidAttention(channels)
        self.drgo = DRGO(channels)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        f0 = self.shallow(image)
        x = residual_attention(image, f0)
        d = self.shared_norm(self.dilated(x), use=0)
        deep = self.shared_norm(self.pyramid(d), use=1)
        y = residual_attention(x, deep)
        return y + self.drgo(f0)


class Decoder(nn.Module):
    """Latent (B, 64, H, W) -> image (B, 1, H, W); no final activation (clamp at inference)."""

    def __init__(self, channels: int = LATENT_CHANNELS):
        super().__init__()
        self.layers = nn.Sequential(
            conv3x3(channels, 64),
            nn.LeakyReLU(0.2),
            conv3x3(64, 32),
            nn.LeakyReLU(0.2),
            conv3x3(32, 1),
        )

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.layers(latent)


class EHDRAN(nn.Module):
    """The autoencoder trained in stage 1: ``decoder(encoder(x))`` reconstructs x (B, 1, H, W)."""

    def __init__(self):
        super().__init__()
        self.encoder = Encoder()
        self.decoder = Decoder()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(image))


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
