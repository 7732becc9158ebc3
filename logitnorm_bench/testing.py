"""Conformance checks for plugin components: call them from your plugin's own tests.

.. code-block:: python

    from logitnorm_bench.testing import check_architecture, check_dataset, check_detector, check_loss

    def test_my_detector():
        check_detector(MyDetector, temperature=2.0)   # the factory and the parameters a suite would give

Each check builds the component from ``factory(**params)`` as the harness does, runs it through the
harness's own code (the evaluation engine with its shared forward pass and ``FitData``, the training
loop, ``materialize``), and raises an :class:`AssertionError` that says what the contract wants when
the component does not meet it.  Each returns what it measured, for further assertions of your own.

The checks run on the CPU in about a second on a small made-up problem (``KIT``): 8x8 one-channel
images of 4 classes, class ``k`` a bright quadrant ``k``; the "obvious" OOD inputs are dim,
structureless images.  ``check_detector`` scores them with a hand-built classifier (:func:`kit_model`)
whose logits are confident on the ID images and flat on the OOD ones, so any detector whose scores are
higher for in-distribution inputs separates them; ``check_loss`` trains a small MLP on them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset, TensorDataset

from logitnorm_bench import hookimpl
from logitnorm_bench.components import (DataContext, DatasetSource, Detector, FitData, FitOutputs, Loss, ModelOutputs,
                                        Normalized)

__all__ = ["check_detector", "check_loss", "check_dataset", "check_architecture", "kit_model", "KitSource",
           "DetectorReport", "KIT"]


@dataclass(frozen=True)
class Kit:
    """The made-up problem every check runs on."""

    num_classes: int = 4
    input_shape: tuple[int, int, int] = (1, 8, 8)
    mean: tuple[float, ...] = (0.2,)  #: the ID normalisation the harness puts inside the model
    std: tuple[float, ...] = (0.3,)
    sizes: dict = field(default_factory=lambda: {"train": 400, "val": 40, "test": 80})
    ood_size: int = 60
    batch_size: int = 32  #: the evaluation's batch size: several batches per set


KIT = Kit()


QUADRANTS = ((0, 0), (0, 4), (4, 0), (4, 4))  #: top-left corner of class k's 4x4 quadrant


def _quadrant_masks() -> Tensor:
    m = torch.zeros(4, 8, 8)
    for k, (r, c) in enumerate(QUADRANTS):
        m[k, r:r + 4, c:c + 4] = 1
    return m


def _feature_masks() -> Tensor:
    """8 regions per quadrant (32 in all): fixed random sets of 6 of its 16 pixels (no region is a combination
    of others, so the features' covariance has full rank, as a trained network's does)."""
    g = torch.Generator().manual_seed(7)
    masks = torch.zeros(32, 8, 8)
    for k, (r, c) in enumerate(QUADRANTS):
        for j in range(8):
            pick = torch.randperm(16, generator=g)[:6]
            masks[8 * k + j, r + pick // 4, c + pick % 4] = 1
    return masks


def kit_images(split: str, seed: int = 0) -> tuple[Tensor, Tensor]:
    """ID images of a split: class ``k`` lights quadrant ``k`` at 0.8-0.95, on noise uniform in [0, 0.1]."""
    n = KIT.sizes[split]
    g = torch.Generator().manual_seed(1000 * seed + {"train": 1, "val": 2, "test": 3}[split])
    y = torch.arange(n) % KIT.num_classes
    level = 0.8 + 0.15 * torch.rand(n, 1, 1, generator=g)
    x = _quadrant_masks()[y] * level + 0.1 * torch.rand(n, 8, 8, generator=g)
    return x.clamp(0, 1).unsqueeze(1), y


def kit_ood_images(seed: int = 0) -> Tensor:
    """The obvious OOD inputs: dim images with no structure (pixels uniform in [0, 0.2])."""
    g = torch.Generator().manual_seed(1000 * seed + 4)
    return 0.2 * torch.rand(KIT.ood_size, *KIT.input_shape, generator=g)


class KitSource(DatasetSource):
    """The kit's images as a harness dataset: ID (``ood=False``, splits train/val/test) or its OOD images."""

    input_shape = KIT.input_shape
    mean, std = KIT.mean, KIT.std

    def __init__(self, ood: bool = False):
        self.ood = ood
        self.num_classes = 0 if ood else KIT.num_classes
        self.splits = ("test",) if ood else ("train", "val", "test")

    def build(self, split: str, ctx: DataContext) -> Dataset:
        if self.ood:
            x = kit_ood_images(ctx.seed)
            return TensorDataset(x, torch.full((x.shape[0],), -1))
        return TensorDataset(*kit_images(split, ctx.seed))


