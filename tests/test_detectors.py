"""Tests of the paper's detectors (plugins/ood_bench_paper/detectors.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_ood.detector import EnergyBased
from pytorch_ood.detector import GradNorm as PytorchOodGradNorm
from pytorch_ood.detector import odin_preprocessing
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from logitnorm_bench.components import Detector, FitData, ModelOutputs, Normalized
from ood_bench_paper import detectors as dets
from ood_bench_paper import losses
from ood_bench_paper.architectures import digits_mlp
from ood_bench_paper.godin import GodinHead

MEAN = (0.492, 0.482, 0.446)
STD = (0.247, 0.244, 0.262)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _registered():
    found = {}
    dets.register_detectors(lambda name, factory, description="": found.__setitem__(name, (factory, description)))
    return found


def _model(seed=0, num_classes=5, loss="ce", channels=3):
    """A small random classifier on 3x8x8 pixel images, wrapped in the ID normalisation, eval mode.

    BN running statistics are set to non-trivial values so eval-mode BN is not the identity.
    """
    torch.manual_seed(seed)
    net = digits_mlp(num_classes, (channels, 8, 8), width=24)
    model = Normalized(net, MEAN[:channels], STD[:channels])
    model = _registered_losses()[loss]().prepare_model(model, num_classes)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def _registered_losses():
    found = {}
    losses.register_losses(lambda name, factory, description="": found.__setitem__(name, factory))
    return found


def _pixels(n=16, seed=1, channels=3):
    return torch.rand(n, channels, 8, 8, generator=torch.Generator().manual_seed(seed))


def _outputs(model, x):
    with torch.no_grad():
        phi = model.features(x)
        return ModelOutputs(logits=model.head(phi), features=phi)


def test_registers_exact_names_and_defaults():
    found = _registered()
    assert set(found) == {"msp", "odin", "energy", "gradnorm", "godin"}
    assert all(desc for _, desc in found.values())
    assert dets.MSP().temperature == 1.0
    assert dets.Energy().temperature == 1.0
    assert dets.GradNorm().temperature == 1.0
    odin = dets.ODIN()
    assert (odin.temperature, odin.epsilon) == (1000.0, 0.0014)
    godin = dets.GODIN()
    assert godin.epsilon is None and godin.epsilons == (0.0, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08)
    assert odin.needs_input_grad and godin.needs_input_grad and godin.needs_fit
    assert dets.GradNorm().needs_features
    with pytest.raises(ValueError, match="temperature"):
        dets.MSP(temperature=0)


# ------------------------------------------------------------------------------ MSP


@pytest.mark.parametrize("t", [1.0, 0.5, 10.0])
def test_msp_matches_softmax_reference(t):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(32, 10, generator=g) * 4
    expected = torch.tensor([max(math.exp(v / t) for v in row) / sum(math.exp(v / t) for v in row) for row in logits.tolist()])
    got = dets.MSP(temperature=t).score_outputs(ModelOutputs(logits), None)
    assert torch.allclose(got, expected.float(), rtol=1e-5)


def test_msp_ties_and_constant_logits():
    logits = torch.tensor([[2.0, 2.0, 0.0], [5.0, 5.0, 5.0], [-1e4, -1e4, -1e4], [1e4, 0.0, 1e4]])
    got = dets.MSP().score_outputs(ModelOutputs(logits), None)
    e2 = math.exp(2.0)
    assert torch.allclose(got, torch.tensor([e2 / (2 * e2 + 1), 1 / 3, 1 / 3, 0.5]), atol=1e-6)


# ------------------------------------------------------------------------------ Energy


@pytest.mark.parametrize("t", [1.0, 0.1, 0.01, 5.0])
def test_energy_matches_pytorch_ood(t):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(32, 10, generator=g) * 3
    ours = dets.Energy(temperature=t).score_outputs(ModelOutputs(logits), None)
    # pytorch-ood returns the energy itself (higher = more OOD): ours is its negative
    assert torch.allclose(ours, -EnergyBased(None, t=t).predict_logits(logits), rtol=1e-6)
    assert torch.allclose(ours, -EnergyBased.score(logits, t=t), rtol=1e-6)


# ------------------------------------------------------------------------------ ODIN


@pytest.mark.parametrize("t,eps", [(1000.0, 0.0014), (1.0, 0.01), (10.0, 0.05)])
def test_odin_matches_pytorch_ood_preprocessing(t, eps):
    model = _model(seed=3)
    net = model.net
    x = _pixels()
    odin = dets.ODIN(temperature=t, epsilon=eps)

    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    x_norm = (x - mean) / std
    ref_hat = odin_preprocessing(net, x_norm, eps=eps, temperature=t, norm_std=list(STD))
    with torch.no_grad():
        ref_score = torch.softmax(net(ref_hat) / t, dim=1).amax(dim=1)

    # perturbation in pixel space through Normalized == official step on the normalised image / std
    ours_hat = odin.perturb(model, x)
    assert torch.allclose((ours_hat - mean) / std, ref_hat, atol=1e-5)
    ours = odin.score_inputs(model, x)
    assert ours.shape == (16,)
    assert torch.allclose(ours, ref_score, rtol=1e-5, atol=1e-7)


def test_odin_leaves_no_parameter_gradients_and_works_under_no_grad():
    model = _model(seed=4)
    x = _pixels()
    with torch.no_grad():
        a = dets.ODIN().score_inputs(model, x)
    with torch.inference_mode():
        b = dets.ODIN().score_inputs(model, x)
    assert torch.allclose(a, b)
    assert all(p.grad is None for p in model.parameters())


def test_odin_perturbation_raises_the_score_at_t1():
    model = _model(seed=5)
    x = _pixels()
    base = dets.MSP().score_outputs(_outputs(model, x), model)
    pert = dets.ODIN(temperature=1.0, epsilon=0.01).score_inputs(model, x)
    assert (pert >= base - 1e-6).float().mean() > 0.9


# ------------------------------------------------------------------------------ GradNorm


def _gradnorm_reference(model, x, t, params):
    """Huang et al.'s per-sample loop: loss = sum_k -log softmax(f/T)_k, backward, L1 of the grads."""
    scores = []
    for xi in x:
        model.zero_grad()
        out = model(xi[None]) / t
        targets = torch.ones_like(out)
        loss = torch.mean(torch.sum(-targets * F.log_softmax(out, dim=-1), dim=-1))
        loss.backward()
        scores.append(sum(p.grad.abs().sum() for p in params).item())
    model.zero_grad(set_to_none=True)
    return torch.tensor(scores, dtype=torch.float64)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("t", [1.0, 2.5])
