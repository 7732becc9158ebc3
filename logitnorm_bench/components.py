"""The contracts every plugin component fulfils.

A plugin registers *factories*: callables that take the component's parameters as keyword
arguments (the ``params`` mapping of a suite) and return the component.  The harness only
talks to components through the small interfaces below, so the paper's own components
(``plugins/ood_bench_paper``) and a third party's are interchangeable.

Conventions shared by every component:

* Images are float tensors in ``[0, 1]``, shape ``(C, H, W)``, *not* normalised.  The harness
  puts the ID dataset's normalisation inside the model (:class:`Normalized`), so an input
  perturbation (ODIN, GODIN) made in pixel space equals the official code's perturbation of
  the normalised image with the gradient sign divided by the per-channel std.
* Detector scores: **higher = more in-distribution** (the paper's direction).
* Metrics through the Python API are fractions; paper-facing tables are percentages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

# --------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------


@dataclass
class DataContext:
    """Where and how a dataset may get its data."""

    root: Path  #: the data root; each dataset documents its folder under it
    download: bool = True  #: may the dataset download missing data?
    seed: int = 0  #: seed for any random draw the dataset makes (noise images, crops)


class DatasetSource:
    """A dataset plugin component.

    Subclasses set the class attributes and implement :meth:`build`.  ``num_classes`` is
    0 for a dataset that only serves as OOD data.  ``mean``/``std`` are the normalisation
    the model applies when this dataset is the in-distribution dataset.
    """

    num_classes: int = 0
    input_shape: tuple[int, int, int] = (3, 32, 32)
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    splits: tuple[str, ...] = ("test",)

    def build(self, split: str, ctx: DataContext) -> Dataset:
        """Return a Dataset of ``(image, label)`` with images as described in the module docstring.

        OOD-only datasets use label ``-1``.  Raise :class:`logitnorm_bench.errors.DataMissingError`
        when the data is neither on disk nor downloadable, naming the folder and how to get it.
        """
        raise NotImplementedError

    def status(self, splits: tuple[str, ...], ctx: DataContext) -> "DataStatus":
        """Whether the data of ``splits`` is on disk under ``ctx.root``, never downloading
        (``ood-bench data``).

        Optional: this default builds each split with downloading off, so it knows present or
        missing but neither size nor source.  A dataset with files overrides it to say more (partial,
        checksum bad, the size on disk or to download, where it comes from).
        """
        from logitnorm_bench.errors import ChecksumError, DataMissingError

        off = DataContext(root=ctx.root, download=False, seed=ctx.seed)
        missing, bad = [], []
        for split in splits:
            try:
                self.build(split, off)
            except ChecksumError as exc:
                bad.append(f"{split}: {exc}")
            except DataMissingError as exc:
                missing.append(f"{split}: {exc}")
        if bad:
            return DataStatus("checksum bad", detail="; ".join(bad))
        if missing:
            state = "partial" if len(missing) < len(splits) else "missing"
            return DataStatus(state, detail="; ".join(missing))
        return DataStatus("present")


@dataclass
class DataStatus:
    """What :meth:`DatasetSource.status` finds."""

    STATES = ("present", "missing", "partial", "checksum bad")

    state: str  #: one of STATES
    size: int | None = None  #: bytes on disk when present, else bytes to download; None: unknown
    source: str | None = None  #: where the data comes from (a URL, "bundled", "generated")
    folder: str | None = None  #: where it lives under the data root
    detail: str = ""  #: what is missing or wrong, one line


# --------------------------------------------------------------------------------------
# Architectures
# --------------------------------------------------------------------------------------


@runtime_checkable
class Classifier(Protocol):
    """What an architecture factory ``(num_classes, input_shape, **params)`` must return.

    An ``nn.Module`` with ``forward(x) == head(features(x))``: ``features`` gives the
    penultimate features ``(B, D)`` and ``head`` is the final layer (an ``nn.Linear`` for
    every paper architecture; a loss such as GODIN may replace it).
    """

    head: nn.Module

    def features(self, x: Tensor) -> Tensor: ...

    def __call__(self, x: Tensor) -> Tensor: ...


class Normalized(nn.Module):
    """Wraps a classifier with the ID dataset's normalisation, keeping its contract."""

    def __init__(self, net: nn.Module, mean: Iterable[float], std: Iterable[float]):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    @property
    def head(self) -> nn.Module:
        return self.net.head

    def features(self, x: Tensor) -> Tensor:
        return self.net.features((x - self.mean) / self.std)

    def forward(self, x: Tensor) -> Tensor:
        return self.net.head(self.features(x))


