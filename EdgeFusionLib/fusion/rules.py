"""Parameter-free fusion rules on EH-DRAN latents (docs/method.md §2).

Every rule takes the two encoder outputs f1 (MRI) and f2 (other modality), each
(B, C, H, W), and returns the fused latent (B, C, H, W) that the decoder turns
into the fused image. B is a batch of slices; scalar weights are per slice.
Two kinds of WeightedRule are used differently by the engine: CompensatedRule adds
the decoder's error back, DecisionMapRule applies its weights to the images and
skips the decoder.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
import torch.nn.functional as F

LatentRule = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Guards divisions where both sources have (near) zero activity: the weights fall back to 1/2.
_EPS = 1e-12


def nuclear_norms(maps: torch.Tensor) -> torch.Tensor:
    """Nuclear norm (sum of singular values) of every H x W map: (B, C, H, W) -> (B, C), float64.

    Computed in one batched call, without a host sync per map: the singular values of
    an H x W matrix S are the square roots of the eigenvalues of its Gram matrix S^T S
    (taken over the smaller side). float64 keeps tiny singular values from being drowned
    by rounding noise (float32 Gram matrices lose ~1e-4 of the norm on low-rank maps).
    """
    s = maps.to(torch.float64)
    if s.shape[-2] < s.shape[-1]:
        s = s.transpose(-1, -2)
    gram = s.transpose(-1, -2) @ s
    with _single_threaded(gram.device):
        eigenvalues = torch.linalg.eigvalsh(gram)
    return eigenvalues.clamp_min(0).sqrt().sum(-1)


@contextlib.contextmanager
def _single_threaded(device: torch.device):
    """One CPU thread for small batched LAPACK calls: MKL's threaded eigensolver gains nothing on
    256x256 matrices and, when another process holds a core, its spinning threads made it hundreds of
    times slower (measured: docs/engineering.md)."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


#: Power-iteration steps for the lower bound of the largest singular value (any count is valid).
_POWER_STEPS = 3
#: Relative widening of the float32 bounds (float32 rounding is ~1e-6).
_BOUND_SLACK = 1e-4
#: Channels whose nuclear norm is computed exactly together while pruning.
_PRUNE_GROUP = 4


def max_nuclear_norm(maps: torch.Tensor) -> torch.Tensor:
    """max over channels of the nuclear norm of each H x W map: (B, C, H, W) -> (B,), float64.

    Exact, but computes few nuclear norms. For every map, cheap bounds
    ``sigma1 <= ||S||_* <= sigma1 + sqrt(r - 1) * sqrt(||S||_F^2 - sigma1^2)`` (Cauchy-Schwarz
    on the other r - 1 singular values) are evaluated with a power-iteration estimate of
    sigma1; maps are then computed exactly in decreasing order of their upper bound until
    the next bound falls below the best exact value. Softmax maps of real images have a
    few dominant channels, so typically 4-8 of 64 maps need the exact computation.
    """
    s = maps.float()
    if s.shape[-2] < s.shape[-1]:
        s = s.transpose(-1, -2)
    rank = s.shape[-1]
    # The bounds are computed in float32 (memory traffic, not arithmetic, is their cost) and
    # widened by _BOUND_SLACK, far above float32 rounding, so they stay valid bounds.
    frobenius2 = torch.linalg.vector_norm(s, dim=(-2, -1)).double().square() * (1 + _BOUND_SLACK)
    vector = torch.ones(*s.shape[:-2], rank, 1, dtype=s.dtype, device=s.device)
    for _ in range(_POWER_STEPS):
        vector = s.transpose(-1, -2) @ (s @ vector)
        vector = vector / vector.norm(dim=-2, keepdim=True).clamp_min(1e-30)
    sigma1 = (s @ vector).norm(dim=(-2, -1)).double() * (1 - _BOUND_SLACK)  # <= largest singular value
    rest = (frobenius2 - sigma1.square()).clamp_min(0).sqrt()
    upper = sigma1 + (rank - 1) ** 0.5 * rest
    # The bound is decreasing in sigma1 only above sqrt(||S||_F^2 / r); below, use the global one.
    upper = torch.where(sigma1 >= (frobenius2 / rank).sqrt(), upper, (rank * frobenius2).sqrt())

    best = torch.zeros(s.shape[0], dtype=torch.float64)
    for index, (bounds, order) in enumerate(zip(*torch.sort(upper.cpu(), dim=1, descending=True))):
        for start in range(0, len(order), _PRUNE_GROUP):
            if bounds[start] < best[index] * (1 - 1e-9):  # no remaining map can be larger
                break
            group = order[start : start + _PRUNE_GROUP].to(s.device)
            best[index] = max(best[index], nuclear_norms(s[index, group][None]).max().cpu())
    return best.to(maps.device)


