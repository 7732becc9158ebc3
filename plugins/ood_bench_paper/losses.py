"""The paper's training losses: ``ce``, ``logitnorm``, ``logitpenalty``, ``godin``.

Every loss takes raw logits ``(B, K)`` and integer targets ``(B,)`` and returns the batch mean.
"""

from __future__ import annotations

import torch.nn.functional as F
from pytorch_ood.loss import LogitNorm as _PytorchOodLogitNorm
from torch import Tensor, nn

from logitnorm_bench import hookimpl

from . import plugin
from logitnorm_bench.components import Loss

from .godin import GodinHead, head_owner, replace_head


class CrossEntropy(Loss):
    """Softmax cross-entropy."""

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits, targets)


class LogitNormLoss(Loss):
    """LogitNorm (Wei et al., 2022, Eq. 4): ``CE(f / (tau * (||f||_2 + 1e-7)), y)``.

    Delegates to pytorch-ood's ``LogitNorm``, whose ``logit_norm_loss`` is exactly the official
    ``cross_entropy(f / (||f|| + 1e-7) / tau, y)`` (tests check it against an independent formula).
    The normalisation happens only here, in training; the model itself outputs raw logits.
    """

    def __init__(self, tau: float = 0.04):
        super().__init__()
        if not tau > 0:
            raise ValueError(f"logitnorm: tau must be > 0, got {tau!r}")
        self.tau = float(tau)
        self._impl = _PytorchOodLogitNorm(t=self.tau)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return self._impl(logits, targets)

    def extra_repr(self) -> str:
        return f"tau={self.tau}"


class LogitPenalty(Loss):
    """The paper's Logit Penalty baseline (Section 5): ``CE(f, y) + lam * mean_batch ||f||_2``."""

    def __init__(self, lam: float = 0.05):
        super().__init__()
        if not lam >= 0:
            raise ValueError(f"logitpenalty: lam must be >= 0, got {lam!r}")
        self.lam = float(lam)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits, targets) + self.lam * logits.norm(p=2, dim=1).mean()

    def extra_repr(self) -> str:
        return f"lam={self.lam}"


class GodinLoss(Loss):
    """Generalized ODIN, DeConf-C (Hsu et al., 2020): cross-entropy on ``h / g``.

    ``prepare_model`` swaps the model's final layer for a :class:`~ood_bench_paper.godin.GodinHead`,
    so the model's logits *are* ``h / g`` and the loss itself is plain cross-entropy.
    ``no_weight_decay`` returns ``h``'s weight: GODIN trains ``h`` without weight decay.
    """

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits, targets)

    def prepare_model(self, model: nn.Module, num_classes: int) -> nn.Module:
        old = head_owner(model).head
        if isinstance(old, GodinHead):
            return model  # already prepared (e.g. a resumed run)
        in_features = getattr(old, "in_features", None)
        if not isinstance(in_features, int):
            raise TypeError(
                f"godin: the model's head ({type(old).__name__}) has no integer 'in_features'; "
                "GODIN needs to know the penultimate feature size to build its head"
            )
        new = GodinHead(in_features, num_classes)
        ref = next(old.parameters(), None)
        if ref is not None:
            new = new.to(device=ref.device, dtype=ref.dtype)
        return replace_head(model, new)

    def no_weight_decay(self, model: nn.Module) -> list[nn.Parameter]:
        head = head_owner(model).head
        return [head.h.weight] if isinstance(head, GodinHead) else []


@hookimpl
def register_losses(register):
    """This module as a plugin itself (``Plugins.add(ood_bench_paper.losses, ...)``): the components of the
    entry point ``paper_losses`` (the light :data:`ood_bench_paper.plugin.losses`, which registers import
    strings), registered here as the callables, since this module is imported anyway."""
    plugin.register_defined(register, plugin.LOSSES, globals())
