"""Image sets as a run reads them: in memory (the fast path) or streamed through a DataLoader.

A set whose float32 tensor would be larger than ``stream_above_mb`` MiB (``defaults.loading`` of a
suite, :class:`~logitnorm_bench.suite.Loading`) is *streamed*: its images are read batch by batch
through a :class:`~torch.utils.data.DataLoader` (``loader_workers`` worker processes, pinned memory on
CUDA, prefetch), so memory does not grow with the number of images.  A smaller set is loaded once
into one tensor, as before.

Both give bitwise the same results, so the setting is in no run's or cell's identity:

* a batch holds the same images in the same order, converted the same way (``default_collate``,
  then float32 images and int64 labels, as :func:`~logitnorm_bench.train.materialize` does);
* training's batches are the run generator's permutation cut into batches and fetched by index
  (:meth:`ImageSet.fetch`); the augmentation stays in the training loop, drawn from the same
  generator in the same order;
* torch's global random state advances as with the in-memory path: ``materialize`` iterates one
  DataLoader, which draws one number from it (its workers' base seed), so a streamed set that
  replaces it draws that one number when it is made, and its own loaders draw from a private
  generator.  Dropout in training and MC dropout's draws therefore see the same global stream.

A dataset must return the same item for the same index every time (the harness's noise sets are a
function of (seed, split, index)); one that draws from torch's global generator in ``__getitem__``
would give other images in worker processes than in the run's process.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset
from torch.utils.data._utils.collate import default_collate

from logitnorm_bench.suite import Loading

MIB = 2 ** 20

#: A streamed pass hands memory back to the OS every this many batches (see :func:`release_free_memory`).
TRIM_EVERY_BATCHES = 32


def _malloc_trim():
    """glibc's ``malloc_trim``, or None where there is none (macOS, musl, Windows)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Return the heap's free pages to the OS (glibc), so a long streamed pass stays flat.

    Measured on 200k 32x32 PNGs (benchmarks/stream_memory.py): every batch frees its image buffers,
    but the small per-batch outputs that a pass keeps (logits, scores) are allocated between them, so
    glibc cannot shrink its heap and the process's RSS grew with the number of batches (0.85 GiB at
    10k images, 2.76 GiB at 200k) although nothing was alive.  ``malloc_trim(0)`` releases those free
    pages (a few ms); torch has no setting for it.
    """
    if _TRIM is not None:
        _TRIM(0)


def tensor_mib(n: int, shape: Sequence[int]) -> float:
    """MiB of ``n`` float32 images of ``shape``: what holding the set in memory costs."""
    return n * math.prod(shape) * 4 / MIB


def streams(n: int, shape: Sequence[int], loading: Loading) -> bool:
    """Is a set of ``n`` images of ``shape`` streamed under ``loading``?  (``stream_above_mb: 0``: every set.)"""
    return tensor_mib(n, shape) > loading.stream_above_mb or loading.stream_above_mb == 0


def collate(batch: list) -> tuple[Tensor, Tensor]:
    """A batch of ``(image, label)`` items as (float32 images, int64 labels), as ``materialize`` makes them."""
    x, y = default_collate(batch)
    return x.float(), torch.as_tensor(y).long()


class ImageSet:
    """A set of labelled images: ``len``, :meth:`batches` in order, :meth:`fetch` by index, :meth:`take`."""

    def __len__(self) -> int:
        raise NotImplementedError

    def batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """(images, labels) of consecutive batches, in order."""
        raise NotImplementedError

    def fetch(self, index_batches: Sequence[Tensor]) -> Iterator[tuple[Tensor, Tensor]]:
        """(images, labels) of each batch of indices, in order."""
        raise NotImplementedError

    def take(self, idx: Tensor) -> Tensor:
        """The images at ``idx`` as one tensor (for a small sample)."""
        x, _ = next(iter(self.fetch([idx])))
        return x

    def labels(self) -> Tensor:
        raise NotImplementedError

    def dataset(self) -> Dataset:
        """The set as a Dataset of (float32 image, int64 label) items (``FitData.id_val``)."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop any worker processes kept between calls of :meth:`fetch`."""


class InMemory(ImageSet):
    """The fast path: the whole set as one tensor (on the CPU, or on the device with ``train.fast.gpu_data``)."""

    def __init__(self, x: Tensor, y: Tensor | None = None):
        self.x = x
        self.y = y if y is not None else torch.full((x.shape[0],), -1, dtype=torch.int64)

    def __len__(self) -> int:
        return self.x.shape[0]

    def batches(self, batch_size: int):
        for i in range(0, self.x.shape[0], batch_size):
            yield self.x[i:i + batch_size], self.y[i:i + batch_size]

    def fetch(self, index_batches):
        for idx in index_batches:
            idx = idx.to(self.x.device)
            yield self.x[idx], self.y[idx]

    def take(self, idx: Tensor) -> Tensor:
        return self.x[idx.to(self.x.device)]

    def labels(self) -> Tensor:
        return self.y

    def dataset(self) -> Dataset:
        return TensorDataset(self.x, self.y)

    def to(self, device) -> "InMemory":
        return InMemory(self.x.to(device), self.y.to(device))


