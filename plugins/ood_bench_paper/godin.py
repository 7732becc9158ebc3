"""Generalized ODIN (Hsu et al., CVPR 2020), DeConf-C: the pieces the loss and detector share.

The GODIN head decomposes the logits as ``f_i(x) = h_i(x) / g(x)`` with

* ``h_i(x) = cos(w_i, phi(x))`` -- cosine similarity, no bias (:class:`CosineLinear`);
* ``g(x) = sigmoid(BN1d(w_g^T phi(x) + b_g))`` -- one scalar per input.

Training uses cross-entropy on ``h / g``; testing scores with ``max_i h_i`` of an input perturbed
to increase it.  Hsu et al. (and the LogitNorm paper's Table 6) train ``h`` without weight decay.
pytorch-ood 0.4.0 has no GODIN, so this is written here.

The LogitNorm paper's Section 5 writes ``g = exp(BN(...))``; we follow Hsu et al.'s DeConf
definition with the sigmoid, which is what the spec asks for and what GODIN's authors describe.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from logitnorm_bench.components import Normalized


class CosineLinear(nn.Module):
    """``h_i(phi) = w_i . phi / (||w_i|| ||phi||)``: a bias-free linear layer on unit vectors."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        # Kaiming-normal init as in the DeConf reference implementation (the norm is divided out,
        # so only the directions matter).
        nn.init.kaiming_normal_(self.weight, nonlinearity="relu")

    def forward(self, phi: Tensor) -> Tensor:
        return F.normalize(phi, dim=1) @ F.normalize(self.weight, dim=1).t()


class GodinHead(nn.Module):
    """The DeConf-C head: ``forward(phi) = h(phi) / g(phi)``; ``h(phi)`` gives the cosine logits."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.in_features = in_features
        self.num_classes = num_classes
        self.h = CosineLinear(in_features, num_classes)
        self.g = nn.Sequential(nn.Linear(in_features, 1), nn.BatchNorm1d(1), nn.Sigmoid())

    def forward(self, phi: Tensor) -> Tensor:
        return self.h(phi) / self.g(phi)


def head_owner(model: nn.Module) -> nn.Module:
    """The module whose ``head`` attribute is the real head (``model.net`` for a Normalized)."""
    return model.net if isinstance(model, Normalized) else model


def replace_head(model: nn.Module, new_head: nn.Module) -> nn.Module:
    """Install ``new_head`` as ``model``'s head, in place; works through :class:`Normalized`."""
    owner = head_owner(model)
    owner.head = new_head
    if owner.head is not new_head:  # e.g. a read-only ``head`` property on a third-party model
        raise TypeError(f"could not replace the head of {type(owner).__name__}: 'head' is not assignable")
    return model


def cosine_scores(model: nn.Module, x: Tensor) -> Tensor:
    """``h(x)`` of a GODIN-headed model; for any other head, the logits (``h = f`` when ``g = 1``)."""
    head = model.head
    if isinstance(head, GodinHead):
        return head.h(model.features(x))
    return model(x)
