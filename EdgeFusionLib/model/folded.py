"""Inference-only EH-DRAN encoder with the same outputs and about half the arithmetic.

Two facts of the architecture make most of the encoder's convolutions collapse:

* the shallow features are a 1x1 convolution of a one-channel image,
  ``F0_k = w_k I + b_k``, so every convolution of F0 is a convolution of the two
  maps [I, ONE] (ONE = 1 inside the image, 0 in the zero padding, which keeps the
  borders exact);
* the residual attention ``X = I + M(I) F0`` therefore has channels
  ``X_k = I + w_k P + b_k Q`` with ``P = M(I) I`` and ``Q = M(I)``: the dilated
  block (three 64->64 convolutions, the 1x1 merge and the BatchNorm, all linear)
  is three 3->64 convolutions of [I, P, Q].

The dense DRGO branch, the Sobel branch and the pyramid keep full 64-channel work.
Everything else is precomputed once from the trained weights (eval mode: BatchNorm
uses running statistics, dropout is off). ``Testing/test_network.py`` checks it
against :class:`EdgeFusionLib.model.network.Encoder` to float precision, borders included.
Tensors are kept channels-last, which oneDNN runs ~1.5x faster on CPU.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .network import EHDRAN, SharedBatchNorm, attention_mask


def _batchnorm_affine(norm: SharedBatchNorm, use: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with norm(x, use) == scale * x + shift per channel in eval mode."""
    scale = norm.weight / torch.sqrt(norm.running_var[use] + norm.eps)
    return scale, norm.bias - scale * norm.running_mean[use]