#: the head's weights on a class's 8 features (unequal, as a trained head's are)
HEAD_WEIGHTS = torch.tensor([0.4, 0.35, 0.3, 0.25, 0.2, 0.15, 0.1, 0.05])


class _Net(nn.Module):
    """Features: ``softplus(10 * (pixel mean - 0.3))`` over 8 pixel sets of each quadrant (32 features); head:
    Linear, ``w[k]`` = :data:`HEAD_WEIGHTS` on quadrant ``k``'s 8 features, 0 elsewhere, bias 0.  A dropout before the head (inactive in
    eval mode) gives Monte-Carlo-dropout detectors something to sample."""

    def __init__(self):
        super().__init__()
        rows = _feature_masks().flatten(1)
        self.encode = nn.Linear(64, 32)
        self.drop = nn.Dropout(0.25)
        self.head = nn.Linear(32, KIT.num_classes)
        with torch.no_grad():
            # on normalised input x (pixel = 0.3 x + 0.2): 3 * mean(x) - 1 = 10 * (pixel mean - 0.3)
            self.encode.weight.copy_(3.0 * rows / rows.sum(dim=1, keepdim=True))
            self.encode.bias.fill_(-1.0)
            self.head.weight.copy_(torch.kron(torch.eye(4), HEAD_WEIGHTS.view(1, 8)))
            self.head.bias.zero_()

    def features(self, x: Tensor) -> Tensor:
        return self.drop(F.softplus(self.encode(x.flatten(1))))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def kit_model() -> nn.Module:
    """The hand-built classifier ``check_detector`` scores with, in eval mode: ``Normalized`` as the harness
    wraps every model.  Its logits are about (11, 0.1, 0.1, 0.1) on an ID image of class 0 and all about 0.2 on
    an OOD one; its features are positive (like ReLU features), never exactly zero."""
    return Normalized(_Net(), KIT.mean, KIT.std).eval()


def _trainable_model(seed: int = 0) -> nn.Module:
    """The small MLP ``check_loss`` trains (the Classifier contract: features, a Linear head)."""
    from ood_bench_paper.architectures import _BodyHead

    torch.manual_seed(seed)
    body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU())
    return Normalized(_BodyHead(body, nn.Linear(16, KIT.num_classes)), KIT.mean, KIT.std)


def _label(factory: Callable, params: dict) -> str:
    """How messages name the component: the factory's name and the parameters given."""
    return f"{getattr(factory, '__name__', type(factory).__name__)}({', '.join(f'{k}={v!r}' for k, v in params.items())})"


def _fail(what: str, wants: str, got: str = "") -> None:
    raise AssertionError(f"{what}: the contract wants {wants}" + (f"; got {got}" if got else ""))


def _check_scores(name: str, scores: Any, n: int, where: str) -> Tensor:
    if not isinstance(scores, Tensor):
        _fail(name, f"{where} to return a torch.Tensor of {n} scores", type(scores).__name__)
    if scores.dim() != 1 or scores.shape[0] != n:
        _fail(name, f"{where} to return one score per input, a 1-D tensor of shape ({n},)", f"shape {tuple(scores.shape)}")
    if not scores.is_floating_point():
        _fail(name, f"{where} to return float scores", str(scores.dtype))
    if not torch.isfinite(scores).all():
        bad = int((~torch.isfinite(scores)).sum())
        _fail(name, f"{where} to return finite scores (no NaN or inf)", f"{bad} of {n} non-finite")
    return scores


def _model_state(model: nn.Module) -> tuple:
    return ({k: v.detach().clone() for k, v in model.state_dict().items()},
            [m.training for m in model.modules()], [p.grad for p in model.parameters()])


