"""``blobs``: a bundled set of auxiliary outliers for training (Outlier Exposure and its kin).

Outlier Exposure's synthetic "Blobs" (Hendrycks et al., 2019, their code's test set): Bernoulli(0.7)
pixels on a 32x32 grid, blurred with a Gaussian (sigma 1.5 pixels), values below 0.75 set to 0.  Here
each channel is drawn and blurred on its own, and the 32x32 image is area-resized to ``shape`` (the
harness passes the ID images' shape: 1x8x8 for the digits).

Amorphous, spatially smooth, mostly-black shapes with bright interiors: a different process from
every OOD set the bundled suites evaluate on (crops of the sample photos, i.i.d. Gaussian and
uniform pixel noise), so training on them never sees an evaluation image or its generator.  Image
``i`` of a split is a pure function of (seed, split, i); ``train`` and ``test`` draw different images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from ood_bench_paper.datasets import NoiseImages
from torch.utils.data import Dataset

from logitnorm_bench import hookimpl
from logitnorm_bench.plugins import register_defined

from ood_bench_pytorch_ood import plugin
from logitnorm_bench.components import DataContext, DatasetSource

GRID = 32  #: the side the blobs are drawn at (Outlier Exposure's CIFAR size)
SIGMA = 1.5
P_ON = 0.7
THRESHOLD = 0.75
_STREAMS = {"train": 0, "test": 1}


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = int(4.0 * sigma + 0.5)  # scipy's and skimage's truncate=4.0
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


_KERNEL = _gaussian_kernel(SIGMA)


def blur(x: torch.Tensor, kernel: torch.Tensor = _KERNEL) -> torch.Tensor:
    """Separable Gaussian blur of ``(C, H, W)`` with edge replication (skimage's default mode 'nearest')."""
    r = kernel.shape[0] // 2
    c = x.shape[0]
    x = F.pad(x[None], (r, r, r, r), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return x[0]


def draw_blob(shape: tuple[int, int, int], g: torch.Generator) -> torch.Tensor:
    c, h, w = shape
    x = (torch.rand((c, GRID, GRID), generator=g) < P_ON).float()
    x = blur(x)
    x = torch.where(x < THRESHOLD, torch.zeros_like(x), x)
    if (h, w) != (GRID, GRID):
        mode = "area" if h <= GRID and w <= GRID else "bilinear"
        x = F.interpolate(x[None], size=(h, w), mode=mode)[0]
    return x.clamp_(0.0, 1.0)


class Blobs(DatasetSource):
    """Outlier Exposure's synthetic blobs (OOD, label -1), ``n`` per split, resized to ``shape``."""

    splits = ("train", "test")

    def __init__(self, n: int = 10000, shape=None, seed: int | None = None):
        shape = (3, GRID, GRID) if shape is None else tuple(int(s) for s in shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"blobs: shape must be (C, H, W) with positive sizes, got {shape}")
        if int(n) < 1:
            raise ValueError(f"blobs: n must be >= 1, got {n}")
        self.n, self.input_shape, self.seed = int(n), shape, seed
        self.mean, self.std = (0.5,) * shape[0], (0.5,) * shape[0]  # unused: OOD only

    def build(self, split: str, ctx: DataContext) -> Dataset:
        if split not in self.splits:
            raise ValueError(f"blobs: no split {split!r}; it has {', '.join(self.splits)}")
        seed = ctx.seed if self.seed is None else self.seed
        return NoiseImages(self.n, self.input_shape, draw_blob, int(seed), _STREAMS[split])


@hookimpl
def register_datasets(register):
    register_defined(register, plugin.DATASETS, globals())
