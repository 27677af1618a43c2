"""Stage-1 reconstruction loss terms (docs/method.md §4).

``MSE(x_hat, x) + lambda_grad * L_grad + lambda_perc * L_perc`` on image batches
(B, 1, H, W) in [0, 1].

* ``gradient_loss``: fixed Sobel kernels, valid convolution, exactly as docs/method.md.
* ``ssim_loss``: 1 - SSIM (Gaussian 11x11, sigma 1.5, data range 1), the default
  offline substitute for the VGG perceptual term (ImageNet weights cannot be
  downloaded on the development machines; see Resources/Models/README.md for the
  measurement that chose it).
* ``VGGPerceptualLoss``: the paper's term, VGG16-BN features after the BatchNorm of
  conv1_2, conv2_2 and conv3_3, from a weights file the user already has.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..model.network import SOBEL_X

PERCEPTUAL_TERMS = ("ssim", "vgg", "none")

# SSIM constants of Wang et al. 2004 for data range 1: C1 = (0.01 L)^2, C2 = (0.03 L)^2.
_SSIM_C1 = 0.01**2
_SSIM_C2 = 0.03**2

# ImageNet statistics that torchvision's VGG weights were trained with.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _sobel_kernels(like: torch.Tensor) -> torch.Tensor:
    """(2, 1, 3, 3) Sobel x and y kernels on the device and dtype of ``like``."""
    sx = SOBEL_X.to(device=like.device, dtype=like.dtype)
    return torch.stack([sx, sx.T]).unsqueeze(1)


def sobel_magnitudes(image: torch.Tensor) -> torch.Tensor:
    """(|Sx * x|, |Sy * x|) of a (B, 1, H, W) batch, valid convolution: (B, 2, H-2, W-2)."""
    return F.conv2d(image, _sobel_kernels(image)).abs()


def gradient_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean((|Sx*x_hat| - |Sx*x|)^2) + mean((|Sy*x_hat| - |Sy*x|)^2), fixed Sobel, valid."""
    squared = (sobel_magnitudes(prediction) - sobel_magnitudes(target)) ** 2
    return squared.mean(dim=(0, 2, 3)).sum()


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 1D Gaussian of ``size`` taps (float32)."""
    offsets = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    window = torch.exp(-(offsets**2) / (2 * sigma**2))
    return window / window.sum()


def _gaussian_filter_valid(image: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of (B, C, H, W), valid convolution."""
    channels = image.shape[1]
    rows = window.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    cols = window.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    return F.conv2d(F.conv2d(image, rows, groups=channels), cols, groups=channels)


