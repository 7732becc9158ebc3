"""pytorch-ood as an ood-bench plugin: its classifier detectors and losses, and a training-outlier set.

One entry point, ``pytorch_ood = "ood_bench_pytorch_ood"`` (group ``ood_bench``), registers

* every pytorch-ood 0.4 detector that applies to an image classifier (``detectors.py``), scores
  turned into higher = more in-distribution and fitted from the harness's shared
  :class:`~logitnorm_bench.components.FitData`;
* pytorch-ood's classifier losses, including those trained with auxiliary outliers
  (``train.outliers``; ``losses.py``);
* ``blobs``, a bundled outlier set for training (``datasets.py``).

Names the paper plugin already provides (``msp``, ``odin``, ``energy``, ``gradnorm``; ``ce``,
``logitnorm``) are not registered again.  docs/components.md lists what is registered under which
name, and what is left out and why.
"""

from .datasets import register_datasets
from .detectors import register_detectors
from .losses import register_losses

__all__ = ["register_datasets", "register_detectors", "register_losses"]
