"""Smoke mode: every dataset swapped for a synthetic stand-in of the same shape and class count.

The stand-ins are learnable (each class is a fixed random pattern plus noise) so the training
and the detectors do real work on them, but the numbers mean nothing: records say ``smoke``.

The recipe is cut to 4 SGD steps of at most 16 images at 1/100 of the recipe's learning rate.
At the recipe's own rate, a logit-normalising loss's first step is tens of times larger than CE's (its gradient
scales with ``1 / (tau * ||f||)`` and ``||f||`` is about 0.5-1.5 at initialisation): 4 such steps
leave the raw logits of the paper's CIFAR networks at norms of 1e5-1e14 in eval mode
(BatchNorm's running statistics lag far behind), every MSP score exactly 1 and every AUROC exactly
50, so the smoke could not tell a broken detector from a working one (issue 12 item 22;
benchmarks/logitnorm_early_steps.py measures them).
"""

from __future__ import annotations

import zlib

import torch
from torch.utils.data import TensorDataset

from logitnorm_bench.components import DatasetSource

SIZES = {"train": 128, "val": 32, "test": 48}
OOD_SIZE = 24
LR_FACTOR = 0.01  #: smoke trains at this fraction of the recipe's learning rate (see above)
SMOKE_DRAWS = 2  #: a suite with ``ood_draws > 1`` is smoke-tested with this many


class SmokeSource(DatasetSource):
    def __init__(self, name: str, real: DatasetSource):
        self.name = name
        self.num_classes = real.num_classes
        self.input_shape = tuple(real.input_shape)
        self.mean, self.std = real.mean, real.std
        # The real dataset's splits (CIFAR has no val split: train.holdout then carves one out)
        self.splits = tuple(sp for sp in ("train", "val", "test") if sp in real.splits) if real.num_classes else ("test",)

    def build(self, split, ctx):
        # Seeded by the dataset's name and split only: the same stand-in for every run.
        g = torch.Generator().manual_seed(zlib.crc32(f"{self.name}/{split}".encode()))
        if self.num_classes == 0:
            x = (torch.rand((OOD_SIZE, *self.input_shape), generator=g) * 0.6 + 0.2)
            return TensorDataset(x, torch.full((OOD_SIZE,), -1, dtype=torch.long))
        n = SIZES.get(split, 128)
        pg = torch.Generator().manual_seed(zlib.crc32(self.name.encode()))
        patterns = torch.rand((self.num_classes, *self.input_shape), generator=pg)
        y = torch.arange(n) % self.num_classes
        x = (0.7 * patterns[y] + 0.3 * torch.rand((n, *self.input_shape), generator=g)).clamp(0, 1)
        return TensorDataset(x, y)


def smoke_suite(suite):
    """The same grid with a smoke recipe: 2 epochs of 2 small batches at 1/100 of the learning rate,
    small evaluation samples, and at most :data:`SMOKE_DRAWS` OOD draws."""
    import dataclasses

    exps = []
    for exp in suite.experiments:
        train = dataclasses.replace(exp.train, epochs=2, max_batches_per_epoch=2, lr=exp.train.lr * LR_FACTOR,
                                    batch_size=min(exp.train.batch_size, 16), milestones=[1],
                                    monitor_samples=16, holdout=min(exp.train.holdout, SIZES["val"]))
        evaluation = dataclasses.replace(exp.evaluation, ood_samples=OOD_SIZE, id_val_samples=32,
                                         batch_size=min(exp.evaluation.batch_size, 128))
        if evaluation.ood_draws > 1:
            # Two draws wire the averaging as well as ten (the paper's); each is a different sample
            # of the stand-in.  Ten draws of all 24 images were ten identical passes, and made
            # ODIN's input gradients 60% of the paper smoke's time.
            evaluation = dataclasses.replace(evaluation, ood_draws=SMOKE_DRAWS, ood_samples=OOD_SIZE * 3 // 4)
        exps.append(dataclasses.replace(exp, train=train, evaluation=evaluation))
    return dataclasses.replace(suite, name=f"{suite.name} (smoke)", experiments=exps)
