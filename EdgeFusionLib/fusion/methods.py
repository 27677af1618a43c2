"""Every fusion method a user can pick, in one registry.

* latent methods run the EH-DRAN encoder on both images, merge the latents with a
  rule from :mod:`EdgeFusionLib.fusion.rules` and decode (they need trained weights);
* pixel methods are the classical baselines of :mod:`EdgeFusionLib.fusion.baselines`
  (no weights), so every comparison can include them.
"""

from __future__ import annotations

import dataclasses

from ..errors import InputError


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    needs_model: bool
    description: str


#: The method each task uses when none is chosen, measured on the validation cases (docs/results.md,
#: mean rank over 13 metrics among 12 methods): each is first there. MRI-SPECT: `sfnn-compensated`
#: (3.15, above the paper's PSNR headline; the SPECT keeps its colour through the chroma). MRI-CT and
#: MRI-PET: `local-activity` (4.00 and 3.00, ahead of the pixel maximum). On MRI-CT the SFNN rules
#: score far higher PSNR (23.5-24.5 dB) only because their weights give the MRI 1-15 % (mean 6 %):
#: their result is essentially the CT without the MRI's soft tissue.
DEFAULT_METHOD = {"MRI-CT": "local-activity", "MRI-SPECT": "sfnn-compensated", "MRI-PET": "local-activity"}


def _methods() -> dict[str, Method]:
    from .baselines import PIXEL_METHODS
    from .rules import LATENT_RULES

    methods = {name: Method(name, True, (rule.__doc__ or "").strip().splitlines()[0]) for name, rule in LATENT_RULES.items()}
    methods.update({name: Method(name, False, (fn.__doc__ or "").strip().splitlines()[0]) for name, fn in PIXEL_METHODS.items()})
    return methods


def method_names() -> list[str]:
    """All method names: latent rules first, then pixel baselines."""
    return list(_methods())


def get_method(name: str) -> Method:
    methods = _methods()
    if name not in methods:
        raise InputError(f"unknown fusion method {name!r}; choose one of {', '.join(methods)}")
    return methods[name]