def test_gradnorm_closed_form_matches_per_sample_autograd(seed, t):
    model = _model(seed=seed, num_classes=7)
    x = _pixels(seed=seed + 10) * 3  # some confident, some not
    ours = dets.GradNorm(temperature=t).score_outputs(_outputs(model, x), model)
    ref = _gradnorm_reference(model, x, t, [model.head.weight])
    assert torch.allclose(ours.double(), ref, rtol=1e-5)


def test_gradnorm_matches_pytorch_ood_restricted_to_head():
    model = _model(seed=6, num_classes=10)
    x = _pixels()
    ours = dets.GradNorm().score_outputs(_outputs(model, x), model)
    ref = PytorchOodGradNorm(model, param_filter=lambda name: name == "net.head.weight").predict(x)
    # pytorch-ood negates (higher = OOD) and averages over the K classes where the official code sums
    assert torch.allclose(ours, -10 * ref, rtol=1e-5)


@pytest.mark.parametrize("t", [1.0, 3.0])
def test_gradnorm_on_godin_head_matches_per_sample_autograd(t):
    model = _model(seed=7, num_classes=6, loss="godin")
    assert isinstance(model.head, GodinHead)
    x = _pixels()
    ours = dets.GradNorm(temperature=t).score_outputs(_outputs(model, x), model)
    head = model.head
    weights = [head.h.weight, head.g[0].weight, head.g[1].weight]
    assert {n for n, _ in head.named_parameters() if n.endswith("weight")} == {"h.weight", "g.0.weight", "g.1.weight"}
    ref = _gradnorm_reference(model, x, t, weights)
    assert torch.allclose(ours.double(), ref, rtol=1e-5)


def test_gradnorm_needs_features():
    with pytest.raises(ValueError, match="features"):
        dets.GradNorm().score_outputs(ModelOutputs(torch.randn(2, 3)), _model())


