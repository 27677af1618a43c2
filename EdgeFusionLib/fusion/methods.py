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


#: The method each task uses when none is chosen, by leave-one-case-out cross-validation over all
#: development cases among the methods that keep both sources' brightest structures (bone, hot
#: spots; the salient losses at most 1 %): `salient-activity` (the local-activity decision map,
#: majority-voted, each source's brightest structures guarded) for MRI-CT and MRI-PET, and
#: `sfnn-guarded` (the decoder-compensated SFNN blend with a floor under those structures) for
#: MRI-SPECT, whose smooth uptake a blend keeps better than a per-pixel choice. The numbers, with
#: their spread over held-out cases, are in docs/results.md ("Choosing the default").
#: The faithful `sfnn` stays available as the paper's reproduction.
DEFAULT_METHOD = {"MRI-CT": "salient-activity", "MRI-SPECT": "sfnn-guarded", "MRI-PET": "salient-activity"}


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
