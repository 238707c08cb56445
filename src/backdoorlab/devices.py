"""Where models run: one answer for loading, training, memory budgets and peak readings."""

from __future__ import annotations

import os

import torch

from .errors import BackdoorlabError

DEVICE_ENV = "BACKDOORLAB_DEVICE"


def default_device() -> str:
    """Where loaded models run: ``$BACKDOORLAB_DEVICE`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``)
    when set, else this process's GPU when PyTorch sees one (``cuda:$LOCAL_RANK`` under a
    distributed launch), else ``cpu``."""
    env = os.environ.get(DEVICE_ENV, "").strip()
    if env:
        try:
            dev = torch.device(env)
        except RuntimeError:
            raise BackdoorlabError(f"{DEVICE_ENV}={env!r}: not a device (cpu, cuda, cuda:N, "
                                   "mps)") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise BackdoorlabError(f"{DEVICE_ENV}={env!r}: PyTorch sees no CUDA device")
        return str(dev)
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0') or 0)}"
    return "cpu"


def on_cuda() -> bool:
    """True when models run on a CUDA GPU (:func:`default_device`): training then uses it, and
    memory budgets and peaks are the GPU's."""
    return default_device().startswith("cuda")