class FoldedEncoder(nn.Module):
    """Same function as ``model.encoder.eval()``: image (B, 1, H, W) -> latent (B, 64, H, W)."""

    def __init__(self, model: EHDRAN):
        super().__init__()
        encoder = model.encoder
        with torch.no_grad():
            w = encoder.shallow.weight.flatten()  # (64,) F0_k = w_k I + b_k
            b = encoder.shallow.bias

            # Dilated block + merge + BatchNorm as three 3->64 convolutions of [I, P, Q].
            scale, shift = _batchnorm_affine(encoder.shared_norm, use=0)
            merge = encoder.dilated.merge.weight.flatten(1)  # (64, 3 * 64)
            channels = w.numel()
            self.dilations = [branch.dilation[0] for branch in encoder.dilated.branches]
            kernels, bias = [], encoder.dilated.merge.bias.clone()
            for index, branch in enumerate(encoder.dilated.branches):
                m = merge[:, index * channels : (index + 1) * channels]  # (64, 64)
                weight = torch.einsum("om,mkyx->okyx", m, branch.weight)  # merged (64, 64, 3, 3)
                kernels.append(torch.stack([weight.sum(1), torch.einsum("okyx,k->oyx", weight, w),
                                            torch.einsum("okyx,k->oyx", weight, b)], dim=1))
                bias = bias + m @ branch.bias
            self.dilated_weights = nn.ParameterList(
                nn.Parameter((k * scale.view(-1, 1, 1, 1)).contiguous(memory_format=torch.channels_last), requires_grad=False)
                for k in kernels
            )
            self.dilated_bias = nn.Parameter(scale * bias + shift, requires_grad=False)

            # Pyramid keeps its shared conv; the second use of the shared BatchNorm is an affine map.
            self.shared_conv = copy.deepcopy(encoder.pyramid.shared_conv)  # a copy: channels-last must not touch the model
            self.levels = encoder.pyramid.levels
            scale, shift = _batchnorm_affine(encoder.shared_norm, use=1)
            self.deep_scale = nn.Parameter(scale.view(1, -1, 1, 1).clone(), requires_grad=False)
            self.deep_shift = nn.Parameter(shift.view(1, -1, 1, 1).clone(), requires_grad=False)

            # DRGO: dense1 and both Sobel kernels are convolutions of [I, ONE], done in one call.
            drgo = encoder.drgo
            dense1 = torch.einsum("okyx,k->oyx", drgo.dense1.weight, w), torch.einsum("okyx,k->oyx", drgo.dense1.weight, b)
            sobel_x = drgo.gradient.sobel_x.weight[:, 0]  # (64, 3, 3) per-channel kernels
            sobel_y = drgo.gradient.sobel_y.weight[:, 0]
            from_image = torch.cat([dense1[0], w.view(-1, 1, 1) * sobel_x, w.view(-1, 1, 1) * sobel_y])
            from_one = torch.cat([dense1[1], b.view(-1, 1, 1) * sobel_x, b.view(-1, 1, 1) * sobel_y])
            self.f0_weight = nn.Parameter(torch.stack([from_image, from_one], dim=1).contiguous(memory_format=torch.channels_last),
                                          requires_grad=False)
            self.f0_bias = nn.Parameter(torch.cat([drgo.dense1.bias, w.new_zeros(2 * channels)]), requires_grad=False)

            # dense2 on [F0, G1] -> on [I, ONE, G1].
            w2 = drgo.dense2.weight  # (128, 128, 3, 3): first 64 inputs F0, last 64 G1
            self.dense2_weight = nn.Parameter(
                torch.cat([torch.einsum("okyx,k->oyx", w2[:, :channels], w).unsqueeze(1),
                           torch.einsum("okyx,k->oyx", w2[:, :channels], b).unsqueeze(1),
                           w2[:, channels:]], dim=1).contiguous(memory_format=torch.channels_last),
                requires_grad=False,
            )
            self.dense2_bias = nn.Parameter(drgo.dense2.bias.clone(), requires_grad=False)
            # One 1x1 map of [G2, |Sx F0|, |Sy F0|, I, P, Q] gives dense_out(G2) + gradient_out(|Sx F0| + |Sy F0|)
            # + X, since X_k = I + w_k P + b_k Q: the encoder's outer residual costs no extra pass.
            gradient_out = drgo.gradient_out.weight.flatten(1)
            self.out_weight = nn.Parameter(
                torch.cat([drgo.dense_out.weight.flatten(1), gradient_out, gradient_out,
                           w.new_ones(channels, 1), w.view(-1, 1), b.view(-1, 1)], dim=1).t().contiguous(),
                requires_grad=False,
            )  # (2 * 64 + 2 * 64 + 3, 64), for a matmul on channels-last memory
            self.out_bias = nn.Parameter(drgo.dense_out.bias + drgo.gradient_out.bias, requires_grad=False)
            # M(X): the 2x2 mean of X_k = I + w_k P + b_k Q is the same 1x1 map [1, w_k, b_k] of pooled [I, P, Q].
            self.residual_weight = nn.Parameter(torch.stack([w.new_ones(channels), w, b], dim=1).view(channels, 3, 1, 1).clone(),
                                                requires_grad=False)
            self.negative_slope = drgo.activation.negative_slope
            self.channels = channels
        self.shared_conv.to(memory_format=torch.channels_last)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # Written for few temporaries: every 64-channel map not made by a convolution is updated in
        # place, and the nearest-upsampled attention masks are broadcast, never materialised.
        c = self.channels
        mask = attention_mask(image)  # M(I), (B, 1, H, W)
        z = torch.cat([image, mask * image, mask], dim=1).contiguous(memory_format=torch.channels_last)  # [I, P, Q]
        d = F.conv2d(z, self.dilated_weights[0], self.dilated_bias, padding=self.dilations[0], dilation=self.dilations[0])
        for weight, dilation in zip(self.dilated_weights[1:], self.dilations[1:]):
            d += F.conv2d(z, weight, padding=dilation, dilation=dilation)

        # Pyramid attention: P = D + M(D) * (C(D) + C(C(D)) + C(C(C(D)))), in place in D.
        mask_d = F.relu(F.avg_pool2d(d, 2))
        level = total = self.shared_conv(d)
        for _ in range(self.levels - 1):
            level = self.shared_conv(level)
            total = total.add_(level)  # after the next level was made from it, the first level is free to use
        _blocks(d).addcmul_(_blocks(total), _blocks(mask_d, pooled=True))
        del total, level, mask_d

        # DRGO from [I, ONE]: G1 = phi(dense1 F0) and |Sx F0|, |Sy F0| from one convolution.
        image_one = torch.cat([image, torch.ones_like(image)], dim=1).contiguous(memory_format=torch.channels_last)
        f0_maps = F.conv2d(image_one, self.f0_weight, self.f0_bias, padding=1)
        F.leaky_relu_(f0_maps[:, :c], self.negative_slope)
        f0_maps[:, c:].abs_()
        g2 = F.conv2d(torch.cat([image_one, f0_maps[:, :c]], dim=1), self.dense2_weight, self.dense2_bias, padding=1)
        F.leaky_relu_(g2, self.negative_slope)

        # Y = X + M(X) * (scale * P + shift) + DRGO. X and DRGO's 1x1 maps are matrix products on the
        # channels-last rows of [G2 | |Sx F0|, |Sy F0| | I, P, Q], accumulated without concatenating them.
        batch, _, height, width = image.shape
        out = torch.addmm(self.out_bias, _rows(g2), self.out_weight[: 2 * c])
        out.addmm_(_rows(f0_maps)[:, c:], self.out_weight[2 * c : 4 * c])
        out.addmm_(_rows(z), self.out_weight[4 * c :])
        out = out.view(batch, height, width, c).permute(0, 3, 1, 2)
        del g2, f0_maps
        mask_x = F.relu(F.conv2d(F.avg_pool2d(z, 2), self.residual_weight))  # M(X) at half resolution
        out_blocks = _blocks(out)
        out_blocks.addcmul_(_blocks(d), _blocks(mask_x * self.deep_scale, pooled=True))
        out_blocks.add_(_blocks(mask_x * self.deep_shift, pooled=True))
        return out


def _rows(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) channels-last -> its (B * H * W, C) rows, a view (no copy)."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def _blocks(x: torch.Tensor, pooled: bool = False) -> torch.Tensor:
    """View (B, C, H, W) as (B, C, H/2, 2, W/2, 2); a pooled (B, C, H/2, W/2) map as (B, C, H/2, 1, W/2, 1),
    which broadcasts like its nearest 2x upsampling."""
    b, c, h, w = x.shape
    return x.view(b, c, h, 1, w, 1) if pooled else x.view(b, c, h // 2, 2, w // 2, 2)
