"""The options of one fusion, checked once and written once (Slicer job files, cohort rows, web sessions).

Every front end builds a :class:`FusionOptions`, calls :meth:`FusionOptions.check` before any
work, and hands :meth:`FusionOptions.arguments` to :func:`EdgeFusionLib.fusion.pipeline.fuse_images`.
A job that runs in another process carries :meth:`FusionOptions.to_json` and rebuilds the same
options with :meth:`FusionOptions.from_json`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import InputError


@dataclasses.dataclass(frozen=True)
class FusionOptions:
    """How to fuse, apart from the two images and the modality.

    method:       fusion method name; None: the task's default (``methods.DEFAULT_METHOD``).
    axis:         numpy slicing axis of volumes (0, 1, 2); None: the acquisition plane.
    device:       'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.
    batch_size:   slices per batch; None or 0: the device's default (``devices.DEFAULT_BATCH_SIZE``).
    colour_table: (K, 3) colours in [0, 1] a scalar SPECT/PET is shown through, fused as colour.
    colour_range: the (low, high) values the colour table is stretched over; None: the counts window.
    ct_window:    (low, high) of a CT in its own units; None: ``intensity.window_for``'s default.
    registration: one of ``registration.REGISTRATION_CHOICES``: 'auto' (rigid unless both images
                  share a DICOM frame of reference or are 2D), 'none', 'rigid' or 'affine'.
    """

    method: str | None = None
    axis: int | None = None
    device: str = "auto"
    batch_size: int | None = None
    colour_table: np.ndarray | None = dataclasses.field(default=None, compare=False)
    colour_range: tuple[float, float] | None = None
    ct_window: tuple[float, float] | None = None
    registration: str = "auto"

    def __post_init__(self):
        # Frozen: normalise through object.__setattr__. 0 is how forms say "the default".
        if self.batch_size == 0:
            object.__setattr__(self, "batch_size", None)
        if self.method == "":
            object.__setattr__(self, "method", None)
        for name in ("colour_range", "ct_window"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(v) for v in value))
        if self.colour_table is not None:
            object.__setattr__(self, "colour_table", np.asarray(self.colour_table, dtype=np.float32))

    def check(self, modality: str | None = None) -> None:
        """Raise InputError for options that cannot work, before any work.

        ``modality`` ('ct', 'spect', 'pet'): also check the options that depend on it
        (a CT window for a CT, a colour table for SPECT/PET); None checks the rest only.
        """
        from ..devices import default_batch_size, resolve_device
        from ..modality import check_modality
        from ..registration import check_choice
        from .intensity import IntensityWindow
        from .methods import get_method

        check_choice(self.registration)
        if self.method is not None:
            get_method(self.method)
        if self.axis not in (None, 0, 1, 2):
            raise InputError(f"slice axis must be 0, 1 or 2, got {self.axis!r}")
        default_batch_size(resolve_device(self.device), self.batch_size)
        for window in (self.ct_window, self.colour_range):
            if window is not None:
                IntensityWindow(*window)  # low < high, finite
        if self.colour_table is not None:
            table = self.colour_table
            if table.ndim != 2 or table.shape[1] not in (3, 4) or len(table) < 2 or not np.all(np.isfinite(table)):
                raise InputError(f"a colour table must be (K >= 2, 3) finite colours, got shape {table.shape}")
        if modality is None:
            return
        other = check_modality(modality)
        if self.ct_window is not None and other.shown_in_colour:
            raise InputError(f"a CT window applies to a CT, and the other image is {other.label}")
        if self.colour_table is not None and not other.shown_in_colour:
            raise InputError(f"a colour table applies to SPECT or PET, not {other.label}")

    def arguments(self) -> dict:
        """Keyword arguments of :func:`EdgeFusionLib.fusion.pipeline.fuse_images`."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    def to_json(self) -> dict:
        """A JSON-serialisable dict; :meth:`from_json` gives the same options back."""
        values = self.arguments()
        if self.colour_table is not None:
            values["colour_table"] = self.colour_table.tolist()
        for name in ("colour_range", "ct_window"):
            if values[name] is not None:
                values[name] = list(values[name])
        return values

    @classmethod
    def from_json(cls, values: dict) -> FusionOptions:
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise InputError(f"unknown fusion options: {', '.join(sorted(unknown))}")
        return cls(**values)
