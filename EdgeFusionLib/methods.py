"""Every fusion method a user can pick, in one registry.

* latent methods run the EH-DRAN encoder on both images, merge the latents with a
  rule from :mod:`EdgeFusionLib.rules` and decode (they need trained weights);
* pixel methods are the classical baselines of :mod:`EdgeFusionLib.baselines`
  (no weights), so every comparison can include them.
"""

from __future__ import annotations

import dataclasses

from .errors import InputError


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    needs_model: bool
    description: str


#: The method each task uses when none is chosen (measured on the validation cases, docs/results.md).
#: MRI-CT: `local-activity`, the best network rule by mean rank over the 13 metrics (second only to
#: the pixel maximum); the paper's SFNN gives the MRI only 4-23 % of the weight there (mean 14 %),
#: so its result is essentially the CT and the MRI's soft tissue is lost.
#: MRI-SPECT, MRI-PET: `sfnn-compensated`, the highest PSNR of all methods, above the paper's
#: headline; the MRI gets 72-99 % of the weight and the SPECT/PET keeps its colour (chroma).
DEFAULT_METHOD = {"MRI-CT": "local-activity", "MRI-SPECT": "sfnn-compensated", "MRI-PET": "sfnn-compensated"}


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
