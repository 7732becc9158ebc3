"""pytorch-ood 0.4's classifier losses as ood-bench losses.

Each wraps the pytorch-ood loss of the same meaning and calls it unchanged.  Losses that learn from
auxiliary outliers set ``uses_outliers = True``: a suite then gives them ``train.outliers`` and every
training batch holds the ID images followed by a batch of outliers with target ``-1`` (pytorch-ood's
convention for OOD samples; see logitnorm_bench/train.py).
"""

from __future__ import annotations

import math

import torch
from pytorch_ood import loss as pl
from torch import Tensor, nn

from logitnorm_bench import hookimpl

from ood_bench_pytorch_ood import plugin
from logitnorm_bench.components import Loss


def _non_negative(name: str, value: float) -> float:
    value = float(value)
    if not value >= 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


class OutlierExposure(Loss):
    """Outlier Exposure (Hendrycks et al., 2019): cross-entropy on ID samples plus ``alpha`` times the
    cross-entropy of outliers to the uniform distribution, ``-(mean_k f_k - logsumexp f)``.

    pytorch-ood's ``OutlierExposureLoss`` averages ``CE + alpha * OE`` over the whole batch, ID and
    outliers together (the official code averages each over its own part).
    """

    uses_outliers = True

    def __init__(self, alpha: float = 0.5):
        super().__init__()
        self.alpha = _non_negative("oe: alpha", alpha)
        self.impl = pl.OutlierExposureLoss(alpha=self.alpha)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return self.impl(logits, targets)


class EnergyRegularized(Loss):
    """Energy-bounded learning (Liu et al., 2020): cross-entropy on ID samples plus ``alpha`` times the squared
    hinges ``relu(E_in - margin_in)^2`` and ``relu(margin_out - E_out)^2`` of the energy ``E = -logsumexp f``,
    each averaged over its own part of the batch (as the official code)."""

    uses_outliers = True

    def __init__(self, alpha: float = 0.1, margin_in: float = -25.0, margin_out: float = -7.0):
        super().__init__()
        self.alpha = _non_negative("energy_reg: alpha", alpha)
        self.margin_in, self.margin_out = float(margin_in), float(margin_out)
        if not self.margin_in < self.margin_out:
            raise ValueError(f"energy_reg: margin_in must be below margin_out, got {margin_in!r} and {margin_out!r}")
        self.impl = pl.EnergyRegularizedLoss(alpha=self.alpha, margin_in=self.margin_in, margin_out=self.margin_out)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return self.impl(logits, targets)


class EntropicOpenSet(Loss):
    """Entropic open-set loss (Dhamija et al., 2018): cross-entropy on ID samples, cross-entropy to the
    uniform distribution (``-mean_k log softmax_k``) on outliers."""

    uses_outliers = True

    def __init__(self):
        super().__init__()
        self.impl = pl.EntropicOpenSetLoss()

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return self.impl(logits, targets)


class Objectosphere(Loss):
    """Objectosphere (Dhamija et al., 2018): the entropic open-set loss plus ``alpha`` times
    ``relu(xi - ||phi||)^2`` on ID samples and ``||phi||^2`` on outliers, ``phi`` the penultimate features.

    The loss needs the features of the batch the logits came from: :meth:`prepare_model` hooks the model's
    head, which sees exactly those features on every forward pass with gradients on.
    """

    uses_outliers = True

    def __init__(self, alpha: float = 1.0, xi: float = 1.0):
        super().__init__()
        self.alpha = _non_negative("objectosphere: alpha", alpha)
        self.xi = _non_negative("objectosphere: xi", xi)
        self.impl = pl.ObjectosphereLoss(alpha=self.alpha, xi=self.xi)
        self._features: Tensor | None = None
        self._hooked: nn.Module | None = None

    def prepare_model(self, model: nn.Module, num_classes: int) -> nn.Module:
        if self._hooked is not model.head:
            model.head.register_forward_pre_hook(self._capture)
            self._hooked = model.head
        return model

    def _capture(self, module: nn.Module, args: tuple) -> None:
        if torch.is_grad_enabled():  # a training step (or a gradient pass); never the evaluation's no-grad passes
            self._features = args[0]

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        features, self._features = self._features, None
        if features is None or features.shape[0] != logits.shape[0]:
            raise RuntimeError("objectosphere: no penultimate features for these logits; the logits must come from "
                               "a forward pass with gradients of the model given to prepare_model()")
        return self.impl(logits, features, targets)


class CAC(Loss):
    """Class anchor clustering (Miller et al., 2021) on the logits: anchors ``magnitude * e_k``, an anchor loss
    (``alpha`` times the distance to the true anchor) plus a tuplet loss.  The closest anchor is the largest
    logit, so the model's prediction stays its argmax.  Outliers are not used (pytorch-ood drops them)."""

    def __init__(self, magnitude: float = 1.0, alpha: float = 1.0):
        super().__init__()
        self.magnitude = float(magnitude)
        if not self.magnitude > 0:
            raise ValueError(f"cac: magnitude must be > 0, got {magnitude!r}")
        self.alpha = _non_negative("cac: alpha", alpha)
        self.impl: pl.CACLoss | None = None

    def prepare_model(self, model: nn.Module, num_classes: int) -> nn.Module:
        if self.impl is None or self.impl.n_classes != num_classes:
            self.impl = pl.CACLoss(n_classes=num_classes, magnitude=self.magnitude, alpha=self.alpha)
        return model

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        if self.impl is None:
            raise RuntimeError("cac: call prepare_model(model, num_classes) first (it builds the class anchors)")
        impl = self.impl.to(logits.device)
        return impl(impl.distance(logits), targets)


#: name -> (class, description).  The paper plugin's ``ce`` and ``logitnorm`` are pytorch-ood's
#: CrossEntropyLoss and LogitNorm already and are not registered again.
# name -> (class, description), from the light table the entry point registers (plugin.py).
LOSSES = {name: (globals()[attribute], description) for name, (attribute, description) in plugin.LOSSES.items()}


@hookimpl
def register_losses(register):
    for name, (cls, description) in LOSSES.items():
        register(name, cls, description=description)
