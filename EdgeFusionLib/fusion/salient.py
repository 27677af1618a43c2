"""``salient-activity``: the local-activity decision map, cleaned, with a guard for bright structures.

``local-activity`` (rules.py) takes every fused pixel from the source whose latent is locally
more active. Two things a reader sees at once went wrong with it (docs/results.md, salient
structures): where the other source's texture is busier, the hottest uptake of a SPECT or the
skull of a CT was replaced by the MRI's grey, and single pixels whose decision differs from all
their neighbours speckled the bone. This rule keeps the decision map and fixes both:

1. **majority vote**: each decision becomes the majority of its 3x3 neighbourhood (5 of 9), so no
   pixel is taken from a source that none of its neighbours comes from;
2. **salient guard**: where exactly one source is in its own brightest structures (at or above its
   ``SALIENT_PERCENTILE``-th percentile over the foreground of the slice, the pixels where either
   source exceeds ``FOREGROUND_LEVEL``), that source gives the pixel; where both are, the brighter
   does. Bone and hot spots are then never replaced by the other's grey.

Every fused pixel is still exactly a pixel of one source, and the decoder is not run.
The percentile and the foreground level are those of the salient metrics
(``evaluation.metrics``): the guard protects exactly the structures they measure.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..evaluation.metrics import FOREGROUND_LEVEL, SALIENT_PERCENTILE
from .rules import DecisionMapRule, local_activity_selection

#: Side of the majority-vote box (pixels).
VOTE_WINDOW = 3


def majority_vote(selection: torch.Tensor, window: int = VOTE_WINDOW) -> torch.Tensor:
    """Each 0/1 decision (B, 1, H, W) replaced by the majority of its window x window box.

    At the image border the box is cut to the image; an exact tie there keeps the decision.
    """
    share = F.avg_pool2d(selection, window, stride=1, padding=window // 2, count_include_pad=False)
    return torch.where(share > 0.5, 1.0, torch.where(share < 0.5, 0.0, selection)).to(selection.dtype)


def salient_mask(image: torch.Tensor, other: torch.Tensor, percentile: float = SALIENT_PERCENTILE) -> torch.Tensor:
    """Per slice, the pixels of ``image`` (B, 1, H, W) in [0, 1] at or above its ``percentile``-th
    percentile over the foreground of the pair (either image above ``FOREGROUND_LEVEL``) and
    above ``FOREGROUND_LEVEL`` itself (B, 1, H, W) bool. A slice without foreground has none."""
    foreground = (image > FOREGROUND_LEVEL) | (other > FOREGROUND_LEVEL)
    mask = torch.zeros_like(foreground)
    for index in range(image.shape[0]):
        values = image[index][foreground[index]]
        if values.numel():
            level = torch.quantile(values.float().cpu(), percentile / 100).to(image.dtype).to(image.device)
            mask[index] = foreground[index] & (image[index] >= level) & (image[index] > FOREGROUND_LEVEL)
    return mask


def _grown(mask: torch.Tensor) -> torch.Tensor:
    """A (B, 1, H, W) bool mask dilated by one pixel (3x3 box)."""
    return F.max_pool2d(mask.to(torch.float32), 3, stride=1, padding=1) > 0


class GuardedDecisionRule(DecisionMapRule):
    """A decision map that also sees the images: ``select(i1, i2, f1, f2)`` -> w1 (B, 1, H, W) in {0, 1}.

    Called on latents alone (``weights``/``__call__``) it gives the cleaned map without the guard.
    """

    def select(self, i1: torch.Tensor, i2: torch.Tensor, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        w1 = self.weights(f1, f2)
        # Grown by one pixel: a guarded pixel then has its own source around it, never a speck of it.
        salient1, salient2 = (_grown(salient_mask(a, b)) for a, b in ((i1, i2), (i2, i1)))
        brighter1 = (i1 >= i2).to(w1.dtype)
        w1 = torch.where(salient1 & ~salient2, 1.0, w1)
        w1 = torch.where(salient2 & ~salient1, 0.0, w1)
        return torch.where(salient1 & salient2, brighter1, w1).to(w1.dtype)


def cleaned_selection(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """``local_activity_selection`` after a ``majority_vote``."""
    return majority_vote(local_activity_selection(f1, f2))


SALIENT_ACTIVITY = GuardedDecisionRule(
    cleaned_selection,
    "Local-activity decision map, majority-voted (3x3), with each source's brightest structures "
    "(bone, hot spots) guarded.",
)
