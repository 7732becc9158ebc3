"""Given weights: a checkpoint file or a pytorch-ood model-zoo entry, loaded without unpickling objects."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from logitnorm_bench.errors import ConfigError

ZOO_PREFIX = "pytorch-ood:"
# pytorch-ood's zoo names its plain softmax-cross-entropy training "crossentropy"; every other zoo
# name (architecture, dataset, loss) is compared with the suite's after dropping "-" and "_".
ZOO_ALIASES = {"crossentropy": "ce"}


def load_given_weights(model: torch.nn.Module, weights: str) -> dict:
    """Load a checkpoint file or a pytorch-ood model-zoo entry into the architecture; returns what
    was applied (for the run's record): the file and, for a zoo entry, its own preprocessing.

    Never unpickles arbitrary objects: ``torch.load(weights_only=True)`` always.  (pytorch-ood's own
    ``load_model`` goes through ``torch.hub.load_state_dict_from_url``, which does not pass
    ``weights_only``; so we fetch its file ourselves, verify its SHA-256, and load it safely.)
    """
    applied: dict = {}
    entry = None
    if weights.startswith(ZOO_PREFIX):
        entry = zoo_entry(weights)
        path = zoo_file(entry)
    else:
        path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(f"weights file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if entry is not None and entry.state_dict_transform is not None:
        state = entry.state_dict_transform(state)
    # The harness wraps the architecture with the ID normalisation (``Normalized.net``).
    target = model.net if hasattr(model, "net") else model
    target.load_state_dict(state)
    applied["file"] = str(path)
    prep = getattr(entry, "preprocessing", None) if entry is not None else None
    if prep is not None and hasattr(model, "mean") and hasattr(prep, "mean"):
        # The zoo entry's own normalisation, not the ID dataset's: e.g. most of pytorch-ood's CIFAR-100
        # models were trained with CIFAR-100 statistics.
        model.mean.copy_(torch.tensor(prep.mean, dtype=model.mean.dtype).view_as(model.mean))
        model.std.copy_(torch.tensor(prep.std, dtype=model.std.dtype).view_as(model.std))
        applied["preprocessing"] = {"mean": list(prep.mean), "std": list(prep.std)}
    return applied


def zoo_entry(weights: str):
    """The pytorch-ood model-zoo entry named by ``pytorch-ood:<key>`` (local metadata, no download)."""
    from pytorch_ood.model import registry

    try:
        return registry.get_model_info(weights.removeprefix(ZOO_PREFIX))
    except ValueError as exc:
        raise ConfigError(f"weights '{weights}': {exc}") from None


def _zoo_name(name: str | None) -> str:
    name = ZOO_ALIASES.get(name or "", name or "")
    return re.sub(r"[^a-z0-9]", "", name.lower())


def check_zoo_weights(weights: str, *, id_dataset: str, arch: str, loss: str) -> None:
    """Refuse a zoo entry whose training contradicts the suite cell it is filed under (a CIFAR-100
    model trained with one loss, filed under another, would be recorded as the other's result)."""
    entry = zoo_entry(weights)
    for what, zoo, ours in (("dataset", entry.dataset, id_dataset), ("architecture", entry.arch, arch),
                            ("loss", entry.loss, loss)):
        if zoo is not None and _zoo_name(zoo) != _zoo_name(ours):
            raise ConfigError(f"weights '{weights}' were trained with {what} {zoo!r}, but the cell says "
                              f"{ours!r}; expected weights that match the cell's id_dataset, arch and loss")


def zoo_file(entry) -> Path:
    """Download (once) a pytorch-ood model-zoo checkpoint; the file is verified against its SHA-256
    whether it was just downloaded or already in the cache."""
    from logitnorm_bench.download import download_url, file_hash

    cache = Path(torch.hub.get_dir()) / "checkpoints"
    path = cache / (entry.file_name or Path(entry.url.split("?")[0]).name)
    if not path.exists():
        try:
            download_url(entry.url, path, sha256=entry.sha256)
        except OSError as exc:
            raise ConfigError(f"weights '{ZOO_PREFIX}{entry.key}': download from {entry.url} failed "
                              f"({exc}); put the file at {path}") from None
    elif file_hash(path, "sha256") != entry.sha256:
        raise ConfigError(f"weights '{ZOO_PREFIX}{entry.key}': {path} does not match the zoo's SHA-256 "
                          f"{entry.sha256[:16]}...; delete it to download it again")
    return path