def _check_model_unchanged(name: str, model: nn.Module, before: tuple, where: str) -> None:
    weights, modes, grads = before
    after = model.state_dict()
    changed = [k for k, v in weights.items() if not torch.equal(v, after[k])]
    if changed:
        _fail(name, f"{where} to leave the model's weights and buffers alone", f"changed {', '.join(changed[:5])}")
    if [m.training for m in model.modules()] != modes:
        _fail(name, f"{where} to leave the model in the mode it found it (eval)", "a module's train/eval mode changed")
    if any(p.grad is not g for p, g in zip(model.parameters(), grads)):
        _fail(name, f"{where} to leave the parameters' .grad alone (take input gradients with torch.autograd.grad, "
                    "or restore them)", "parameter gradients changed")


# ----------------------------------------------------------------------------------------------
# Detectors
# ----------------------------------------------------------------------------------------------


@dataclass
class DetectorReport:
    """What :func:`check_detector` measured."""

    detector: Detector  #: the instance, fitted by the harness
    id_scores: Tensor  #: on the kit's ID test images (the harness's scores)
    ood_scores: Tensor  #: on the kit's OOD images
    auroc: float  #: ID positive
    fit: dict  #: what ``fit`` returned (with the harness's ``fit_data`` facts), ``{}`` if not fitted
    fit_data: FitData | None = None  #: what the detector's ``fit`` was given


class _Sentinel(Detector):
    """A second detector of the grid that asks for features, so the shared pass computes them."""

    needs_features = True

    def score_outputs(self, outputs: ModelOutputs, model: nn.Module) -> Tensor:
        return -outputs.features.float().norm(dim=1)


def check_detector(factory: Callable[..., Detector], /, *, model: nn.Module | None = None, direction: bool = True,
                   min_auroc: float = 0.9, **params: Any) -> DetectorReport:
    """Check a detector plugin: ``factory(**params)`` is what ``register(name, factory)`` registers.

    Runs it through the harness's evaluation engine (:class:`~logitnorm_bench.evaluation.Evaluator`) on the
    kit's ID and OOD images, in a grid with another detector that needs features, then scores a batch
    itself.  Checks: the flags are booleans and the method they call for exists; one finite float score per
    input, as a 1-D tensor; the same inputs give the same scores; the model is left as it was found; a
    ``needs_fit`` detector is fitted once with a valid :class:`FitData` built by the harness (features only if
    it set ``needs_features``) and returns a JSON-serialisable dict; a detector without ``needs_features``
    never sees features; and (``direction``) scores are higher for in-distribution inputs on the obvious
    case: AUROC (ID positive) of at least ``min_auroc``.

    ``model``: another classifier of the kit's images (``(1, 8, 8)``, 4 classes, the ``Classifier``
    contract), e.g. one your detector's method needs; default :func:`kit_model`.  Pass ``direction=False``
    (and say why in your test) for a method that legitimately cannot separate the kit's OOD inputs.
    """
    det = factory(**params)
    name = _label(factory, params)
    for flag in ("needs_features", "needs_input_grad", "needs_fit"):
        if not isinstance(getattr(det, flag, None), bool):
            _fail(name, f"the flag {flag} to be a bool (subclass logitnorm_bench.components.Detector)",
                  repr(getattr(det, flag, None)))
    method = "score_inputs" if det.needs_input_grad else "score_outputs"
    if not callable(getattr(det, method, None)) or (isinstance(det, Detector) and
                                                    getattr(type(det), method) is getattr(Detector, method)):
        _fail(name, f"{method}() to be implemented (needs_input_grad={det.needs_input_grad})")
    if det.needs_fit and (not callable(getattr(det, "fit", None)) or
                          (isinstance(det, Detector) and type(det).fit is Detector.fit)):
        _fail(name, "fit(data) to be implemented when needs_fit is set")

    model = kit_model() if model is None else model.eval()
    seen: dict[str, list] = {"fit": [], "features": []}
    _record(det, seen, name)
    try:
        return _run_detector_checks(det, name, model, seen, direction, min_auroc)
    finally:
        for method_name in ("fit", "score_outputs", "score_inputs"):  # the instance as it was built
            det.__dict__.pop(method_name, None)


