"""The conformance kit (logitnorm_bench/testing.py): every built-in detector, loss, dataset and architecture
passes it, and each check fails with a message that says what the contract wants."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from ood_bench_pytorch_ood import plugin as pood
from logitnorm_bench.components import DatasetSource, Detector, Loss
from logitnorm_bench.errors import DataMissingError
from logitnorm_bench.plugins import Plugins
from logitnorm_bench.testing import (KIT, check_architecture, check_dataset, check_detector, check_loss, kit_images,
                                     kit_model)
from ood_bench_paper import architectures, datasets, detectors, losses

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

ROOT = Path(__file__).resolve().parent.parent


def builtins() -> Plugins:
    plugins = Plugins(load_entry_points=False)
    for module, name in ((datasets, "paper_datasets"), (architectures, "paper_architectures"),
                         (losses, "paper_losses"), (detectors, "paper_detectors"),
                         (pood.detectors, "pytorch_ood_detectors"), (pood.losses, "pytorch_ood_losses"),
                         (pood.datasets, "pytorch_ood_datasets")):
        plugins.add(module, name=name)
    return plugins


BUILTINS = builtins()


def factory(kind: str, name: str):
    """What the registry builds, under the component's name (for the kit's messages)."""
    def build(**params):
        return BUILTINS.registry(kind).build(name, **params)
    build.__name__ = name
    return build


# ----------------------------------------------------------------------------------------------
# Every built-in component passes
# ----------------------------------------------------------------------------------------------

#: detector -> [(params, kit options, why)]: the defaults with the default checks unless said otherwise.
DETECTOR_CASES = {
    "mcd": [({}, {"min_auroc": 0.8}, "MC-dropout's variance is low on inputs the model is uniformly unsure of "
                                     "(the kit's flat-logit OOD), so it separates them less well than ID"),
            ({"mode": "mean"}, {}, "")],
    "openmax": [({}, {"min_auroc": 0.75}, "OpenMax rejects the ID images in its classes' Weibull tails "
                                          "(tailsize 25 of 100 training images per class)")],
    "vim": [({}, {"min_auroc": 0.7}, "ViM's residual flags features off the ID principal subspace; the kit's dim OOD "
                                     "images have small features inside it, so only its energy term separates them")],
    "react": [({}, {}, ""), ({"threshold": 1.0}, {}, "")],
    "ash": [({}, {}, ""), ({"variant": "ash-p"}, {}, ""), ({"variant": "ash-b"}, {}, "")],
}


@pytest.mark.parametrize("name, params, options", [
    pytest.param(name, params, options, id=f"{name}{params or ''}")
    for name in BUILTINS.registry("detectors").names()
    for params, options, _why in DETECTOR_CASES.get(name, [({}, {}, "")])])
def test_builtin_detector_conforms(name, params, options):
    report = check_detector(factory("detectors", name), **options, **params)
    assert report.id_scores.shape == (KIT.sizes["test"],) and report.ood_scores.shape == (KIT.ood_size,)


#: loss -> (params, why): the kit trains a 4-class MLP from scratch for 8 epochs.
LOSS_CASES = {
    "energy_reg": ({"margin_in": -8.0, "margin_out": -3.0},
                   "the default margins (-25, -7: the energy paper's, for fine-tuning a CIFAR WRN) ask for energies "
                   "the kit's small model does not reach in 8 epochs; margins of its scale"),
}


@pytest.mark.parametrize("name", BUILTINS.registry("losses").names())
def test_builtin_loss_conforms(name):
    params, _why = LOSS_CASES.get(name, ({}, ""))
    history = check_loss(factory("losses", name), **params)["history"]
    assert history[-1]["train_acc"] >= 0.9


@pytest.mark.parametrize("name", BUILTINS.registry("datasets").names())
def test_builtin_dataset_conforms(name):
    root = os.environ.get("OOD_BENCH_DATA", "data")
    try:
        sizes = check_dataset(factory("datasets", name), root=root)
    except DataMissingError as exc:
        pytest.skip(f"needs downloaded data (not bundled): {str(exc)[:100]}")
    assert all(n > 0 for n in sizes.values())


#: the shape each architecture is checked on: the digits' for the digits MLP, CIFAR's for the others
#: (a batch of two 32x32 images: about a second each on a CPU).
ARCH_SHAPES = {"digits_mlp": (1, 8, 8)}


@pytest.mark.parametrize("name", BUILTINS.registry("architectures").names())
def test_builtin_architecture_conforms(name):
    info = check_architecture(factory("architectures", name), input_shape=ARCH_SHAPES.get(name, (3, 32, 32)))
    assert info["features"] > 0


def test_the_shape_taking_datasets_conform_at_the_digits_shape():
    for name in ("gaussian_noise", "uniform_noise", "photo_patches", "blobs"):
        check_dataset(factory("datasets", name), shape=(1, 8, 8), n=20)


# ----------------------------------------------------------------------------------------------
# The kit's model and data
# ----------------------------------------------------------------------------------------------


def test_kit_model_is_confident_on_id_and_flat_on_ood():
    from logitnorm_bench.testing import kit_ood_images

    model = kit_model()
    x, y = kit_images("test")
    with torch.no_grad():
        p_id = model(x).softmax(dim=1)
        p_ood = model(kit_ood_images()).softmax(dim=1)
    assert (p_id.argmax(dim=1) == y).all() and p_id.amax(dim=1).min() > 0.99
    assert p_ood.amax(dim=1).max() < 0.3  # 4 classes: 0.25 is flat


# ----------------------------------------------------------------------------------------------
# Each check fails with what the contract wants
# ----------------------------------------------------------------------------------------------


class OODScore(Detector):
    """Max softmax, negated: pytorch-ood's convention, the classic mistake."""

    def score_outputs(self, outputs, model):
        return -outputs.logits.softmax(dim=1).amax(dim=1)


