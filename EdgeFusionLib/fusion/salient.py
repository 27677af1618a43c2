"""``salient-activity``: the local-activity decision map, cleaned, with a guard for bright structures.

``local-activity`` (rules.py) takes every fused pixel from the source whose latent is locally
more active. Two things a reader sees at once went wrong with it (docs/results.md, salient
structures): where the other source's texture is busier, the hottest uptake of a SPECT or the
skull of a CT was replaced by the MRI's grey, and single pixels whose decision differs from all
their neighbours speckled the bone. This rule keeps the decision map and fixes both:

1. **majority vote**: each decision becomes the majority of its 3x3 neighbourhood (5 of 9), so no
   pixel is taken from a source that none of its neighbours comes from;
2. **salient guard**: where a source is in its own brightest structures (at or above its
   ``SALIENT_PERCENTILE``-th percentile over the foreground of the slice, the pixels where either
   source exceeds ``FOREGROUND_LEVEL``) and the map took the other source, which is more than
   ``SALIENT_LOSS_DROP`` darker there, that source gives the pixel. Bone and hot spots are then
   never replaced by the other's grey. The guard acts only where a loss would happen: guarding
   whole regions (the brighter source wherever either is salient) fused the bone's edges with the
   MRI's bright fat and ranked below the pixel maximum on the MRI-CT development cases
   (docs/results.md).

Every fused pixel is still exactly a pixel of one source, and the decoder is not run.
The percentile and the foreground level are those of the salient metrics
(``evaluation.metrics``): the guard protects exactly the structures they measure.

``sfnn-guarded`` guards a blend instead: the ``sfnn-compensated`` result (the SFNN weights per
slice, the decoder error given back), with a floor under each source's brightest pixels: where the
blend darkened them by more than ``GUARD_DROP``, they are lifted to that much below the source
(:func:`guard_salient`). It ranks higher on the 13 metrics than ``salient-activity`` on MRI-SPECT
(docs/results.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..evaluation.metrics import FOREGROUND_LEVEL, SALIENT_LOSS_DROP, SALIENT_PERCENTILE
from .rules import LATENT_RULES, CompensatedRule, DecisionMapRule, local_activity_selection

#: Side of the majority-vote box (pixels).
VOTE_WINDOW = 3
#: The most ``sfnn-guarded`` lets its blend darken a source's salient pixels (on the [0, 1] scale):
#: below the salient metrics' loss level ``SALIENT_LOSS_DROP``, with room for the 8-bit rounding and
#: colour conversion of the delivered image.
GUARD_DROP = 0.20


def majority_vote(selection: torch.Tensor, window: int = VOTE_WINDOW) -> torch.Tensor:
    """Each 0/1 decision (B, 1, H, W) replaced by the majority of its window x window box.

    At the image border the box is cut to the image; an exact tie there keeps the decision.
    """
    share = F.avg_pool2d(selection, window, stride=1, padding=window // 2, count_include_pad=False)
    return torch.where(share > 0.5, 1.0, torch.where(share < 0.5, 0.0, selection)).to(selection.dtype)


def salient_mask(image: torch.Tensor, other: torch.Tensor, percentile: float = SALIENT_PERCENTILE,
                 below: float = 0.0) -> torch.Tensor:
    """Per slice, the pixels of ``image`` (B, 1, H, W) in [0, 1] at or above its ``percentile``-th
    percentile over the foreground of the pair (either image above ``FOREGROUND_LEVEL``), less
    ``below``, and above ``FOREGROUND_LEVEL`` itself (B, 1, H, W) bool. A slice without foreground has none."""
    foreground = (image > FOREGROUND_LEVEL) | (other > FOREGROUND_LEVEL)
    mask = torch.zeros_like(foreground)
    for index in range(image.shape[0]):
        values = image[index][foreground[index]]
        if values.numel():
            level = torch.quantile(values.float().cpu(), percentile / 100).to(image.dtype).to(image.device)
            mask[index] = foreground[index] & (image[index] >= level - below) & (image[index] > FOREGROUND_LEVEL)
    return mask


class GuardedDecisionRule(DecisionMapRule):
    """A decision map that also sees the images: ``select(i1, i2, f1, f2)`` -> w1 (B, 1, H, W) in {0, 1}.

    Called on latents alone (``weights``/``__call__``) it gives the cleaned map without the guard.
    """

    def select(self, i1: torch.Tensor, i2: torch.Tensor, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        w1 = self.weights(f1, f2)
        mri_lost = salient_mask(i1, i2) & (w1 < 0.5) & (i2 < i1 - SALIENT_LOSS_DROP)
        other_lost = salient_mask(i2, i1) & (w1 > 0.5) & (i1 < i2 - SALIENT_LOSS_DROP)
        w1 = torch.where(mri_lost, 1.0, w1)
        return torch.where(other_lost, 0.0, w1).to(w1.dtype)


def cleaned_selection(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """``local_activity_selection`` after a ``majority_vote``."""
    return majority_vote(local_activity_selection(f1, f2))


SALIENT_ACTIVITY = GuardedDecisionRule(
    cleaned_selection,
    "Local-activity decision map, majority-voted (3x3), with each source's brightest structures "
    "(bone, hot spots) guarded.",
)


def guard_salient(fused: torch.Tensor, i1: torch.Tensor, i2: torch.Tensor, drop: float = GUARD_DROP) -> torch.Tensor:
    """``fused`` (B, 1, H, W) in [0, 1] with each source's salient pixels lifted to at most ``drop``
    below that source (the other source's first): a floor under bone and hot spots, not a swap.

    Only the darkening beyond ``drop`` is given back. Giving back the whole source pixel instead
    (the first form of this guard) put single bright texture pixels back into the blend as specks
    (1.3 isolated pixels per MRI-SPECT development pair, up to 32; docs/results.md). The floor also
    reaches ``SALIENT_LOSS_DROP`` below the salient level: a lifted pixel's neighbours that are no
    speck in the source are then lifted with it, so the floor cannot leave it standing alone as a
    speck (it did on the phantom's skull, where the blend had darkened the MRI's whole ring).
    """
    for image, other in ((i2, i1), (i1, i2)):
        floor = salient_mask(image, other, below=SALIENT_LOSS_DROP)
        fused = torch.where(floor, torch.maximum(fused, image - drop), fused)
    return fused


class GuardedCompensatedRule(CompensatedRule):
    """A :class:`~EdgeFusionLib.fusion.rules.CompensatedRule` whose result the engine passes through
    :func:`guard_salient`: the decoded blend everywhere, except where it darkened a source's bone or hot spot."""


SFNN_GUARDED = GuardedCompensatedRule(
    LATENT_RULES["sfnn-compensated"].weights,
    "SFNN (max2) weights per slice, decoder error compensated, each source's brightest structures guarded.",
)
