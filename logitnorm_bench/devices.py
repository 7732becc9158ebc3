"""Device names, checked in one place: the CLI, the API, the executors and the workers all use these."""

from __future__ import annotations

import re

from logitnorm_bench.errors import ConfigError

DEVICE_FORMS = "auto, cpu, cuda or cuda:N (or mps; meta for a dry run without data)"
_DEVICE = re.compile(r"^(auto|cpu|mps|meta|cuda(:\d+)?)$")


def check_device_spec(spec: str, *, option: str = "--device") -> str:
    """The spelling of a device (without asking the machine whether it has it); bad input otherwise."""
    if not isinstance(spec, str) or not _DEVICE.match(spec):
        raise ConfigError(f"{option} {spec!r}: expected {DEVICE_FORMS}")
    return spec


def resolve_device(spec: str, *, option: str = "--device"):
    """The torch device for ``spec`` on this machine; ``auto`` is CUDA when present, else CPU."""
    import torch

    check_device_spec(spec, option=option)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{option} {spec}: CUDA is not available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"{option} {spec}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"{option} {spec}: MPS is not available on this machine; use --device cpu")
    return dev