class Column(Detector):
    def score_outputs(self, outputs, model):
        return outputs.logits.amax(dim=1, keepdim=True)


class NaNs(Detector):
    def score_outputs(self, outputs, model):
        return outputs.logits.amax(dim=1) * float("nan")


class Random(Detector):
    def score_outputs(self, outputs, model):
        return outputs.logits.amax(dim=1) + torch.rand(outputs.logits.shape[0])


class Peeks(Detector):
    """Reads the features without declaring needs_features."""

    def score_outputs(self, outputs, model):
        return -outputs.features.norm(dim=1)


class TrainsTheModel(Detector):
    def score_outputs(self, outputs, model):
        model.train()
        return outputs.logits.amax(dim=1)


class LeavesGrads(Detector):
    needs_input_grad = True

    def score_inputs(self, model, x):
        with torch.enable_grad():
            out = model(x).amax(dim=1)
            out.sum().backward()
        return out.detach()


class TensorFit(Detector):
    needs_fit = True

    def fit(self, data):
        return {"mean": data.id_train.logits.mean(0)}  # a tensor: not JSON

    def score_outputs(self, outputs, model):
        return outputs.logits.amax(dim=1)


class NoFit(Detector):
    needs_fit = True

    def score_outputs(self, outputs, model):
        return outputs.logits.amax(dim=1)


class NoScore(Detector):
    needs_input_grad = True

    def score_outputs(self, outputs, model):
        return outputs.logits.amax(dim=1)


@pytest.mark.parametrize("cls, message", [
    (OODScore, "scores higher for in-distribution inputs.*got 0.000 \\(below 0.5: .*negate them"),
    (Column, "one score per input, a 1-D tensor of shape \\(32,\\); got shape \\(32, 1\\)"),
    (NaNs, "finite scores \\(no NaN or inf\\)"),
    (Random, "the same inputs to give the same scores"),
    (Peeks, "a detector that reads outputs.features must set needs_features = True"),
    (TrainsTheModel, "leave the model in the mode it found it"),
    (LeavesGrads, "leave the parameters' .grad alone"),
    (TensorFit, "fit\\(\\) to return a JSON-serialisable dict"),
    (NoFit, "fit\\(data\\) to be implemented when needs_fit is set"),
    (NoScore, "score_inputs\\(\\) to be implemented \\(needs_input_grad=True\\)"),
])
def test_check_detector_says_what_the_contract_wants(cls, message):
    with pytest.raises(AssertionError, match=f"^{cls.__name__}\\(\\): the contract wants .*{message}"):
        check_detector(cls)


def test_check_detector_reports_what_the_fit_was_given():
    class Centroid(Detector):
        needs_fit = needs_features = True

        def fit(self, data):
            self.centre = data.id_train.features.mean(0)
            return {"n": int(data.id_train.labels.shape[0])}

        def score_outputs(self, outputs, model):
            return -(outputs.features - self.centre).norm(dim=1)

    report = check_detector(Centroid, direction=False)
    assert report.fit["n"] == KIT.sizes["train"] and report.fit["fit_data"]["id_val_samples"] == KIT.sizes["val"]
    assert report.fit_data.id_train.features.shape == (KIT.sizes["train"], 32)


class PerSample(Loss):
    def forward(self, logits, targets):
        return F.cross_entropy(logits, targets, reduction="none")


class Summed(Loss):
    def forward(self, logits, targets):
        return F.cross_entropy(logits, targets, reduction="sum")


