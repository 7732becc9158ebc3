"""pytorch-ood as an ood-bench plugin: its classifier detectors and losses, and a training-outlier set.

Three entry points (group ``ood_bench``), the light objects of ``plugin.py``, register

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

