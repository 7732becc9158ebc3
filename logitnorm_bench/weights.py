"""Given weights: a checkpoint file, a pytorch-ood model-zoo entry (``pytorch-ood:<key>``) or torchvision's
published weights (``torchvision:<model>/<weights>``), loaded without unpickling objects."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from urllib.parse import urlparse

import torch

from logitnorm_bench.errors import ConfigError

log = logging.getLogger(__name__)

ZOO_PREFIX = "pytorch-ood:"
TORCHVISION_PREFIX = "torchvision:"
# torchvision's classification recipes train with cross-entropy: the zoo's word, mapped by ZOO_ALIASES.
TORCHVISION_LOSS = "crossentropy"
# torch.hub's own check (torch.hub.HASH_REGEX): the file name's "-<hex>." is the start of its SHA-256.
TORCHVISION_HASH = re.compile(r"-([a-f0-9]{6,})\.")
# pytorch-ood's zoo names its plain softmax-cross-entropy training "crossentropy"; every other zoo
# name (architecture, dataset, loss) is compared with the suite's after dropping "-" and "_".
ZOO_ALIASES = {"crossentropy": "ce"}


def load_given_weights(model: torch.nn.Module, weights: str, smoke: bool = False) -> dict:
    """Load a checkpoint file, a pytorch-ood model-zoo entry or torchvision's weights into the
    architecture; returns what was applied (for the run's record): the file and, for a zoo or
    torchvision entry, its own preprocessing.

    Never unpickles arbitrary objects: ``torch.load(weights_only=True)`` always.  (pytorch-ood's own
    ``load_model`` goes through ``torch.hub.load_state_dict_from_url``, which does not pass
    ``weights_only``; so we fetch its file ourselves, verify its SHA-256, and load it safely.)

    ``smoke``: torchvision's weights are never downloaded in a smoke run (which must work offline):
    when their file is not in torch's cache the architecture keeps its seeded random init, said in
    the log and in what is returned (``"random_init"``).
    """
    if weights.startswith(TORCHVISION_PREFIX):
        return _load_torchvision(model, weights, smoke)
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


# ------------------------------------------------------------------------------------------
# torchvision:<model>/<weights>
# ------------------------------------------------------------------------------------------

def torchvision_weights(weights: str):
    """``(model, Weights enum member)`` of ``torchvision:<model>/<weights>``, from torchvision's local
    metadata (no download).  ``DEFAULT`` is refused: it names another file when torchvision changes
    its default, and the run's identity is the string."""
    from torchvision import models

    model, sep, member = weights.removeprefix(TORCHVISION_PREFIX).partition("/")
    if not sep or not model or not member:
        raise ConfigError(f"weights '{weights}': expected {TORCHVISION_PREFIX}<model>/<weights>, "
                          f"e.g. {TORCHVISION_PREFIX}resnet50/IMAGENET1K_V1")
    try:
        enum = models.get_model_weights(model)
    except (ValueError, KeyError):
        raise ConfigError(f"weights '{weights}': torchvision has no model {model!r}; expected one of "
                          f"torchvision.models.list_models(), e.g. resnet50") from None
    names = [m.name for m in enum]  # without the alias DEFAULT
    if member == "DEFAULT":
        raise ConfigError(f"weights '{weights}': DEFAULT names another file whenever torchvision changes its "
                          f"default, and the run is identified by this string; expected one of {', '.join(names)}")
    if member not in names:
        raise ConfigError(f"weights '{weights}': torchvision's {model} has no weights {member!r}; expected one of "
                          f"{', '.join(names)}")
    return model, enum[member]


def torchvision_file(weights: str, entry, *, download: bool = True) -> Path:
    """torchvision's file of ``entry`` in torch's cache (``$TORCH_HOME/hub/checkpoints/<file>``, where
    torchvision itself keeps it), downloaded once unless ``download`` is off, and always checked:
    its SHA-256 must start with the hex string in its name, torch.hub's own check."""
    from logitnorm_bench.download import download_url, file_hash

    name = Path(urlparse(entry.url).path).name
    path = Path(torch.hub.get_dir()) / "checkpoints" / name
    if not path.exists():
        if not download:
            return path
        try:
            download_url(entry.url, path)
        except OSError as exc:
            raise ConfigError(f"weights '{weights}': download from {entry.url} failed ({exc}); put the file "
                              f"at {path}") from None
    prefix = TORCHVISION_HASH.search(name)
    digest = file_hash(path, "sha256")
    if prefix is None or not digest.startswith(prefix.group(1)):
        raise ConfigError(f"weights '{weights}': {path} has SHA-256 {digest[:16]}..., but its name says it starts "
                          f"with {prefix.group(1) if prefix else '(no hash in the name)'}; delete it to download "
                          f"it again")
    return path


def _load_torchvision(model: torch.nn.Module, weights: str, smoke: bool) -> dict:
    _, entry = torchvision_weights(weights)
    path = torchvision_file(weights, entry, download=not smoke)
    prep = entry.transforms()
    applied: dict = {"file": str(path), "weights": repr(entry),
                     "preprocessing": {"mean": list(prep.mean), "std": list(prep.std),
                                       "resize": list(prep.resize_size), "crop": list(prep.crop_size)}}
    if not path.is_file():  # smoke only: torchvision_file downloads otherwise
        log.warning("smoke: %s is not in torch's cache (%s); the model keeps its random init", weights, path)
        return {"weights": repr(entry), "random_init": f"smoke run: {path} not in torch's cache, not downloaded"}
    state = torch.load(path, map_location="cpu", weights_only=True)
    target = model.net if hasattr(model, "net") else model
    target.load_state_dict(state)
    if hasattr(model, "mean"):  # the weights' own normalisation (ImageNet's, as the ID dataset's)
        model.mean.copy_(torch.tensor(prep.mean, dtype=model.mean.dtype).view_as(model.mean))
        model.std.copy_(torch.tensor(prep.std, dtype=model.std.dtype).view_as(model.std))
    return applied


def check_torchvision_weights(weights: str, *, id_dataset: str, arch: str, arch_params: dict, loss: str,
                              plugins, id_dataset_params: dict | None = None) -> None:
    """Refuse torchvision weights that contradict the suite cell at plan time: an architecture that is
    not torchvision's model, a head of another class count, another input size, a loss other than
    ``ce`` (torchvision trains with cross-entropy; filed under another loss they would be recorded as
    that loss's result)."""
    model, entry = torchvision_weights(weights)
    factory = plugins.architectures.get(arch).factory
    theirs = getattr(factory, "torchvision_model", None)
    if theirs != model:
        what = f"torchvision's {theirs}" if theirs else "another network"
        raise ConfigError(f"weights '{weights}' are torchvision's {model}, but the cell's arch {arch!r} builds {what}; "
                          f"expected an architecture that builds torchvision's {model} "
                          f"({', '.join(_torchvision_archs(plugins, model)) or 'none registered'})")
    ds = plugins.datasets.get(id_dataset).factory(**(id_dataset_params or {}))
    loaded = factory.torchvision_classes(ds.num_classes, **arch_params)
    categories = len(entry.meta["categories"])
    if loaded != categories:
        raise ConfigError(f"weights '{weights}' have {categories} classes, but {arch} on {id_dataset} "
                          f"({ds.num_classes} classes) loads a head of {loaded}; expected an ID dataset of "
                          f"{categories} classes, or arch_params.classes naming a subset of them")
    side = entry.transforms().crop_size[0]
    if tuple(ds.input_shape[1:]) != (side, side):
        raise ConfigError(f"weights '{weights}' take {side}x{side} inputs, but {id_dataset}'s images are "
                          f"{ds.input_shape[1]}x{ds.input_shape[2]}; expected an ID dataset of that size")
    if _zoo_name(loss) != _zoo_name(TORCHVISION_LOSS):
        raise ConfigError(f"weights '{weights}' were trained with cross-entropy, but the cell says loss {loss!r}; "
                          f"expected loss: {_zoo_name(TORCHVISION_LOSS)}")


def _torchvision_archs(plugins, model: str) -> list[str]:
    """The registered architectures that build torchvision's ``model`` (for the error message)."""
    names = []
    for entry in plugins.architectures.entries():
        try:
            if getattr(entry.factory, "torchvision_model", None) == model:
                names.append(entry.name)
        except Exception:  # a plugin whose factory cannot be imported is not a candidate
            continue
    return names
