"""An example ood-bench plugin: the ``maxlogit`` detector and the ``label_smoothing_ce`` loss."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from logitnorm_bench import hookimpl
from logitnorm_bench.components import Detector, Loss, ModelOutputs


class MaxLogit(Detector):
    """Maximum logit (Hendrycks et al., 2022): ``max_i f_i(x)``.  Higher = more in-distribution."""

    def score_outputs(self, outputs: ModelOutputs, model: nn.Module) -> Tensor:
        return outputs.logits.float().amax(dim=1)


class LabelSmoothingCE(Loss):
    """Cross-entropy against targets smoothed towards the uniform distribution."""

    def __init__(self, smoothing: float = 0.1):
        super().__init__()
        smoothing = float(smoothing)
        if not 0.0 <= smoothing < 1.0:  # a ValueError here becomes a one-line suite error
            raise ValueError(f"label_smoothing_ce: smoothing must be in [0, 1), got {smoothing!r}")
        self.smoothing = smoothing

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=self.smoothing)


@hookimpl
def register_detectors(register):
    register("maxlogit", MaxLogit, description="Maximum logit max_i f_i(x) (Hendrycks et al., 2022).")


@hookimpl
def register_losses(register):
    register("label_smoothing_ce", LabelSmoothingCE,
             description="Cross-entropy with label smoothing; param smoothing=0.1.")