def _run_detector_checks(det: Detector, name: str, model: nn.Module, seen: dict, direction: bool,
                         min_auroc: float) -> DetectorReport:
    from logitnorm_bench.evaluation import Evaluator, forward_pass
    from logitnorm_bench.plan import EvaluationCell
    from logitnorm_bench.plugins import Plugins
    from logitnorm_bench.suite import EvalProtocol

    method = "score_inputs" if det.needs_input_grad else "score_outputs"
    plugins = Plugins(load_entry_points=False)
    plugins.add(_KitDetectors(det), name="conformance-kit")
    protocol = dataclasses.asdict(EvalProtocol(ood_samples=None, batch_size=KIT.batch_size, id_val_samples=KIT.sizes["val"]))
    ctx = DataContext(root=Path(tempfile.gettempdir()), download=False, seed=0)
    id_source, ood_source = KitSource(), KitSource(ood=True)
    before = _model_state(model)
    evaluator = Evaluator(model, id_source, ctx, plugins, torch.device("cpu"), protocol,
                          source_for=lambda _name, _params=None: ood_source)
    cells = [EvaluationCell(d, "kit", d, {}, "kit_ood", protocol) for d in ("kit_detector", "kit_sentinel")]
    results = {c.detector: r for c, r in evaluator.evaluate(cells)}
    result = results["kit_detector"]
    if "error" in result:
        error = result["error"]
        if error.startswith("AssertionError: "):  # one of the checks below, made on a batch inside the evaluation
            raise AssertionError(error[len("AssertionError: "):])
        hint = ""
        if not det.needs_features and not det.needs_input_grad and _works_with_features(det, model):
            hint = "; a detector that reads outputs.features must set needs_features = True"
        _fail(name, "it to score the kit's images through the harness's evaluation", f"{error}{hint}")
    _check_model_unchanged(name, model, before, "scoring and fitting")

    # The fit contract.
    fit_data = None
    if det.needs_fit:
        if len(seen["fit"]) != 1:
            _fail(name, "fit() to be called once per model by the harness", f"{len(seen['fit'])} calls")
        fit_data = seen["fit"][0]
        _check_fit_data(name, fit_data, det.needs_features, model)
        try:
            json.dumps(result["detector_fit"])
        except (TypeError, ValueError) as exc:
            _fail(name, "fit() to return a JSON-serialisable dict (it goes into every record)", str(exc))
    elif seen["fit"]:
        _fail(name, "fit() not to be called without needs_fit (a harness bug)")
    if not det.needs_features and any(f is not None for f in seen["features"]):
        _fail(name, "no features for a detector without needs_features (a harness bug)")
    if det.needs_features and not det.needs_input_grad and any(f is None for f in seen["features"]):
        _fail(name, "features for a detector with needs_features (a harness bug)")

    # One batch by hand: shape, dtype, finiteness, determinism, the model left alone.
    x, _ = kit_images("test")
    x = x[:KIT.batch_size]
    before = _model_state(model)

    def score() -> Tensor:
        if det.needs_input_grad:
            return det.score_inputs(model, x)
        out = forward_pass(model, x, KIT.batch_size, torch.device("cpu"), det.needs_features)
        return det.score_outputs(out, model)

    where = f"{method}()"
    first = _check_scores(name, score(), x.shape[0], where)
    second = score()
    if not torch.equal(first, second):
        _fail(name, "the same inputs to give the same scores (seed any random draw)",
              f"max difference {float((first - second).abs().max()):.3g}")
    _check_model_unchanged(name, model, before, where)

    id_scores, (ood_scores,) = result["scores"]["id"], result["scores"]["ood"]
    auroc = float(result["metrics"]["auroc"])
    if direction and not auroc >= min_auroc:
        flipped = " (below 0.5: the scores look like OOD scores; pytorch-ood's detectors, for one, return higher = " \
                  "more OOD: negate them)" if auroc < 0.5 else ""
        _fail(name, f"scores higher for in-distribution inputs: on the kit's obvious case (confident ID logits, flat "
                    f"OOD logits) an AUROC (ID positive) of at least {min_auroc}", f"{auroc:.3f}{flipped}")
    return DetectorReport(det, id_scores, ood_scores, auroc, result["detector_fit"], fit_data)