# ------------------------------------------------------------------------------ GODIN


def _godin_reference(model, x, eps):
    x = x.clone().requires_grad_(True)
    s = model.head.h(model.features(x)).max(dim=1).values
    (g,) = torch.autograd.grad(s.sum(), x)
    x_tilde = x.detach() - eps * torch.sign(-g)
    with torch.no_grad():
        return model.head.h(model.features(x_tilde)).max(dim=1).values


@pytest.mark.parametrize("eps", [0.0, 0.01, 0.08])
def test_godin_score_is_max_cosine_of_perturbed_input(eps):
    model = _model(seed=8, loss="godin")
    x = _pixels()
    ours = dets.GODIN(epsilon=eps).score_inputs(model, x)
    assert torch.allclose(ours, _godin_reference(model, x, eps), atol=1e-6)
    if eps > 0:  # the step is taken to increase the score
        base = dets.GODIN(epsilon=0.0).score_inputs(model, x)
        assert ours.mean() > base.mean()


class _Forbidden(Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        raise AssertionError("godin's epsilon selection must use id_val only")


def test_godin_fit_uses_id_val_only_and_picks_argmax():
    model = _model(seed=9, loss="godin")
    xval = _pixels(n=40, seed=2)
    id_val = TensorDataset(xval, torch.zeros(40, dtype=torch.long))
    det = dets.GODIN()
    data = FitData(model=model, id_train=_Forbidden(), id_val=id_val, device=torch.device("cpu"), batch_size=16)
    info = det.fit(data)

    expected = {eps: _godin_reference(model, xval, eps).double().mean().item() for eps in det.epsilons}
    assert set(info["candidates"]) == set(det.epsilons)
    for eps, mean in expected.items():
        assert info["candidates"][eps] == pytest.approx(mean, abs=1e-6)
    best = max(expected, key=expected.get)
    assert info["epsilon"] == best == det.epsilon
    # scoring uses the chosen epsilon
    assert torch.allclose(det.score_inputs(model, xval[:5]), _godin_reference(model, xval[:5], best), atol=1e-6)


def test_godin_fit_picks_argmax_of_custom_candidates():
    model = _model(seed=10, loss="godin")
    id_val = TensorDataset(_pixels(n=8), torch.zeros(8, dtype=torch.long))
    det = dets.GODIN(epsilons=[0.0, 0.5])
    info = det.fit(FitData(model=model, id_train=None, id_val=id_val, device=torch.device("cpu")))
    # a large step up the gradient raises the mean score, so the larger eps wins
    assert info["candidates"][0.5] > info["candidates"][0.0] and info["epsilon"] == 0.5


def test_godin_fixed_epsilon_and_errors():
    model = _model(seed=11, loss="godin")
    det = dets.GODIN(epsilon=0.02)
    assert det.fit(FitData(model=model, id_train=None, id_val=None, device=torch.device("cpu"))) == {
        "epsilon": 0.02,
        "candidates": {},
    }
    with pytest.raises(RuntimeError, match="fit"):
        dets.GODIN().score_inputs(model, _pixels())
    with pytest.raises(ValueError, match="id_val"):
        dets.GODIN().fit(FitData(model=model, id_train=None, id_val=None, device=torch.device("cpu")))


# ------------------------------------------------------------------------------ every detector x every loss


@pytest.mark.parametrize("loss", ["ce", "logitnorm", "logitpenalty", "godin"])
def test_every_detector_works_on_every_loss(loss):
    model = _model(seed=12, loss=loss)
    x = _pixels(n=6)
    id_val = TensorDataset(_pixels(n=6, seed=5), torch.zeros(6, dtype=torch.long))
    for name, (factory, _) in _registered().items():
        det: Detector = factory()
        if det.needs_fit:
            det.fit(FitData(model=model, id_train=None, id_val=id_val, device=torch.device("cpu")))
        if det.needs_input_grad:
            scores = det.score_inputs(model, x)
        else:
            scores = det.score_outputs(_outputs(model, x), model)
        assert scores.shape == (6,), name
        assert torch.isfinite(scores).all(), name
    assert all(p.grad is None for p in model.parameters())
