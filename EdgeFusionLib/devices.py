"""Which torch device runs the network: one resolver for fusion, training and every front end."""

from __future__ import annotations

import re

from .errors import InputError

#: What a user may ask for. 'cuda:N' picks one of several GPUs (e.g. one per cluster worker).
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")

#: Slices per batch when the user does not choose, by device type. On CPU one slice at a time is
#: fastest (the 64-channel activations of a 256x256 slice already fill the caches, measured in
#: benchmarks/); a GPU wants many.
DEFAULT_BATCH_SIZE = {"cpu": 1, "cuda": 16, "mps": 8}


def _mps_available() -> bool:
    import torch

    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def check_device_name(device: str) -> str:
    """``device`` when it names a device ('auto', 'cpu', 'cuda', 'cuda:N', 'mps'), without asking whether
    this machine has it: for work that runs on other machines (cluster workers)."""
    if not isinstance(device, str) or not _DEVICE_PATTERN.match(device):
        raise InputError(f"unknown device {device!r}; choose one of {', '.join(DEVICE_CHOICES)} (or cuda:N)")
    return device


def resolve_device(device: str = "auto") -> str:
    """The device to run on: 'auto' -> 'cuda' if available, else 'mps', else 'cpu'.

    'cpu', 'cuda', 'cuda:N' and 'mps' are checked against this machine. Raises InputError
    for an unknown name or a device that is not here.
    """
    import torch

    check_device_name(device)
    cuda = torch.cuda.is_available()
    if device == "auto":
        return "cuda" if cuda else "mps" if _mps_available() else "cpu"
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        if not cuda or index >= torch.cuda.device_count():
            raise InputError(f"device {device!r} was requested but is not available on this machine")
    if device == "mps" and not _mps_available():
        raise InputError("device 'mps' was requested but is not available on this machine")
    return device


def device_type(device: str) -> str:
    """'cuda:1' -> 'cuda'; 'cpu' -> 'cpu'."""
    return device.split(":")[0]


def default_batch_size(device: str, batch_size: int | None = None) -> int:
    """``batch_size`` when given (a positive integer), else (None) the device's default."""
    if batch_size is None:
        return DEFAULT_BATCH_SIZE[device_type(device)]
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch size must be a positive integer, got {batch_size!r}")
    return batch_size


def available_devices() -> list[dict]:
    """Devices torch can use here, with a human-readable name each."""
    import platform

    import torch

    devices = [{"device": "cpu", "name": platform.processor() or platform.machine()}]
    for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        devices.append({"device": f"cuda:{index}", "name": torch.cuda.get_device_name(index)})
    if _mps_available():
        devices.append({"device": "mps", "name": "Apple Metal"})
    return devices


def device_name(device: str) -> str:
    """A human-readable name for a resolved device ('cuda' -> the first GPU's name)."""
    wanted = f"{device}:0" if device == "cuda" else device
    return next((entry["name"] for entry in available_devices() if entry["device"] == wanted), device)