# --------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------


class Loss(nn.Module):
    """A training loss: ``forward(logits, targets) -> scalar`` (mean over the batch).

    ``prepare_model`` may change the architecture before training (GODIN swaps the head);
    ``no_weight_decay`` names parameters trained without weight decay.  A loss that learns from
    auxiliary outliers sets ``uses_outliers``: with ``train.outliers`` its batches then end with
    outliers whose target is -1 (pytorch-ood's convention).
    """

    uses_outliers: bool = False

    def prepare_model(self, model: nn.Module, num_classes: int) -> nn.Module:
        return model

    def no_weight_decay(self, model: nn.Module) -> list[nn.Parameter]:
        return []


# --------------------------------------------------------------------------------------
# Detectors
# --------------------------------------------------------------------------------------


@dataclass
class ModelOutputs:
    """What the shared forward pass over one batch collects."""

    logits: Tensor  #: (B, K)
    features: Tensor | None = None  #: (B, D) penultimate features, when a detector needs them


@dataclass
class FitOutputs:
    """The model's outputs on a set of ID images (all on the CPU, float32).

    Computed once per trained model by the shared pass and handed to every fitted detector;
    ``features`` only to detectors that declared ``needs_features``.
    """

    logits: Tensor  #: (N, K)
    labels: Tensor  #: (N,) int64
    features: Tensor | None = None  #: (N, D) penultimate features
    total: int = 0  #: size of the split these N images were drawn from (N < total: a seeded subsample)

    def without_features(self) -> "FitOutputs":
        return FitOutputs(self.logits, self.labels, None, self.total)


@dataclass
class FitData:
    """What a detector that declared ``needs_fit`` receives: ID data only, never the test OOD sets.

    ``id_train``: outputs on the ID training images (un-augmented; a seeded subsample of at most
    ``evaluation.fit_train_samples`` of them, recorded).  ``id_val``: held-out ID images with labels,
    for detectors that must run the model on inputs (ODIN/GODIN-style tuning); ``id_val_outputs``:
    the model's outputs on them.  ``model`` in eval mode on ``device``.
    """

    model: nn.Module
    device: torch.device
    id_train: FitOutputs | None = None
    id_val: Dataset | None = None
    id_val_outputs: FitOutputs | None = None
    batch_size: int = 256
    extra: dict[str, Any] = field(default_factory=dict)


class Detector:
    """An OOD scorer.  Scores are **higher = more in-distribution**.

    Output-based detectors implement :meth:`score_outputs` and are served by the shared pass
    (set ``needs_features`` when they need penultimate features).  Detectors that need
    gradients with respect to the input set ``needs_input_grad`` and implement
    :meth:`score_inputs`, doing their own pass.
    """

    needs_features: bool = False
    needs_input_grad: bool = False
    needs_fit: bool = False

    def fit(self, data: FitData) -> dict[str, Any]:
        """Fit or tune on ID data; return what was chosen (goes into the record)."""
        return {}

    def score_outputs(self, outputs: ModelOutputs, model: nn.Module) -> Tensor:
        raise NotImplementedError(
            f"{type(self).__name__} does not implement score_outputs(outputs, model); a detector implements it, "
            f"or sets needs_input_grad = True and implements score_inputs(model, x)")

    def score_inputs(self, model: nn.Module, x: Tensor) -> Tensor:
        raise NotImplementedError(
            f"{type(self).__name__} sets needs_input_grad = True but does not implement score_inputs(model, x)")


# --------------------------------------------------------------------------------------
# Executors
# --------------------------------------------------------------------------------------


class Executor(Protocol):
    """What an executor factory ``(**options)`` returns.

    ``run`` takes work-item payloads (:meth:`logitnorm_bench.plan.WorkItem.to_payload`), runs each
    through :func:`logitnorm_bench.worker.execute_run` wherever it likes, and yields one summary
    dict per payload as it finishes (``run_id``, ``trained``, ``records_ok``, ``records_failed``,
    ``error``).  An optional class attribute ``CLI_OPTIONS`` of ``(flag, option, help)`` triples
    adds the executor's own flags to ``ood-bench run``.
    """

    def run(self, payloads: Iterable[dict]) -> Iterator[dict]: ...



# --------------------------------------------------------------------------------------
# Trackers: the contract lives in logitnorm_bench.trackers (free of torch, so that loading
# the plugins stays light); named here with the other contracts.
# --------------------------------------------------------------------------------------

from logitnorm_bench.trackers import TrackedRun, Tracker  # noqa: E402,F401
