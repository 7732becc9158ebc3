"""Given weights: a checkpoint file or a pytorch-ood model-zoo entry, loaded without unpickling objects."""

from __future__ import annotations

from pathlib import Path

import torch

from logitnorm_bench.errors import ConfigError

ZOO_PREFIX = "pytorch-ood:"


def load_given_weights(model: torch.nn.Module, weights: str) -> None:
    """Load a checkpoint file or a pytorch-ood model-zoo entry into the architecture.

    Never unpickles arbitrary objects: ``torch.load(weights_only=True)`` always.  (pytorch-ood's own
    ``load_model`` goes through ``torch.hub.load_state_dict_from_url``, which does not pass
    ``weights_only``; so we fetch its file ourselves, verify its SHA-256, and load it safely.)
    """
    if weights.startswith(ZOO_PREFIX):
        path = zoo_file(weights[len(ZOO_PREFIX):])
    else:
        path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(f"weights file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    # The harness wraps the architecture with the ID normalisation (``Normalized.net``).
    target = model.net if hasattr(model, "net") else model
    target.load_state_dict(state)


def zoo_file(identifier: str) -> Path:
    """Download (once) a pytorch-ood model-zoo checkpoint, verified against its SHA-256."""
    from pytorch_ood.model import registry

    from logitnorm_bench.download import download_url

    try:
        entry = registry.get_model_info(identifier)
    except ValueError as exc:
        raise ConfigError(f"weights '{ZOO_PREFIX}{identifier}': {exc}") from None
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    name = entry.file_name or Path(entry.url.split("?")[0]).name
    path = cache / name
    if not path.exists():
        try:
            download_url(entry.url, path, sha256=entry.sha256)
        except OSError as exc:
            raise ConfigError(f"weights '{ZOO_PREFIX}{identifier}': download from {entry.url} failed "
                              f"({exc}); put the file at {path}") from None
    return path
