"""Views of the registered datasets that a run reads through.

:class:`DataSources` builds each dataset once per run and, in smoke mode, swaps in synthetic
stand-ins; with ``train.holdout`` it keeps part of an ID dataset's training images out of training
as a ``val`` split (:class:`HeldOut`); :class:`ValidationSources` serves a selection's validation
data under the name "test", so the evaluation engine scores validation cells with the same code as
test cells.
"""

from __future__ import annotations

import inspect

import torch
from torch.utils.data import Subset

from logitnorm_bench.errors import ConfigError
from logitnorm_bench.evaluation import sample_indices
from logitnorm_bench.plan import source_key


class DataSources:
    """(name, params) -> DatasetSource, built once per run; smoke mode swaps in synthetic stand-ins.

    ``params`` are the suite's ``id_dataset_params`` / ``ood_dataset_params``, passed to the factory.
    The first source built is the ID dataset: OOD sets whose factory takes ``shape`` (noise, patches)
    and whose params do not set it are built with the ID images' shape.
    """

    def __init__(self, plugins, smoke: bool, holdout: int = 0):
        self.plugins, self.smoke, self.cache = plugins, smoke, {}
        self.holdout = int(holdout or 0)  #: train.holdout: ID training images kept out of training
        self.id_shape = None

    def __call__(self, name: str, params: dict | None = None):
        key = source_key(name, params)
        if key not in self.cache:
            entry = self.plugins.datasets.get(name)
            kwargs = dict(params or {})
            if self.id_shape is not None and "shape" not in kwargs and _accepts(entry.factory, "shape"):
                kwargs["shape"] = self.id_shape
            source = entry.factory(**kwargs)
            if self.smoke:
                from logitnorm_bench.smoke import SmokeSource

                source = SmokeSource(name, source)
            if self.holdout and source.num_classes and "val" not in source.splits:
                source = HeldOut(source, self.holdout)
            if self.id_shape is None:
                self.id_shape = tuple(source.input_shape)
            self.cache[key] = source
        return self.cache[key]


#: The held-out images are the same for every seed and run: a sample drawn with this seed.
HOLDOUT_SEED = 0


class HeldOut:
    """An ID dataset without a ``val`` split, with ``k`` of its training images moved to one.

    ``train`` is the training split less the held-out images, ``val`` the held-out images: a fixed
    seeded sample (:data:`HOLDOUT_SEED`, the same for every run seed), so a run trained on ``train``
    never sees them.  ``val_origin`` tells the evaluation where its ID validation images come from.
    """

    val_origin = "holdout"

    def __init__(self, source, k: int):
        self.source, self.k = source, int(k)
        for attr in ("num_classes", "input_shape", "mean", "std"):
            setattr(self, attr, getattr(source, attr))
        self.splits = ("train", "val", *(s for s in source.splits if s not in ("train", "val")))
        self._cache = None

    def build(self, split: str, ctx):
        if split not in ("train", "val"):
            return self.source.build(split, ctx)
        if self._cache is None:
            train = self.source.build("train", ctx)
            if self.k >= len(train):
                raise ConfigError(f"train.holdout is {self.k}, but the training split has only {len(train)} images")
            held = sample_indices(len(train), self.k, HOLDOUT_SEED)
            keep = torch.ones(len(train), dtype=torch.bool)
            keep[held] = False
            self._cache = {"train": Subset(train, keep.nonzero().flatten().tolist()),
                           "val": Subset(train, held.tolist())}
        return self._cache[split]


class ValidationSources:
    """Sources whose "test" split is their validation data (for a selection's validation cells).

    ID: the dataset's ``val`` split (its own, or the held-out images of ``train.holdout``), else a
    seeded sample of its training images (never test images);
    OOD: the set's ``val`` split (the noise sets draw other images there than in ``test``).
    """

    def __init__(self, sources: DataSources, protocol: dict):
        self.sources, self.protocol, self.cache = sources, protocol, {}

    def __call__(self, name: str, params: dict | None = None):
        key = source_key(name, params)
        if key not in self.cache:
            self.cache[key] = _ValidationView(self.sources(name, params), self.protocol)
        return self.cache[key]


class _ValidationView:
    def __init__(self, source, protocol: dict):
        self.source, self.protocol = source, protocol
        for attr in ("num_classes", "input_shape", "mean", "std"):
            setattr(self, attr, getattr(source, attr))
        self.splits = tuple(source.splits)
        self.val_origin = getattr(source, "val_origin", "val")

    def build(self, split: str, ctx):
        if split != "test":
            return self.source.build(split, ctx)
        if "val" in self.source.splits:
            return self.source.build("val", ctx)
        if not self.source.num_classes:
            raise ConfigError(f"this OOD dataset has no val split to select on (splits: {self.source.splits})")
        train = self.source.build("train", ctx)
        idx = sample_indices(len(train), self.protocol["id_val_samples"], self.protocol["sample_seed"] + 1)
        return Subset(train, idx.tolist())


def outlier_images(sources: DataSources, recipe: dict, ctx, load=None):
    """The training outliers of ``recipe["outliers"]`` (None when it has none): a seeded sample of the
    dataset's split in a seeded random order (Outlier Exposure reads its 300K random images in their
    shuffled order), as one tensor, or as ``load(dataset)`` makes them (the worker's: streamed when
    large); ``ctx.seed`` (the run's seed) seeds both."""
    import torch

    from logitnorm_bench.train import materialize

    spec = recipe.get("outliers") or {}
    if not spec.get("dataset"):
        return None
    ds = sources(spec["dataset"]).build(spec["split"], ctx)
    if len(ds) == 0:
        raise ValueError(f"outliers: {spec['dataset']} ({spec['split']}) has no images")
    k = len(ds) if spec.get("samples") is None else min(spec["samples"], len(ds))
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(ctx.seed))[:k]
    if load is not None:
        return load(Subset(ds, order.tolist()))
    x, _ = materialize(Subset(ds, order.tolist()))
    return x


def _accepts(factory, name: str) -> bool:
    try:
        return name in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
