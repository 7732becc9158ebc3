"""The paper's OOD detectors: ``msp``, ``odin``, ``energy``, ``gradnorm``, ``godin``.

Scores are **higher = more in-distribution** (the paper's direction; pytorch-ood's ``predict``
is the opposite).  Input-gradient detectors perturb the pixel-space input of the model they are
given; the harness wraps models in :class:`~logitnorm_bench.components.Normalized`, so that step
equals the official step on the normalised image with the gradient sign divided by the std.
They expect the model in eval mode (the harness's evaluation puts it there).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.utils.data import DataLoader

from logitnorm_bench import hookimpl

from . import plugin
from logitnorm_bench.components import Detector, FitData, ModelOutputs

from .godin import cosine_scores


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


def _input_gradient(fn, x: Tensor) -> Tensor:
    """Gradient of ``fn(x).sum()`` w.r.t. the input only (the model's ``.grad`` stay untouched).

    Works when called under ``no_grad`` or ``inference_mode`` (as pytorch-ood's ODIN does).
    """
    with torch.inference_mode(False), torch.enable_grad():
        x = x.clone() if torch.is_inference(x) else x
        x = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(fn(x).sum(), x)
    return g


class MSP(Detector):
    """Maximum softmax probability (Hendrycks & Gimpel, 2017): ``max_i softmax(f / T)_i``."""

    def __init__(self, temperature: float = 1.0):
        self.temperature = _positive("msp: temperature", temperature)

    def score_outputs(self, outputs: ModelOutputs, model: nn.Module) -> Tensor:
        return torch.softmax(outputs.logits.float() / self.temperature, dim=1).amax(dim=1)


class Energy(Detector):
    """Negative free energy (Liu et al., 2020): ``T * logsumexp(f / T)``.

    Equals ``-pytorch_ood.detector.EnergyBased.score(f, t=T)`` (tested); written inline because
    it is one line and pytorch-ood's sign is the opposite of ours.
    """

    def __init__(self, temperature: float = 1.0):
        self.temperature = _positive("energy: temperature", temperature)

    def score_outputs(self, outputs: ModelOutputs, model: nn.Module) -> Tensor:
        t = self.temperature
        return t * torch.logsumexp(outputs.logits.float() / t, dim=1)


class ODIN(Detector):
    """ODIN (Liang et al., 2018): temperature scaling plus an input perturbation.

    ``x~ = x - eps * sign(grad_x CE(f(x) / T, argmax f(x)))``; score ``max softmax(f(x~) / T)``.
    Same as ``pytorch_ood.detector.odin_preprocessing`` with ``norm_std`` (tested); written here so
    the perturbation is taken in pixel space through whatever model wrapper the harness gives.
    """

    needs_input_grad = True

    def __init__(self, temperature: float = 1000.0, epsilon: float = 0.0014):
        self.temperature = _positive("odin: temperature", temperature)
        self.epsilon = float(epsilon)
        if self.epsilon < 0:
            raise ValueError(f"odin: epsilon must be >= 0, got {epsilon!r}")

    def perturb(self, model: nn.Module, x: Tensor) -> Tensor:
        """``x~``: one signed-gradient step that lowers the CE of the predicted class."""
        t = self.temperature

        def loss(inp: Tensor) -> Tensor:
            z = model(inp) / t
            # summed (not averaged) CE: the sign of each sample's gradient is the same either way
            return F.cross_entropy(z, z.argmax(dim=1).detach(), reduction="sum")

        return x.detach() - self.epsilon * _input_gradient(loss, x).sign()

    def score_inputs(self, model: nn.Module, x: Tensor) -> Tensor:
        x_hat = self.perturb(model, x)
        with torch.no_grad():
            return torch.softmax(model(x_hat).float() / self.temperature, dim=1).amax(dim=1)


class GradNorm(Detector):
    """GradNorm (Huang et al., 2021): L1 norm of the gradient of the uniform-target loss w.r.t.
    the last layer's weight (bias excluded, as in the official code, which reads ``fc.weight``).

    Official per-sample loss: ``sum_k -log softmax(z / T)_k`` (the code's targets are all ones,
    i.e. ``K`` times the cross-entropy to the uniform distribution; pytorch-ood's ``GradNorm``
    averages over classes instead, so its scores are ours divided by ``K`` -- same ranking).

    For a Linear head the gradient is ``((K softmax(z/T) - 1) / T) outer phi``, so the score is
    ``||K softmax(z/T) - 1||_1 * ||phi||_1 / T`` -- computed in closed form from the shared pass
    instead of one backward pass per sample.  Other heads (GODIN's) fall back to per-sample
    gradients with ``torch.func`` w.r.t. every head parameter whose name ends in ``weight``.
    """

    needs_features = True

    def __init__(self, temperature: float = 1.0):
        self.temperature = _positive("gradnorm: temperature", temperature)

    def score_outputs(self, outputs: ModelOutputs, model: nn.Module) -> Tensor:
        if outputs.features is None:
            raise ValueError("gradnorm needs penultimate features (outputs.features is None)")
        head = model.head
        phi = outputs.features.detach()
        t = self.temperature
        if type(head) is nn.Linear:
            z = outputs.logits.detach().float()
            k = z.shape[1]
            p = torch.softmax(z / t, dim=1)
            return (k * p - 1).abs().sum(dim=1) * phi.float().abs().sum(dim=1) / t
        return self._per_sample(head, phi)

    def _per_sample(self, head: nn.Module, phi: Tensor) -> Tensor:
        t = self.temperature
        weights = {n: p.detach() for n, p in head.named_parameters() if n.endswith("weight")}
        if not weights:
            raise ValueError(f"gradnorm: the head ({type(head).__name__}) has no weight parameter")
        constants = {n: p.detach() for n, p in head.named_parameters() if n not in weights}
        constants.update(dict(head.named_buffers()))

        def loss(w: dict[str, Tensor], phi_one: Tensor) -> Tensor:
            z = functional_call(head, {**w, **constants}, (phi_one.unsqueeze(0),))
            return -(z / t).log_softmax(dim=1).sum()

        with torch.inference_mode(False), torch.enable_grad():
            grads = vmap(grad(loss), in_dims=(None, 0))(weights, phi.clone())
        return sum(g.abs().flatten(1).sum(dim=1) for g in grads.values()).detach()


DEFAULT_GODIN_EPSILONS = (0.0, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08)


class GODIN(Detector):
    """Generalized ODIN's test-time score (Hsu et al., 2020): ``S(x~) = max_i h_i(x~)`` with
    ``x~ = x - eps * sign(-grad_x S(x))``, i.e. the input moved to increase ``S``.

    ``h`` is the cosine head of a model trained with the ``godin`` loss; for any other head ``h``
    falls back to the logits (a GODIN head with ``g = 1``).  ``epsilon=None`` selects eps in
    :meth:`fit` from ``epsilons`` by the largest mean ``S(x~)`` on ID validation data only (Hsu et
    al.'s criterion, which needs no OOD data).
    """

    needs_input_grad = True
    needs_fit = True

    def __init__(self, epsilon: float | None = None, epsilons: Sequence[float] = DEFAULT_GODIN_EPSILONS):
        self.epsilons = tuple(float(e) for e in epsilons)
        if not self.epsilons or any(e < 0 for e in self.epsilons):
            raise ValueError(f"godin: epsilons must be a non-empty list of values >= 0, got {epsilons!r}")
        if epsilon is not None and float(epsilon) < 0:
            raise ValueError(f"godin: epsilon must be >= 0, got {epsilon!r}")
        self.fixed = epsilon is not None
        self.epsilon = None if epsilon is None else float(epsilon)

    @staticmethod
    def _score(model: nn.Module, x: Tensor) -> Tensor:
        return cosine_scores(model, x).amax(dim=1)

    def _scores_at(self, model: nn.Module, x: Tensor, epsilons: Sequence[float]) -> list[Tensor]:
        # one backward pass serves every eps: the gradient does not depend on eps
        step = _input_gradient(lambda inp: self._score(model, inp), x).sign()
        x = x.detach()
        with torch.no_grad():
            return [self._score(model, x + eps * step).float() for eps in epsilons]

    def fit(self, data: FitData) -> dict[str, Any]:
        if self.fixed:
            return {"epsilon": self.epsilon, "candidates": {}}
        if data.id_val is None:
            raise ValueError("godin: choosing epsilon needs ID validation data (FitData.id_val is None); or set 'epsilon'")
        sums = torch.zeros(len(self.epsilons), dtype=torch.float64)
        count = 0
        model, was_training = data.model, data.model.training
        model.eval()  # a whole pass over id_val in train mode would move the BN statistics
        try:
            for batch in DataLoader(data.id_val, batch_size=data.batch_size, shuffle=False):
                x = (batch[0] if isinstance(batch, (list, tuple)) else batch).to(data.device)
                for i, s in enumerate(self._scores_at(model, x, self.epsilons)):
                    sums[i] += s.double().sum().cpu()
                count += x.shape[0]
        finally:
            model.train(was_training)
        if count == 0:
            raise ValueError("godin: the ID validation set is empty")
        means = (sums / count).tolist()
        best = max(range(len(means)), key=lambda i: (means[i], -i))  # ties: the smaller eps (listed first)
        self.epsilon = self.epsilons[best]
        return {"epsilon": self.epsilon, "candidates": dict(zip(self.epsilons, means))}

    def score_inputs(self, model: nn.Module, x: Tensor) -> Tensor:
        if self.epsilon is None:
            raise RuntimeError("godin: epsilon is not chosen yet; call fit() with ID validation data or set 'epsilon'")
        return self._scores_at(model, x, [self.epsilon])[0]


@hookimpl
def register_detectors(register):
    """This module as a plugin itself (``Plugins.add(ood_bench_paper.detectors, ...)``): the components of the
    entry point ``paper_detectors`` (the light :data:`ood_bench_paper.plugin.detectors`, which registers import
    strings), registered here as the callables, since this module is imported anyway."""
    plugin.register_defined(register, plugin.DETECTORS, globals())