class Detached(Loss):
    def forward(self, logits, targets):
        return F.cross_entropy(logits.detach(), targets)


class Lost(Loss):
    def prepare_model(self, model, num_classes):
        return None

    def forward(self, logits, targets):
        return F.cross_entropy(logits, targets)


class Backwards(Loss):
    def forward(self, logits, targets):
        return -F.cross_entropy(logits, targets).clamp(max=10)


class PlainModule(nn.Module):
    def forward(self, logits, targets):
        return F.cross_entropy(logits, targets)


@pytest.mark.parametrize("cls, message", [
    (PerSample, "a float scalar \\(0-dim tensor\\), the mean over the batch"),
    (Summed, "the mean over the batch \\(the same batch given twice over has the same loss\\)"),
    (Detached, "a loss with gradients with respect to the logits"),
    (Lost, "prepare_model\\(\\) to return the model"),
    (Backwards, "a loss a classifier learns from"),
    (PlainModule, "a prepare_model\\(\\) method"),
])
def test_check_loss_says_what_the_contract_wants(cls, message):
    with pytest.raises(AssertionError, match=f"^{cls.__name__}\\(\\): the contract wants .*{message}"):
        check_loss(cls)


class Tiny(DatasetSource):
    num_classes, input_shape, mean, std, splits = 2, (1, 2, 2), (0.5,), (0.25,), ("train", "test")
    flaw = ""

    def build(self, split, ctx):
        x = torch.linspace(0, 1, 6 * 4).view(6, 1, 2, 2)
        y = torch.arange(6) % 2
        if self.flaw == "bright":
            x = x * 2
        if self.flaw == "label":
            y = y + 1
        if self.flaw == "shape":
            x = x.view(6, 1, 4, 1)
        if self.flaw == "random":
            x = torch.rand(6, 1, 2, 2)
        return TensorDataset(x, y)


@pytest.mark.parametrize("flaw, message", [
    ("bright", "pixel values in \\[0, 1\\]"), ("label", "a label in \\[0, 2\\)"),
    ("shape", "a float tensor image of shape \\(1, 2, 2\\)"), ("random", "the same image every time"),
])
def test_check_dataset_says_what_the_contract_wants(flaw, message):
    cls = type(f"Tiny_{flaw}", (Tiny,), {"flaw": flaw})
    with pytest.raises(AssertionError, match=f"the contract wants .*{message}"):
        check_dataset(cls)
    check_dataset(Tiny)  # and the sound one passes


def test_check_dataset_wants_an_id_dataset_to_have_train_and_test():
    cls = type("OnlyTest", (Tiny,), {"splits": ("test",)})
    with pytest.raises(AssertionError, match="the splits train, test"):
        check_dataset(cls)


class TwoHeads(nn.Module):
    def __init__(self, num_classes, input_shape):
        super().__init__()
        self.body = nn.Flatten()
        self.head = nn.Linear(int(torch.tensor(input_shape).prod()), num_classes)
        self.unused = nn.Linear(3, 3)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.features(x))


class Inconsistent(TwoHeads):
    def forward(self, x):
        return 2 * self.head(self.features(x))


class MapFeatures(TwoHeads):
    def features(self, x):
        return x  # feature maps, not pooled features

    def forward(self, x):
        return self.head(self.body(x))


@pytest.mark.parametrize("cls, message", [
    (TwoHeads, "every trainable parameter to take part in forward\\(x\\).*net.unused.weight"),
    (Inconsistent, "forward\\(x\\) == head\\(features\\(x\\)\\)"),
    (MapFeatures, "features\\(x\\) to return penultimate features of shape \\(B, D\\)"),
])
def test_check_architecture_says_what_the_contract_wants(cls, message):
    with pytest.raises(AssertionError, match=f"the contract wants .*{message}"):
        check_architecture(cls, input_shape=(1, 4, 4), num_classes=3)


# ----------------------------------------------------------------------------------------------
# The example plugin's conformance tests, and the docs
# ----------------------------------------------------------------------------------------------

EXAMPLE = ROOT / "examples" / "ood-bench-example-plugin"


def test_example_plugin_conformance_tests_pass(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    path = EXAMPLE / "tests" / "test_conformance.py"
    spec = importlib.util.spec_from_file_location("_example_conformance", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tests = [getattr(module, n) for n in dir(module) if n.startswith("test_")]
    assert len(tests) >= 2
    for test in tests:
        test()
    sys.modules.pop("ood_bench_example_plugin", None)


def test_docs_show_the_example_conformance_tests_as_they_are():
    docs = (ROOT / "docs" / "plugins.md").read_text()
    assert (EXAMPLE / "tests" / "test_conformance.py").read_text() in docs
    assert "## Testing your plugin" in docs