class _KitDetectors:
    """The in-process plugin of ``check_detector``: the detector under test (this instance) and the sentinel."""

    def __init__(self, det: Detector):
        self.det = det

    @hookimpl
    def register_detectors(self, register):
        register("kit_detector", lambda: self.det, description="the detector under test")
        register("kit_sentinel", _Sentinel, description="asks for features")


def _record(det: Detector, seen: dict, name: str) -> None:
    """Wrap the instance's methods to see what the harness hands it, and check every batch's scores."""
    cls = type(det)
    if det.needs_fit:
        def fit(data):
            seen["fit"].append(data)
            return cls.fit(det, data)
        det.fit = fit
    if det.needs_input_grad:
        def score_inputs(model, x):
            return _check_scores(name, cls.score_inputs(det, model, x), x.shape[0], "score_inputs()")
        det.score_inputs = score_inputs
    else:
        def score_outputs(outputs, model):
            seen["features"].append(outputs.features)
            scores = cls.score_outputs(det, outputs, model)
            return _check_scores(name, scores, outputs.logits.shape[0], "score_outputs()")
        det.score_outputs = score_outputs


def _works_with_features(det: Detector, model: nn.Module) -> bool:
    from logitnorm_bench.evaluation import forward_pass

    try:
        out = forward_pass(model, kit_images("test")[0][:4], 4, torch.device("cpu"), True)
        type(det).score_outputs(det, out, model)
        return True
    except Exception:
        return False


def _check_fit_data(name: str, data: Any, with_features: bool, model: nn.Module) -> None:
    if not isinstance(data, FitData):
        _fail(name, "fit() to receive a FitData (a harness bug)", type(data).__name__)
    if data.model is not model:
        _fail(name, "FitData.model to be the evaluated model (a harness bug)")
    for field_name in ("id_train", "id_val_outputs"):
        out = getattr(data, field_name)
        if not isinstance(out, FitOutputs):
            _fail(name, f"FitData.{field_name} to be FitOutputs (a harness bug)", type(out).__name__)
        if out.logits.shape[1] != KIT.num_classes or out.labels.shape[0] != out.logits.shape[0]:
            _fail(name, f"FitData.{field_name}: logits (N, K) and labels (N,) (a harness bug)")
        if (out.features is not None) != with_features:
            _fail(name, f"FitData.{field_name}.features {'present' if with_features else 'None'} "
                        f"(needs_features={with_features}) (a harness bug)")
    if data.id_val is None or len(data.id_val) != KIT.sizes["val"]:
        _fail(name, "FitData.id_val: the held-out ID images (a harness bug)")


# ----------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------


