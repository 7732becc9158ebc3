"""pytorch-ood 0.4's detectors as ood-bench detectors.

Each class wraps one pytorch-ood detector.  Its constructor arguments that are plain values are the
factory's keyword arguments (so suites set them and the harness resolves and hashes them); the
model parts it needs (the head, its weight and bias, the feature extractor) come from the model the
harness evaluates.  Scores are pytorch-ood's negated: **higher = more in-distribution**.

No detector runs the model over the training set: fitted detectors call pytorch-ood's
``fit_features`` / ``fit_logits`` / ``fit_feature_maps`` on the harness's shared ID outputs
(:class:`~logitnorm_bench.components.FitData`), and score from the shared forward pass
(``predict_features`` / ``predict_logits`` / ``predict_feature_maps``).  Only MCD, Mahalanobis+ODIN
and GradUncertainty run the model themselves (dropout samples, an input perturbation, per-sample
parameter gradients): they set ``needs_input_grad`` and score in ``score_inputs``.

Detectors that act on feature maps are given the penultimate features: as they are (ReAct, VRA:
elementwise) or as ``(B, D, 1, 1)`` maps with a head that flattens them (ASH, SCALE, which their
papers apply after the last average pooling).
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager
from typing import Any, Sequence

import torch
from pytorch_ood import detector as pd
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from logitnorm_bench import hookimpl

from ood_bench_pytorch_ood import plugin
from logitnorm_bench.components import Detector, FitData, FitOutputs, ModelOutputs

# ----------------------------------------------------------------------------------------------
# Parameter checks (a ValueError becomes a one-line suite error before anything runs)
# ----------------------------------------------------------------------------------------------


def _fraction(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a fraction in [0, 1], got {value!r}")
    return value


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _linear_head(model: nn.Module, name: str) -> nn.Linear:
    head = model.head
    if not isinstance(head, nn.Linear) or head.bias is None:
        raise ValueError(f"{name} needs the model's head to be an nn.Linear with a bias (its weight and bias "
                         f"define the detector); this model's head is {type(head).__name__}")
    return head


class _Probe(nn.Module):
    """The layer NACUE hooks: passes the features on as a leaf that gradients can be taken with respect to
    (in the full model the penultimate layer's output is a non-leaf of the graph; here it is given)."""

    def forward(self, z: Tensor) -> Tensor:
        return z.detach().requires_grad_(True)


class _FlatHead(nn.Module):
    """The model's head on ``(B, D, 1, 1)`` feature maps (ASH and SCALE act on 4-D maps)."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, maps: Tensor) -> Tensor:
        return self.head(maps.flatten(1))


# ----------------------------------------------------------------------------------------------
# The wrapper
# ----------------------------------------------------------------------------------------------


class PytorchOodDetector(Detector):
    """One pytorch-ood detector behind the harness's contract; scores are pytorch-ood's negated.

    Subclasses set ``pood_class`` (the class wrapped), implement :meth:`build` (the pytorch-ood
    detector for a model) and say how it fits and predicts (:meth:`_fit`, :meth:`_predict`, from the
    representation classes below).  ``fit_on`` names the :class:`FitData` outputs a fitted detector
    is fitted on: ``id_train`` (the ID training images) or ``id_val_outputs`` (held-out ID images, for
    the methods whose papers fit on validation data: temperature scaling, KL matching).
    """

    pood_class: type = pd.MaxLogit
    fit_on: str = "id_train"

    def __init__(self) -> None:
        self.pood: pd.Detector | None = None  #: the pytorch-ood detector, once built
        self._model: nn.Module | None = None  #: the model it was built for

    @property
    def name(self) -> str:
        return type(self).__name__

    def build(self, model: nn.Module) -> pd.Detector:
        raise NotImplementedError

    def _fit(self, det: pd.Detector, outputs: FitOutputs) -> None:
        raise NotImplementedError

    def _predict(self, det: pd.Detector, outputs: ModelOutputs) -> Tensor:
        raise NotImplementedError

    def fit_info(self, det: pd.Detector) -> dict[str, Any]:
        """What fitting chose, for the record (JSON)."""
        return {}

    def fit(self, data: FitData) -> dict[str, Any]:
        outputs = getattr(data, self.fit_on)
        if outputs is None:
            raise ValueError(f"{self.name}: FitData.{self.fit_on} is missing")
        if self.needs_features and outputs.features is None:
            raise ValueError(f"{self.name}: FitData.{self.fit_on} has no features")
        det = self.build(data.model).to(data.device)
        self._fit(det, outputs)
        self.pood, self._model = det, data.model
        return {"fit_on": self.fit_on, **self.fit_info(det)}

    def detector_for(self, model: nn.Module) -> pd.Detector:
        """The pytorch-ood detector for ``model``: the fitted one, or one built for it on first use."""
        if self.needs_fit:
            if self.pood is None:
                raise RuntimeError(f"{self.name}: call fit() with the ID data first")
            return self.pood
        if self.pood is None or self._model is not model:
            self.pood, self._model = self.build(model), model
        return self.pood

    def score_outputs(self, outputs: ModelOutputs, model: nn.Module) -> Tensor:
        if self.needs_features and outputs.features is None:
            raise ValueError(f"{self.name} needs penultimate features (outputs.features is None)")
        return -self._predict(self.detector_for(model), outputs)


class _Logits(PytorchOodDetector):
    def _fit(self, det, outputs):
        det.fit_logits(outputs.logits, outputs.labels)

    def _predict(self, det, outputs):
        return det.predict_logits(outputs.logits)


class _Features(PytorchOodDetector):
    needs_features = True

    def _fit(self, det, outputs):
        det.fit_features(outputs.features, outputs.labels)

    def _predict(self, det, outputs):
        return det.predict_features(outputs.features)


class _FeatureMaps(_Features):
    """pytorch-ood's feature-map detectors whose operation is elementwise (ReAct, VRA): fed the features."""

    def _fit(self, det, outputs):
        det.fit_feature_maps(outputs.features, outputs.labels)

    def _predict(self, det, outputs):
        return det.predict_feature_maps(outputs.features)


class _PooledMaps(_Features):
    """Feature-map detectors that need 4-D maps (ASH, SCALE): the features as ``(B, D, 1, 1)``."""

    def _predict(self, det, outputs):
        return det.predict_feature_maps(outputs.features[:, :, None, None])


# ----------------------------------------------------------------------------------------------
# Logit detectors
# ----------------------------------------------------------------------------------------------


class MaxLogit(_Logits):
    """``max_i f_i`` (Hendrycks et al., 2022)."""

    pood_class = pd.MaxLogit

    def build(self, model):
        return pd.MaxLogit(None)


class Entropy(_Logits):
    """Negative entropy of the softmax (probabilities clipped to [1e-7, 1])."""

    pood_class = pd.Entropy

    def build(self, model):
        return pd.Entropy(None)


class GEN(_Logits):
    """GEN (Liu et al., 2023): minus the generalized entropy ``mean_top-M p^gamma (1-p)^gamma``."""

    pood_class = pd.GEN

    def __init__(self, gamma: float = 0.1, M: int | None = None):
        super().__init__()
        self.gamma = _positive("gen: gamma", gamma)
        self.M = None if M is None else _positive_int("gen: M", M)

    def build(self, model):
        return pd.GEN(None, gamma=self.gamma, M=self.M)


class WeightedEBO(_Logits):
    """Weighted energy (VOS, Du et al., 2022): ``log sum_i relu(w_i) e^{f_i}``; ``weights`` one per class,
    ``None`` = all ones (the plain energy)."""

    pood_class = pd.WeightedEBO

    def __init__(self, weights: Sequence[float] | None = None):
        super().__init__()
        if weights is not None:
            weights = [float(w) for w in weights]
            if not weights or not any(w > 0 for w in weights):
                raise ValueError(f"weighted_ebo: weights must hold one value per class, some > 0; got {weights!r}")
        self.weights = weights

    def build(self, model):
        return pd.WeightedEBO(None, weights=None)  # the weights are set per batch (their number = the classes')

    def _predict(self, det, outputs):
        k = outputs.logits.shape[1]
        w = torch.ones(k) if self.weights is None else torch.tensor(self.weights)
        if w.shape[0] != k:
            raise ValueError(f"weighted_ebo: {w.shape[0]} weights for {k} classes")
        # pytorch-ood computes log(sum(w * exp(f))), which overflows to -inf scores once a logit passes
        # about 88 (float32): an untrained or unnormalised network's logits do.  The same value as a
        # log-sum-exp (log w = -inf for a zero weight), which never overflows; equal where pytorch-ood is finite.
        log_w = torch.log(w.to(outputs.logits.device).relu())
        return -torch.logsumexp(outputs.logits.float() + log_w, dim=1)


class KLMatching(_Logits):
    """KL matching (Hendrycks et al., 2022): minus the smallest KL divergence of the posterior to a class's
    typical posterior, fitted on held-out ID data (``id_val_outputs``), as the paper fits it."""

    pood_class = pd.KLMatching
    needs_fit = True
    fit_on = "id_val_outputs"

    def build(self, model):
        return pd.KLMatching(None)

    def fit_info(self, det):
        return {"classes": len(det.dists)}


class OpenMax(_Logits):
    """OpenMax (Bendale & Boult, 2016): minus the probability of the unknown class, Weibull tails of the
    logits' distances to the class means fitted on the ID training outputs."""

    pood_class = pd.OpenMax
    needs_fit = True

    def __init__(self, tailsize: int = 25, alpha: int = 10, euclid_weight: float = 1.0):
        super().__init__()
        self.tailsize = _positive_int("openmax: tailsize", tailsize)
        self.alpha = _positive_int("openmax: alpha", alpha)
        self.euclid_weight = _fraction("openmax: euclid_weight", euclid_weight)

    def build(self, model):
        return pd.OpenMax(None, tailsize=self.tailsize, alpha=self.alpha, euclid_weight=self.euclid_weight)


class TemperatureScaling(_Logits):
    """Temperature scaling (Guo et al., 2017): ``max softmax(f / T)``, T fitted by LBFGS on the NLL of held-out
    ID data (``id_val_outputs``)."""

    pood_class = pd.TemperatureScaling
    needs_fit = True
    fit_on = "id_val_outputs"

    def build(self, model):
        return pd.TemperatureScaling(None)

    def fit_info(self, det):
        return {"temperature": float(det.t.detach())}


# ----------------------------------------------------------------------------------------------
# Feature detectors
# ----------------------------------------------------------------------------------------------


class Mahalanobis(_Features):
    """Mahalanobis distance (Lee et al., 2018) to the closest class mean, shared covariance, no input
    preprocessing; fitted on the ID training features."""

    pood_class = pd.Mahalanobis
    needs_fit = True

    def build(self, model):
        return pd.Mahalanobis(None)


class RMD(_Features):
    """Relative Mahalanobis distance (Ren et al., 2021): class distance minus the background distance."""

    pood_class = pd.RMD
    needs_fit = True

    def build(self, model):
        return pd.RMD(None)


class GMM(_Features):
    """Class-conditional Gaussian mixture (one full-covariance component per class): the log-likelihood."""

    pood_class = pd.GMM
    needs_fit = True

    def __init__(self, reg: float = 1e-6):
        super().__init__()
        self.reg = _positive("gmm: reg", reg)

    def build(self, model):
        return pd.GMM(None, reg=self.reg)


class ViM(_Features):
    """ViM (Wang et al., 2022): energy minus the scaled norm of the features outside the principal
    subspace of dimension ``d`` (half the feature dimension when the features have fewer than ``d``)."""

    pood_class = pd.ViM
    needs_fit = True

    def __init__(self, d: int = 64):
        super().__init__()
        self.d = _positive_int("vim: d", d)

    def build(self, model):
        head = _linear_head(model, "vim")
        return pd.ViM(None, d=self.d, w=head.weight, b=head.bias)

    def fit_info(self, det):
        return {"d": det.d, "alpha": det.alpha}


class KNN(_Features):
    """Deep nearest neighbours (Sun et al., 2022): minus the distance to the ``k``-th nearest (normalised)
    ID training feature."""

    pood_class = pd.KNN
    needs_fit = True

    def __init__(self, k: int = 50, normalize: bool = True):
        super().__init__()
        self.k = _positive_int("knn: k", k)
        if not isinstance(normalize, bool):
            raise ValueError(f"knn: normalize must be true or false, got {normalize!r}")
        self.normalize = normalize

    def build(self, model):
        return pd.KNN(None, k=self.k, normalize=self.normalize)


class SHE(_Features):
    """Simplified Hopfield energy (Zhang et al., 2023): the inner product of the features with the mean
    feature of the predicted class (from correctly classified ID training images)."""

    pood_class = pd.SHE
    needs_fit = True

    def build(self, model):
        return pd.SHE(None, model.head)


class DICE(_Features):
    """DICE (Sun & Li, 2022): energy of a head whose weights of lowest contribution (a fraction ``p``) are
    masked, contributions from the mean ID training features.  ``p`` = 0.9 as the paper's CIFAR runs."""

    pood_class = pd.DICE
    needs_fit = True

    def __init__(self, p: float = 0.9):
        super().__init__()
        self.p = _fraction("dice: p", p)

    def build(self, model):
        head = _linear_head(model, "dice")
        return pd.DICE(None, w=head.weight, b=head.bias, p=self.p)

    def fit_info(self, det):
        return {"threshold": det.threshold}


class FDBD(_Features):
    """fDBD (Liu & Qin, 2024): mean feature distance to the decision boundaries over the distance to the
    mean ID training feature."""

    pood_class = pd.fDBD
    needs_fit = True

    def build(self, model):
        return pd.fDBD(None, _linear_head(model, "fdbd"))


class NCI(_Features):
    """NCI (Liu et al., 2025): cosine of the centred features with the predicted class's weight (minus
    ``alpha`` times the features' L1 norm)."""

    pood_class = pd.NCI
    needs_fit = True

    def __init__(self, alpha: float = 0.0):
        super().__init__()
        self.alpha = float(alpha)
        if self.alpha < 0:
            raise ValueError(f"nci: alpha must be >= 0, got {alpha!r}")

    def build(self, model):
        return pd.NCI(None, _linear_head(model, "nci"), alpha=self.alpha)


class NNGuide(_Features):
    """NNGuide (Park et al., 2023): energy times the mean cosine similarity to the ``k`` nearest
    energy-scaled ID training features."""

    pood_class = pd.NNGuide
    needs_fit = True

    def __init__(self, k: int = 10):
        super().__init__()
        self.k = _positive_int("nnguide: k", k)

    def build(self, model):
        return pd.NNGuide(None, model.head, k=self.k)


class PNML(_Features):
    """pNML regret (Bibas et al., 2021) of the head on the normalised features, with the ID training
    features' projection matrix; minus the regret."""

    pood_class = pd.PNML
    needs_fit = True

    def __init__(self, eps: float = 1e-12):
        super().__init__()
        self.eps = _positive("pnml: eps", eps)

    def build(self, model):
        return pd.PNML(None, model.head, eps=self.eps)


class NAC(_Features):
    """NAC-UE (Liu et al., 2024) on the penultimate layer: neuron activation coverage of the ID training
    features' ``z * dKL/dz`` states.  pytorch-ood's ``NACUE`` with the penultimate features as its one layer,
    fitted and scored on the shared features through the head (its gradients need nothing else)."""

    pood_class = pd.NACUE
    needs_fit = True

    def __init__(self, m_bins: int = 50, alpha: float = 100.0, o_star: int = 50):
        super().__init__()
        self.m_bins = _positive_int("nac: m_bins", m_bins)
        self.alpha = _positive("nac: alpha", alpha)
        self.o_star = _positive_int("nac: o_star", o_star)
        self.batch_size = 256

    def build(self, model):
        probe = _Probe()
        return pd.NACUE(nn.Sequential(probe, model.head), layers=[probe], m_bins=self.m_bins, alpha=self.alpha,
                        o_star=self.o_star)

    def fit(self, data):
        self.batch_size = data.batch_size
        return super().fit(data)

    def _fit(self, det, outputs):
        det.fit(DataLoader(TensorDataset(outputs.features, outputs.labels), batch_size=self.batch_size))

    def _predict(self, det, outputs):
        return det.predict(outputs.features)


class LTS(_Features):
    """LTS (Djurisic et al., 2024): energy of the logits scaled by the squared ratio of the sum of all
    (ReLU) features to the sum of their top ``p`` fraction."""

    pood_class = pd.LTS

    def __init__(self, p: float = 0.05):
        super().__init__()
        self.p = _fraction("lts: p", p)

    def build(self, model):
        return pd.LTS(None, model.head, p=self.p)


class ReAct(_FeatureMaps):
    """ReAct (Sun et al., 2021): energy of the head on features clipped at the ``percentile`` of the ID
    training activations (or at a given ``threshold``)."""

    pood_class = pd.ReAct
    needs_fit = True

    def __init__(self, percentile: float = 0.9, threshold: float | None = None):
        super().__init__()
        self.percentile = _fraction("react: percentile", percentile)
        self.threshold = None if threshold is None else float(threshold)

    def build(self, model):
        return pd.ReAct(None, model.head, threshold=self.threshold, percentile=self.percentile)

    def _fit(self, det, outputs):
        if self.threshold is None:  # a given threshold needs no fit (pytorch-ood's fit would replace it)
            super()._fit(det, outputs)

    def fit_info(self, det):
        return {"threshold": det.threshold}


class VRA(_FeatureMaps):
    """VRA (Xu et al., 2023): energy of the head on features clipped per dimension between the
    ``lower_percentile`` and ``upper_percentile`` quantiles of the ID training features."""

    pood_class = pd.VRA
    needs_fit = True

    def __init__(self, lower_percentile: float = 0.01, upper_percentile: float = 0.99):
        super().__init__()
        self.lower_percentile = _fraction("vra: lower_percentile", lower_percentile)
        self.upper_percentile = _fraction("vra: upper_percentile", upper_percentile)
        if self.lower_percentile > self.upper_percentile:
            raise ValueError("vra: lower_percentile must not exceed upper_percentile")

    def build(self, model):
        return pd.VRA(None, model.head, lower_percentile=self.lower_percentile,
                      upper_percentile=self.upper_percentile)


class ASH(_PooledMaps):
    """ASH (Djurisic et al., 2023) on the penultimate features: prune the lowest ``percentile`` of each
    sample's activations (``ash-p``), binarise (``ash-b``) or rescale (``ash-s``) the rest; energy."""

    pood_class = pd.ASH

    def __init__(self, variant: str = "ash-s", percentile: float = 0.65):
        super().__init__()
        if variant not in pd.ASH.variants:
            raise ValueError(f"ash: variant must be one of {', '.join(pd.ASH.variants)}, got {variant!r}")
        self.variant = variant
        self.percentile = _fraction("ash: percentile", percentile)

    def build(self, model):
        return pd.ASH(None, _FlatHead(model.head), variant=self.variant, percentile=self.percentile)


class SCALE(_PooledMaps):
    """SCALE (Xu et al., 2024) on the penultimate features: scale them by ``exp(sum / sum of the top
    1 - percentile)``; energy."""

    pood_class = pd.SCALE

    def __init__(self, percentile: float = 0.65):
        super().__init__()
        self.percentile = _fraction("scale: percentile", percentile)

    def build(self, model):
        return pd.SCALE(None, _FlatHead(model.head), percentile=self.percentile)


# ----------------------------------------------------------------------------------------------
# Detectors that run the model themselves
# ----------------------------------------------------------------------------------------------


@contextmanager
def _model_left_as_found(model: nn.Module):
    """Parameter gradients and the train/eval mode restored afterwards (pytorch-ood's Mahalanobis+ODIN
    calls ``backward()``, which leaves ``.grad`` on every parameter)."""
    grads = [(p, p.grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for p, g in grads:
            p.grad = g
        for m, training in modes:
            m.training = training


class MCD(PytorchOodDetector):
    """Monte-Carlo dropout (Gal & Ghahramani, 2016): ``samples`` forward passes with dropout on (BatchNorm
    kept in eval mode when ``batch_norm``); minus the mean variance of the softmax (``mode=var``) or the
    largest mean softmax (``mode=mean``).  The dropout draws are seeded with ``seed`` for every batch, so
    the same inputs give the same scores.  A model without dropout gives every input the same variance."""

    pood_class = pd.MCD
    needs_input_grad = True  # its own passes (the harness's flag for detectors that run the model)

    def __init__(self, samples: int = 30, mode: str = "var", batch_norm: bool = True, seed: int = 0):
        super().__init__()
        self.samples = _positive_int("mcd: samples", samples)
        if mode not in ("var", "mean"):
            raise ValueError(f"mcd: mode must be var or mean, got {mode!r}")
        self.mode, self.batch_norm, self.seed = mode, bool(batch_norm), int(seed)

    def build(self, model):
        return pd.MCD(model, samples=self.samples, mode=self.mode, batch_norm=self.batch_norm)

    def score_inputs(self, model: nn.Module, x: Tensor) -> Tensor:
        det = self.detector_for(model)
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), _model_left_as_found(model):
            torch.manual_seed(self.seed)
            return -det.predict(x)


class MahalanobisODIN(PytorchOodDetector):
    """Mahalanobis with its input preprocessing (Lee et al., 2018): the input moved by ``eps`` against the
    gradient of the closest class's Mahalanobis distance, then scored.  Fitted on the ID training features.
    The perturbation is taken in pixel space through the harness's normalising model, which equals
    pytorch-ood's ``norm_std`` on normalised inputs (see docs/components.md, ODIN)."""

    pood_class = pd.MahalanobisODIN
    needs_fit = True
    needs_features = True  # for the fit
    needs_input_grad = True

    def __init__(self, eps: float = 0.002):
        super().__init__()
        self.eps = float(eps)
        if not self.eps >= 0:
            raise ValueError(f"mahalanobis_odin: eps must be >= 0, got {eps!r}")

    def build(self, model):
        return pd.MahalanobisODIN(model.features, eps=self.eps)

    def _fit(self, det, outputs):
        det.fit_features(outputs.features, outputs.labels)

    def score_inputs(self, model: nn.Module, x: Tensor) -> Tensor:
        det = self.detector_for(model)  # fitted with FitData.model, the model the harness scores with
        with _model_left_as_found(model):
            return -det.predict(x)


class GradUncertainty(PytorchOodDetector):
    """Gradient uncertainty (Lee & AlRegib, 2020; Hornauer & Belagiannis): minus the squared L2 norm of the
    per-sample gradient of ``BCE(softmax(f), 1)`` with respect to the model's parameters whose names match
    the regular expression ``params`` (``None`` = all, pytorch-ood's default)."""

    pood_class = pd.GradUncertainty
    needs_input_grad = True  # per-sample parameter gradients: its own passes
    micro_batch = 64  #: inputs per vmap call (memory); the scores do not depend on it

    def __init__(self, params: str | None = None):
        super().__init__()
        if params is not None:
            try:
                re.compile(params)
            except re.error as exc:
                raise ValueError(f"grad_uncertainty: params is not a regular expression ({exc}): {params!r}") from None
        self.params = params

    def build(self, model):
        pattern = self.params
        return pd.GradUncertainty(model, param_filter=None if pattern is None else
                                  (lambda n: re.search(pattern, n) is not None))

    def score_inputs(self, model: nn.Module, x: Tensor) -> Tensor:
        det = self.detector_for(model)
        with _model_left_as_found(model):
            return torch.cat([-det.predict(x[i:i + self.micro_batch]) for i in range(0, x.shape[0], self.micro_batch)])


# ----------------------------------------------------------------------------------------------
# Registration
# ----------------------------------------------------------------------------------------------

#: name -> (class, description).  Names the paper plugin registers (msp, odin, energy, gradnorm) are
#: not registered again; ``max_logit`` is not ``maxlogit``, the example plugin's name (docs/plugins.md).
# name -> (class, description), from the light table the entry point registers (plugin.py).
DETECTORS = {name: (globals()[attribute], description) for name, (attribute, description) in plugin.DETECTORS.items()}


@hookimpl
def register_detectors(register):
    for name, (cls, description) in DETECTORS.items():
        register(name, cls, description=description)