class _Items(Dataset):
    """A dataset's items converted as :func:`collate` converts a batch (float32 image, int64 label)."""

    def __init__(self, ds: Dataset):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int):
        x, y = self.ds[index]
        return torch.as_tensor(x).float(), torch.as_tensor(y).long()


class _IndexBatches:
    """A batch sampler whose batches are set before each pass (so persistent workers serve every epoch).

    The batches are kept as given (a training's are views of its permutation) and made lists one at a
    time, as the loader asks: an epoch's indices as Python ints would cost ~36 bytes an image.
    """

    def __init__(self):
        self.batches: list[Tensor] = []

    def __iter__(self):
        return (idx.tolist() for idx in self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class Streamed(ImageSet):
    """A set read batch by batch through a DataLoader: memory does not grow with its size."""

    def __init__(self, ds: Dataset, workers: int = 0, pin_memory: bool = False, prefetch_factor: int = 4):
        if len(ds) == 0:
            raise ValueError("the dataset has no items")
        self.ds, self.workers, self.pin_memory = ds, int(workers), bool(pin_memory)
        self.prefetch_factor = prefetch_factor
        self._labels: Tensor | None = None
        self._fetcher: DataLoader | None = None
        self._sampler = _IndexBatches()

    def __len__(self) -> int:
        return len(self.ds)

    def _loader(self, **kw) -> DataLoader:
        extra = {"prefetch_factor": self.prefetch_factor} if self.workers else {}
        # A private generator: iterating a loader must not draw from torch's global one (see the module doc).
        return DataLoader(self.ds, num_workers=self.workers, pin_memory=self.pin_memory, collate_fn=collate,
                          generator=torch.Generator().manual_seed(0), **extra, **kw)

    def batches(self, batch_size: int):
        labels = []
        for x, y in _trimmed(iter(self._loader(batch_size=batch_size, shuffle=False))):
            labels.append(y)
            yield x, y
        # The labels come with the images: kept after a whole pass, so asking for them costs no other.
        self._labels = torch.cat(labels)

    def fetch(self, index_batches):
        self._sampler.batches = [idx.cpu() for idx in index_batches]
        if self._fetcher is None:
            # Workers kept between passes (an epoch each): a training starts them once, not every epoch.
            self._fetcher = self._loader(batch_sampler=self._sampler, persistent_workers=self.workers > 0)
        return _trimmed(iter(self._fetcher))

    def take(self, idx: Tensor) -> Tensor:
        x, _ = collate([self.ds[i] for i in idx.tolist()])  # a small sample: no workers to start
        return x

    def labels(self) -> Tensor:
        if self._labels is None:
            self._labels = torch.cat([torch.as_tensor(y).long().reshape(1) for _, y in
                                      (self.ds[i] for i in range(len(self.ds)))])
        return self._labels

    def dataset(self) -> Dataset:
        return _Items(self.ds)

    def close(self) -> None:
        self._fetcher = None  # its iterator shuts the persistent workers down when collected


def _trimmed(batches: Iterator) -> Iterator:
    """``batches`` as they come, with :func:`release_free_memory` every :data:`TRIM_EVERY_BATCHES`."""
    for i, item in enumerate(batches):
        yield item
        if i % TRIM_EVERY_BATCHES == TRIM_EVERY_BATCHES - 1:
            release_free_memory()
    release_free_memory()


def image_set(ds: Dataset, shape: Sequence[int], loading: Loading | None = None,
              device: torch.device | None = None) -> ImageSet:
    """``ds`` as the run reads it: :class:`Streamed` when its float32 tensor would exceed
    ``loading.stream_above_mb``, else :class:`InMemory` (loaded now, by ``materialize``).

    Called where ``materialize`` was: a streamed set draws the one number from torch's global
    generator that ``materialize``'s DataLoader would have drawn (none for a ``TensorDataset``,
    which ``materialize`` returns without a loader).
    """
    from logitnorm_bench.train import materialize

    loading = loading or Loading()
    if not streams(len(ds), shape, loading):
        return InMemory(*materialize(ds))
    if not (isinstance(ds, TensorDataset) and len(ds.tensors) >= 2) and len(ds):
        torch.empty((), dtype=torch.int64).random_()
    cuda = device is not None and torch.device(device).type == "cuda"
    return Streamed(ds, loading.loader_workers, pin_memory=cuda)


def as_image_set(x, y: Tensor | None = None) -> ImageSet:
    """An :class:`ImageSet` as given, or images (and labels) as tensors made one."""
    return x if isinstance(x, ImageSet) else InMemory(x, y)


def batches_of(x, batch_size: int) -> Iterator[Tensor]:
    """The images of ``x`` (a tensor or an :class:`ImageSet`) in consecutive batches."""
    if isinstance(x, ImageSet):
        for xb, _ in x.batches(batch_size):
            yield xb
    else:
        for i in range(0, x.shape[0], batch_size):
            yield x[i:i + batch_size]


def subset(ds: Dataset, idx: Tensor) -> Dataset:
    """The items of ``ds`` at ``idx`` (``ds`` itself when ``idx`` is every index in order)."""
    return Subset(ds, idx.tolist()) if len(idx) < len(ds) else ds