def check_loss(factory: Callable[..., Loss], /, *, epochs: int = 8, min_accuracy: float = 0.9, **params: Any) -> dict:
    """Check a loss plugin: ``factory(**params)``.

    Checks: an ``nn.Module`` with ``forward(logits, targets)``, ``prepare_model`` and ``no_weight_decay`` (subclass
    :class:`~logitnorm_bench.components.Loss`); ``prepare_model(model, num_classes)`` returns a model that keeps the
    ``Classifier`` contract; ``no_weight_decay`` lists parameters of that model; the loss of a batch (logits from
    the prepared model) is a finite float scalar with finite gradients, the same for the same inputs, and a mean
    (a batch given twice over has the same loss); a loss with ``uses_outliers`` takes batches whose last targets
    are -1; and training the kit's small MLP with it for ``epochs`` epochs through the harness's own training loop
    (with the kit's OOD images as ``train.outliers`` when it takes them) neither diverges nor fails to learn:
    training accuracy of at least ``min_accuracy`` on the 4 separable classes, and a lower loss at the end.

    Returns the training history (one dict per epoch).
    """
    from logitnorm_bench.suite import Outliers, TrainRecipe, recipe_dict
    from logitnorm_bench.train import DivergedError, train

    loss = factory(**params)
    name = _label(factory, params)
    if not isinstance(loss, nn.Module):
        _fail(name, "an nn.Module (subclass logitnorm_bench.components.Loss)", type(loss).__name__)
    for method in ("prepare_model", "no_weight_decay"):
        if not callable(getattr(loss, method, None)):
            _fail(name, f"a {method}() method (subclass logitnorm_bench.components.Loss, which gives the defaults)")
    uses_outliers = getattr(loss, "uses_outliers", False)
    if not isinstance(uses_outliers, bool):
        _fail(name, "uses_outliers to be a bool", repr(uses_outliers))

    k = KIT.num_classes
    model = loss.prepare_model(_trainable_model(), k)
    if not isinstance(model, nn.Module):
        _fail(name, "prepare_model() to return the model (an nn.Module)", type(model).__name__)
    x, y = kit_images("train")
    _check_classifier(name, model.eval(), x[:8], k, "the prepared model")
    nwd = loss.no_weight_decay(model)
    ids = {id(p) for p in model.parameters()}
    if not isinstance(nwd, (list, tuple)) or not all(isinstance(p, nn.Parameter) and id(p) in ids for p in nwd):
        _fail(name, "no_weight_decay(model) to return a list of the model's parameters")

    batch_x, batch_y = x[:12], y[:12]
    if uses_outliers:
        batch_x = torch.cat([batch_x, kit_ood_images()[:6]])
        batch_y = torch.cat([batch_y, torch.full((6,), -1)])
    model.eval()  # BatchNorm on running statistics: the same logits for the same inputs
    value = _loss_of(loss, model, batch_x, batch_y)
    if not isinstance(value, Tensor) or value.dim() != 0 or not value.is_floating_point():
        _fail(name, "forward(logits, targets) to return a float scalar (0-dim tensor), the mean over the batch",
              f"{type(value).__name__} {tuple(getattr(value, 'shape', ()))}")
    if not torch.isfinite(value):
        _fail(name, "a finite loss", str(float(value)))
    if not value.requires_grad:
        _fail(name, "a loss with gradients with respect to the logits")
    model.zero_grad(set_to_none=True)
    value.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads or not all(torch.isfinite(g).all() for g in grads):
        _fail(name, "finite gradients for the model's parameters")
    model.zero_grad(set_to_none=True)
    again = _loss_of(loss, model, batch_x, batch_y)
    if not torch.equal(value.detach(), again.detach()):
        _fail(name, "the same loss for the same inputs", f"{float(value):.6g} then {float(again):.6g}")
    twice = _loss_of(loss, model, torch.cat([batch_x, batch_x]), torch.cat([batch_y, batch_y])).detach()
    value = value.detach()
    if not math.isclose(float(twice), float(value), rel_tol=1e-4, abs_tol=1e-6):
        _fail(name, "the mean over the batch (the same batch given twice over has the same loss)",
              f"{float(value):.6g} for the batch, {float(twice):.6g} for it twice over")

    outliers = Outliers(dataset="kit_ood", split="test", ratio=0.5) if uses_outliers else Outliers()
    recipe = recipe_dict(TrainRecipe(epochs=epochs, batch_size=16, lr=0.05, schedule="constant", crop_padding=0,
                                     hflip=False, weight_decay=5e-4, outliers=outliers))
    model = loss.prepare_model(_trainable_model(seed=1), k)
    try:
        result = train(model, loss, x, y, recipe, seed=0, device=torch.device("cpu"),
                       outliers=kit_ood_images() if uses_outliers else None)
    except DivergedError as exc:
        _fail(name, "a training that does not diverge", str(exc))
    history = result.history
    acc = history[-1]["train_acc"]
    if not acc >= min_accuracy:
        _fail(name, f"a loss a classifier learns from: training accuracy of at least {min_accuracy} after "
                    f"{epochs} epochs on the kit's 4 separable classes", f"{acc:.3f}")
    if not history[-1]["loss"] < history[0]["loss"]:
        _fail(name, "a loss that training lowers", f"{history[0]['loss']:.4g} -> {history[-1]['loss']:.4g}")
    return {"history": history}