def ssim(prediction: torch.Tensor, target: torch.Tensor, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of two (B, 1, H, W) batches in [0, 1] (differentiable, valid windows only).

    Population statistics and an 11x11 sigma-1.5 Gaussian, as ``metrics.ssim``; the
    valid window skips the image border where scikit-image pads.
    """
    if min(prediction.shape[-2:]) < size:
        raise InputError(f"SSIM needs images of at least {size}x{size}, got {tuple(prediction.shape[-2:])}")
    window = gaussian_window(size, sigma).to(device=prediction.device, dtype=prediction.dtype)
    # One filter pass over the five moments instead of five passes.
    moments = torch.cat([prediction, target, prediction * prediction, target * target, prediction * target], dim=1)
    mu_p, mu_t, e_pp, e_tt, e_pt = _gaussian_filter_valid(moments, window).unbind(dim=1)
    var_p = e_pp - mu_p**2
    var_t = e_tt - mu_t**2
    cov = e_pt - mu_p * mu_t
    numerator = (2 * mu_p * mu_t + _SSIM_C1) * (2 * cov + _SSIM_C2)
    denominator = (mu_p**2 + mu_t**2 + _SSIM_C1) * (var_p + var_t + _SSIM_C2)
    return (numerator / denominator).mean()


def ssim_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - SSIM: zero for identical images."""
    return 1.0 - ssim(prediction, target)


# (out_channels, convolutions) per VGG16 stage up to conv3_3; a max-pool separates stages.
_VGG16_STAGES = ((64, 2), (128, 2), (256, 3))


class VGG16BNFeatures(nn.Module):
    """VGG16-BN ``features`` up to the BatchNorm after conv3_3 (torchvision indices 0-21).

    Module indices match torchvision's ``vgg16_bn().features`` so its state dict loads
    as is. ``forward`` returns the BatchNorm outputs after conv1_2, conv2_2 and conv3_3.
    """

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        self.taps: list[int] = []
        in_channels = 3
        for stage, (channels, convolutions) in enumerate(_VGG16_STAGES):
            if stage:
                layers.append(nn.MaxPool2d(2, 2))
            for index in range(convolutions):
                layers += [nn.Conv2d(in_channels, channels, 3, padding=1), nn.BatchNorm2d(channels)]
                in_channels = channels
                if index == convolutions - 1:
                    self.taps.append(len(layers) - 1)
                else:
                    layers.append(nn.ReLU(inplace=False))
            layers.append(nn.ReLU(inplace=False))
        # The last ReLU is after the last tap and never needed.
        self.features = nn.Sequential(*layers[:-1])

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        x = image
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                outputs.append(x)
        return outputs


def load_vgg16_bn_features(path: Path | str) -> VGG16BNFeatures:
    """A frozen, eval-mode ``VGG16BNFeatures`` from a user's weights file.

    Accepts safetensors or a torchvision ``vgg16_bn`` state dict saved with
    ``torch.save`` (read with ``weights_only=True``: no pickled code runs). Keys may
    carry the ``features.`` prefix (whole model) or not (features only); the
    classifier and deeper layers are ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"VGG16-BN weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:  # weights_only: tensors and plain containers, no code from the file is run
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and safetensors each raise their own kinds
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise InputError(f"cannot load VGG16-BN weights from {path}: {reason}") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise InputError(f"{path} holds a {type(state).__name__}, not a VGG16-BN state dict")
    network = VGG16BNFeatures()
    wanted = network.state_dict()
    found = {}
    for key, tensor in state.items():
        name = key if key.startswith("features.") else f"features.{key}"
        if name in wanted:
            found[name] = tensor
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise InputError(f"{path} is not a VGG16-BN state dict: {len(missing)} tensors missing, e.g. {missing[0]}")
    network.load_state_dict(found)
    network.requires_grad_(False)
    return network.eval()


class VGGPerceptualLoss(nn.Module):
    """Sum over the three taps of MSE between VGG16-BN features (grey -> 3 channels)."""

    def __init__(self, features: VGG16BNFeatures):
        super().__init__()
        self.features = features
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    def train(self, mode: bool = True):
        # Frozen feature extractor: its BatchNorm must keep the ImageNet running statistics.
        return super().train(False)

    def _normalised(self, grey: torch.Tensor) -> torch.Tensor:
        return (grey.expand(-1, 3, -1, -1) - self.mean) / self.std

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        predicted = self.features(self._normalised(prediction))
        with torch.no_grad():
            wanted = self.features(self._normalised(target))
        return sum(F.mse_loss(p, t) for p, t in zip(predicted, wanted))


class ReconstructionLoss(nn.Module):
    """MSE + lambda_grad * L_grad + lambda_perc * L_perc; returns (total, {term: value})."""

    def __init__(self, lambda_grad: float = 0.2, lambda_perc: float = 0.2, perceptual: str = "ssim", vgg_weights: str | None = None):
        super().__init__()
        if perceptual not in PERCEPTUAL_TERMS:
            raise InputError(f"unknown perceptual term {perceptual!r}; choose one of {', '.join(PERCEPTUAL_TERMS)}")
        if perceptual == "vgg" and not vgg_weights:
            raise InputError("the 'vgg' perceptual term needs a VGG16-BN weights file (--vgg-weights)")
        self.lambda_grad = lambda_grad
        self.lambda_perc = lambda_perc if perceptual != "none" else 0.0
        self.perceptual = perceptual
        self.vgg = VGGPerceptualLoss(load_vgg16_bn_features(vgg_weights)) if perceptual == "vgg" else None

    def perceptual_term(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.perceptual == "ssim":
            return ssim_loss(prediction, target)
        if self.perceptual == "vgg":
            return self.vgg(prediction, target)
        return prediction.new_zeros(())

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        mse = F.mse_loss(prediction, target)
        grad = gradient_loss(prediction, target)
        perc = self.perceptual_term(prediction, target)
        total = mse + self.lambda_grad * grad + self.lambda_perc * perc
        terms = {"loss": total.item(), "mse": mse.item(), "grad": grad.item(), "perc": perc.item()}
        return total, terms