#: Channel reductions of the softmax nuclear norms n_i^k -> activity a_i (per slice).
#: 'mean' and 'sum' give the same weights (the ratio is scale-free); both are kept
#: because the released code offers both names.
SFNN_REDUCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "max2": lambda n: n.amax(dim=1) ** 2,
    "max": lambda n: n.amax(dim=1),
    "mean": lambda n: n.mean(dim=1),
    "mean2": lambda n: n.mean(dim=1) ** 2,
    "sum": lambda n: n.sum(dim=1),
    "sum2": lambda n: n.sum(dim=1) ** 2,
}


def sfnn_weights(f1: torch.Tensor, f2: torch.Tensor, reduction: str = "max2") -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax nuclear-norm weights (w1, w2), each (B,), w1 + w2 = 1.

    S_i = softmax over channels of f_i; n_i^k = ||S_i^k||_*; a_i = reduction over k;
    w1 = a_1 / (a_1 + a_2) (the squares are part of the 'max2'/'mean2'/'sum2' reductions).
    """
    # Contiguous maps: a channels-last softmax would be copied by every matrix product below.
    a1, a2 = (_sfnn_activity(torch.softmax(f, dim=1).contiguous(), reduction) for f in (f1, f2))
    w1 = (a1 / (a1 + a2).clamp_min(_EPS)).to(f1.dtype).to(f1.device)  # float32 first: MPS has no float64
    return w1, 1 - w1


def _sfnn_activity(softmax: torch.Tensor, reduction: str) -> torch.Tensor:
    """a_i per slice (B,). The max reductions only need the largest norm: pruned on CPU,
    where each exact norm is costly; one batched call on GPUs, where it is not. MPS has no
    float64, so its maps are decomposed on the CPU (the activity is returned there)."""
    if softmax.device.type == "mps":
        softmax = softmax.cpu()
    if reduction in ("max", "max2") and softmax.device.type == "cpu":
        largest = max_nuclear_norm(softmax)
        return largest if reduction == "max" else largest.square()
    return SFNN_REDUCTIONS[reduction](nuclear_norms(softmax))


def _weighted(f1: torch.Tensor, f2: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """w1 * f1 + w2 * f2 with per-slice scalar weights (B,) or per-pixel weights (B, 1|C, H, W)."""
    if w1.dim() == 1:
        w1, w2 = w1.view(-1, 1, 1, 1), w2.view(-1, 1, 1, 1)
    return w1 * f1 + w2 * f2


def sfnn(reduction: str = "max2") -> LatentRule:
    """The paper's rule: one scalar weight per source per slice from softmax nuclear norms."""
    if reduction not in SFNN_REDUCTIONS:
        raise ValueError(f"unknown SFNN reduction {reduction!r}; choose one of {', '.join(SFNN_REDUCTIONS)}")

    def rule(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        return _weighted(f1, f2, *sfnn_weights(f1, f2, reduction))

    rule.__doc__ = f"SFNN fusion with the '{reduction}' channel reduction."
    return rule


def average(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """Element-wise mean of the latents."""
    return (f1 + f2) / 2


def add(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of the latents."""
    return f1 + f2


def maximum(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum of the latents."""
    return torch.maximum(f1, f2)


def energy_ratio(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """k_i = f_i^2 / (f_1^2 + f_2^2) per element (1/2 where both are zero); k1 f1 + k2 f2."""
    e1, e2 = f1.square(), f2.square()
    total = e1 + e2
    k1 = torch.where(total > _EPS, e1 / total.clamp_min(_EPS), torch.full_like(total, 0.5))
    return _weighted(f1, f2, k1, 1 - k1)


def l1_weighting(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """Global L1 weighting per slice: w_i = ||f_i||_1 / (||f_1||_1 + ||f_2||_1)."""
    n1 = f1.abs().flatten(1).sum(1)
    n2 = f2.abs().flatten(1).sum(1)
    w1 = torch.where(n1 + n2 > _EPS, n1 / (n1 + n2).clamp_min(_EPS), torch.full_like(n1, 0.5))
    return _weighted(f1, f2, w1, 1 - w1)


#: Box size (pixels) of the local activity that ``local-activity`` compares. 3: on the bundled phantom,
#: boxes of 5 or 7 let the MRI's surroundings outvote a small calcification-like spot seen only in the
#: CT, and it vanished from the fusion (Testing/test_bundled_weights.py keeps it). Larger boxes ranked
#: slightly better on the MRI-CT validation cases (7: mean rank 4.62 vs 4.92 for 3, measured with the
#: earlier decoded form of the rule), but losing a small finding is not worth that.
LOCAL_ACTIVITY_WINDOW = 3


def local_activity(f: torch.Tensor, window: int = LOCAL_ACTIVITY_WINDOW) -> torch.Tensor:
    """Per-pixel activity of a latent: its L1 norm over channels, averaged in a window x window box.

    (B, C, H, W) -> (B, 1, H, W).
    """
    activity = f.abs().sum(dim=1, keepdim=True)
    return F.avg_pool2d(activity, window, stride=1, padding=window // 2, count_include_pad=False)


class WeightedRule:
    """A rule given by the MRI's weight w1 (w2 = 1 - w1), computed from the two latents.

    Called on latents it returns ``w1 f1 + w2 f2``; the engine applies the weights as
    the subclass says. ``weights(f1, f2)`` returns w1, (B,) per slice or (B, 1, H, W) per pixel.
    """

    def __init__(self, weights: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], doc: str):
        self.weights = weights
        self.__doc__ = doc

    def __call__(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        w1 = self.weights(f1, f2)
        return _weighted(f1, f2, w1, 1 - w1)


class CompensatedRule(WeightedRule):
    """Weights per slice, w1 (B,), whose decoder error is given back.

    The engine decodes ``w1 f1 + w2 f2`` and adds ``w1 (I1 - D(f1)) + w2 (I2 - D(f2))``:
    the autoencoder's own reconstruction error of each source, weighted the same way, so
    that the decoder's blur does not reach the result and fusing an image with itself
    returns it.
    """


class DecisionMapRule(WeightedRule):
    """Weights per pixel in {0, 1}, w1 (B, 1, H, W): the latents only decide which source to show.

    The engine returns ``w1 I1 + (1 - w1) I2``: every fused pixel is a pixel of one source,
    exactly, and the decoder is not run. Measured against decoding the selected latents with
    the decoder error given back (which is the same image away from the selection's seams,
    where the decoder blended the sources over its 7x7 receptive field): a better mean rank
    on the MRI-CT and MRI-PET validation cases (docs/results.md), no visible difference, and
    no decoder passes.
    """

    def select(self, i1: torch.Tensor, i2: torch.Tensor, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        """w1 (B, 1, H, W) from the images i1, i2 (B, 1, H, W) and their latents; this one uses the latents."""
        return self.weights(f1, f2)


def local_activity_selection(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """w1 = 1 where the MRI latent's local activity (``local_activity``) is the larger, else 0."""
    return (local_activity(f1) >= local_activity(f2)).to(f1.dtype)


LATENT_RULES: dict[str, LatentRule] = {
    "sfnn": sfnn("max2"),
    **{f"sfnn-{name}": sfnn(name) for name in SFNN_REDUCTIONS if name != "max2"},
    "average": average,
    "sum": add,
    "max": maximum,
    "energy-ratio": energy_ratio,
    "l1-weighting": l1_weighting,
    "sfnn-compensated": CompensatedRule(
        lambda f1, f2: sfnn_weights(f1, f2, "max2")[0],
        "SFNN (max2) weights per slice, decoder error compensated.",
    ),
    "local-activity": DecisionMapRule(
        local_activity_selection,
        f"Per pixel, the pixel of the source whose latent has the larger local activity "
        f"({LOCAL_ACTIVITY_WINDOW}x{LOCAL_ACTIVITY_WINDOW} box).",
    ),
}


def _register_salient() -> None:
    from .salient import SALIENT_ACTIVITY, SFNN_GUARDED  # salient.py builds on this module

    LATENT_RULES["salient-activity"] = SALIENT_ACTIVITY
    LATENT_RULES["sfnn-guarded"] = SFNN_GUARDED


_register_salient()