def _loss_of(loss: nn.Module, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    with torch.enable_grad():
        return loss(model(x), y)


def _check_classifier(name: str, model: nn.Module, x: Tensor, k: int, what: str) -> int:
    """The Classifier contract on ``x``: logits (B, K), features (B, D), forward == head(features)."""
    for attr in ("features", "head"):
        if not hasattr(model, attr):
            _fail(name, f"{what} to have .{attr} (the Classifier contract: features(x), head, "
                        "forward(x) == head(features(x)))")
    if not isinstance(model.head, nn.Module):
        _fail(name, f"{what}'s head to be an nn.Module", type(model.head).__name__)

    def call(fn, arg, label):
        try:
            with torch.no_grad():
                return fn(arg)
        except Exception as exc:
            _fail(name, f"{what}: {label} to run on a batch of shape {tuple(x.shape)}", f"{type(exc).__name__}: {exc}")

    logits = call(model, x, "forward(x)")
    if not isinstance(logits, Tensor) or tuple(logits.shape) != (x.shape[0], k) or not logits.is_floating_point():
        _fail(name, f"{what}(x) to return float logits of shape (B, K) = ({x.shape[0]}, {k})",
              f"{tuple(getattr(logits, 'shape', ()))}")
    if not torch.isfinite(logits).all():
        _fail(name, f"finite logits from {what}")
    feats = call(model.features, x, "features(x)")
    if not isinstance(feats, Tensor) or feats.dim() != 2 or feats.shape[0] != x.shape[0]:
        _fail(name, f"{what}.features(x) to return penultimate features of shape (B, D)",
              f"{tuple(getattr(feats, 'shape', ()))}")
    via_head = call(model.head, feats, "head(features(x))")
    if not torch.allclose(logits, via_head, rtol=1e-5, atol=1e-5 * max(1.0, float(logits.abs().max()))):
        _fail(name, f"{what}: forward(x) == head(features(x))",
              f"max difference {float((logits - via_head).abs().max()):.3g}")
    return int(feats.shape[1])


# ----------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------


def check_dataset(factory: Callable[..., DatasetSource], /, *, root: str | Path | None = None, download: bool = False,
                  items: int = 8, **params: Any) -> dict[str, int]:
    """Check a dataset plugin: ``factory(**params)``, each of its splits built with ``DataContext(root,
    download, seed)`` (``root`` default: a temporary folder; data the dataset cannot find raises its
    :class:`~logitnorm_bench.errors.DataMissingError` unchanged, so a test can skip on it).

    Checks: the class attributes (``num_classes`` >= 0; ``input_shape`` (C, H, W); ``mean``/``std`` of C
    values, ``std`` > 0; ``splits``, with ``train`` and ``test`` for an ID dataset, ``test`` for an OOD one);
    every split is a non-empty ``Dataset`` of ``(image, label)`` whose images (``items`` of them, spread over
    the split) are float tensors of ``input_shape`` in [0, 1] with labels in ``[0, num_classes)`` (ID) or -1
    (OOD); the same item twice, and the split built again with the same seed, give the same images; the
    harness's ``materialize`` loads them.  Returns each split's size.
    """
    from logitnorm_bench.train import materialize

    source = factory(**params)
    name = _label(factory, params)
    k = source.num_classes
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        _fail(name, "num_classes to be an int >= 0 (0 for an OOD-only dataset)", repr(k))
    shape = tuple(source.input_shape)
    if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
        _fail(name, "input_shape to be (C, H, W) of positive ints", repr(source.input_shape))
    c = shape[0]
    if len(tuple(source.mean)) != c or len(tuple(source.std)) != c or not all(s > 0 for s in source.std):
        _fail(name, f"mean and std of {c} value(s) each (one per channel), std > 0",
              f"mean {source.mean!r}, std {source.std!r}")
    splits = tuple(source.splits)
    if not splits or not all(isinstance(s, str) for s in splits):
        _fail(name, "splits to be a non-empty tuple of names", repr(source.splits))
    needed = ("train", "test") if k else ("test",)
    if not set(needed) <= set(splits):
        _fail(name, f"the splits {', '.join(needed)} ({'an ID dataset is trained and evaluated' if k else 'OOD sets are evaluated on test'})",
              repr(splits))

    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        ctx = DataContext(root=Path(root) if root is not None else Path(tmp), download=download, seed=0)
        for split in splits:
            ds = source.build(split, ctx)
            if not hasattr(ds, "__getitem__") or not hasattr(ds, "__len__") or len(ds) == 0:
                _fail(name, f"build({split!r}) to return a non-empty Dataset", type(ds).__name__)
            n = len(ds)
            sizes[split] = n
            picks = sorted({round(i * (n - 1) / max(1, items - 1)) for i in range(min(items, n))})
            again = source.build(split, ctx)
            for i in picks:
                image, label = _check_item(name, split, i, ds[i], shape, k)
                image2, _ = ds[i]
                if not torch.equal(image, image2) or not torch.equal(image, again[i][0]):
                    _fail(name, f"item {i} of {split!r} to be the same image every time (random draws from ctx.seed)")
            x, y = materialize(Subset(ds, picks))
            if tuple(x.shape) != (len(picks), *shape):
                _fail(name, f"the harness's loader to stack {split!r} images into ({len(picks)}, {', '.join(map(str, shape))})",
                      str(tuple(x.shape)))
    return sizes


def _check_item(name: str, split: str, i: int, item: Any, shape: tuple, k: int) -> tuple[Tensor, int]:
    where = f"item {i} of {split!r}"
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        _fail(name, f"{where} to be (image, label)", type(item).__name__)
    image, label = item
    if not isinstance(image, Tensor) or not image.is_floating_point() or tuple(image.shape) != shape:
        _fail(name, f"{where}: a float tensor image of shape {shape} (not normalised; the model normalises)",
              f"{type(image).__name__} {tuple(getattr(image, 'shape', ()))} {getattr(image, 'dtype', '')}")
    if not torch.isfinite(image).all() or float(image.min()) < 0 or float(image.max()) > 1:
        _fail(name, f"{where}: pixel values in [0, 1]", f"[{float(image.min()):.3g}, {float(image.max()):.3g}]")
    label = int(label)
    if k and not 0 <= label < k:
        _fail(name, f"{where}: a label in [0, {k})", str(label))
    if not k and label != -1:
        _fail(name, f"{where}: label -1 (an OOD-only dataset)", str(label))
    return image, label


# ----------------------------------------------------------------------------------------------
# Architectures
# ----------------------------------------------------------------------------------------------


def check_architecture(factory: Callable[..., nn.Module], /, *, num_classes: int = 10,
                       input_shape: tuple[int, int, int] = (3, 32, 32), batch: int = 2, **params: Any) -> dict[str, int]:
    """Check an architecture plugin: ``factory(num_classes=..., input_shape=..., **params)`` as the harness calls it.

    Checks, on the model wrapped in the harness's ``Normalized``: an ``nn.Module`` with ``features`` and ``head``;
    in eval mode ``forward(x)`` gives finite float logits ``(B, K)``, ``features(x)`` gives ``(B, D)`` and
    ``head(features(x)) == forward(x)``; a batch of one works; the same input gives the same logits; an
    ``nn.Linear`` head has ``in_features == D`` and ``out_features == K`` (GODIN replaces it by its size); in train
    mode a cross-entropy step gives finite gradients to every trainable parameter.  Returns ``{"features": D,
    "parameters": count}``.
    """
    net = factory(num_classes=num_classes, input_shape=tuple(input_shape), **params)
    name = _label(factory, params)
    if not isinstance(net, nn.Module):
        _fail(name, "the factory to return an nn.Module", type(net).__name__)
    c = input_shape[0]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, *input_shape, generator=g)
    _check_classifier(name, net.eval(), x, num_classes, "the model")
    model = Normalized(net, (0.5,) * c, (0.25,) * c).eval()  # as the harness wraps it
    d = _check_classifier(name, model, x, num_classes, "the model (normalising)")
    _check_classifier(name, model, x[:1], num_classes, "the model (a batch of one)")
    with torch.no_grad():
        if not torch.equal(model(x), model(x)):
            _fail(name, "the same logits for the same input in eval mode")
    head = model.head
    if isinstance(head, nn.Linear) and (head.in_features != d or head.out_features != num_classes):
        _fail(name, f"a Linear head of in_features D = {d} and out_features K = {num_classes}",
              f"{head.in_features} -> {head.out_features}")
    model.train()
    y = torch.arange(batch) % num_classes
    F.cross_entropy(model(x), y).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    if missing:
        _fail(name, "every trainable parameter to take part in forward(x) (no gradient reached them)",
              ", ".join(missing[:5]))
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    if bad:
        _fail(name, "finite gradients", ", ".join(bad[:5]))
    return {"features": d, "parameters": sum(p.numel() for p in model.parameters())}

