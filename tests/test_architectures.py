"""Tests of the paper's architectures (plugins/ood_bench_paper/architectures.py)."""

from __future__ import annotations

import pytest
import torch
from pytorch_ood.model import WideResNet as PytorchOodWideResNet
from torch import nn

from logitnorm_bench.components import Classifier, Normalized
from ood_bench_paper import architectures as archs
from ood_bench_paper.losses import CrossEntropy, LogitNormLoss

# published parameter counts for 10 classes
PUBLISHED = {"wrn40_2": 2.24e6, "resnet34": 21.3e6, "densenet_bc": 0.77e6}


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _registered():
    found = {}
    archs.register_architectures(lambda name, factory, description="": found.__setitem__(name, (factory, description)))
    return found


@pytest.fixture(scope="module")
def cifar_models():
    """Each big model built once for the whole module."""
    torch.manual_seed(0)
    return {name: archs.__dict__[name](10, (3, 32, 32)).eval() for name in PUBLISHED}


def test_registers_exact_names():
    found = _registered()
    assert set(found) == {"wrn40_2", "resnet34", "densenet_bc", "digits_mlp"}
    assert all(desc for _, desc in found.values())


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_param_counts_match_published(cifar_models, name):
    n = sum(p.numel() for p in cifar_models[name].parameters())
    assert abs(n - PUBLISHED[name]) / PUBLISHED[name] < 0.02, n


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_contract_and_shapes(cifar_models, name):
    model = cifar_models[name]
    assert isinstance(model, Classifier)
    assert isinstance(model.head, nn.Linear) and model.head.out_features == 10
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        logits, phi = model(x), model.features(x)
    assert logits.shape == (2, 10)
    assert phi.shape == (2, model.head.in_features)
    assert torch.allclose(model.head(phi), logits, atol=1e-5)


def test_feature_dims(cifar_models):
    assert cifar_models["wrn40_2"].head.in_features == 128
    assert cifar_models["resnet34"].head.in_features == 512
    assert cifar_models["densenet_bc"].head.in_features == 342  # 2k + 3*16k, compressed twice


def test_normalized_wrapper_keeps_contract(cifar_models):
    model = Normalized(cifar_models["densenet_bc"], (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), model.head(model.features(x)), atol=1e-5)


def test_resnet34_has_cifar_stem(cifar_models):
    body = cifar_models["resnet34"].body
    assert body.conv1.kernel_size == (3, 3) and body.conv1.stride == (1, 1)
    assert isinstance(body.maxpool, nn.Identity)


def test_densenet_bc_structure(cifar_models):
    feats = cifar_models["densenet_bc"].body.features
    assert feats.conv0.kernel_size == (3, 3) and feats.conv0.stride == (1, 1) and feats.conv0.out_channels == 24
    assert len(feats.denseblock1) == 16 and len(feats.denseblock3) == 16
    assert feats.transition1.conv.out_channels == (24 + 16 * 12) // 2  # compression 0.5


def test_wrn_defaults_and_dropout():
    m = archs.wrn40_2(10, (3, 32, 32))
    assert m.block1.layer[0].droprate == 0.3
    assert archs.wrn40_2(10, (3, 32, 32), dropout=0.0).block1.layer[0].droprate == 0.0


def test_wrn_loads_official_state_dict():
    torch.manual_seed(1)
    # an official-style checkpoint: pytorch-ood's WideResNet has hongxin001/logitnorm_ood's names
    official = PytorchOodWideResNet(num_classes=10, depth=40, widen_factor=2, drop_rate=0.3).eval()
    sd = official.state_dict()
    for key in ("conv1.weight", "block1.layer.0.bn1.weight", "block3.layer.5.conv2.weight", "bn1.running_mean", "fc.weight", "fc.bias"):
        assert key in sd
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = official(x)

    plain = archs.wrn40_2(10, (3, 32, 32)).eval()
    assert set(plain.state_dict()) == set(sd)  # no key renamed at all
    plain.load_state_dict(sd)  # loads directly
    with torch.no_grad():
        assert torch.allclose(plain(x), expected, atol=1e-6)

    # DataParallel's "module." prefix, into a Normalized-wrapped model
    wrapped = Normalized(archs.wrn40_2(10, (3, 32, 32)), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)).eval()
    archs.load_official_state_dict(wrapped, {"module." + k: v for k, v in sd.items()})
    with torch.no_grad():
        assert torch.allclose(wrapped(x), expected, atol=1e-6)

    # a checkpoint dict saved from a Normalized model
    again = archs.wrn40_2(10, (3, 32, 32)).eval()
    archs.load_official_state_dict(again, {"state_dict": wrapped.state_dict()})
    with torch.no_grad():
        assert torch.allclose(again(x), expected, atol=1e-6)


def test_wrn_head_assignment_goes_to_fc():
    m = archs.wrn40_2(10, (3, 32, 32))
    new = nn.Linear(128, 3)
    m.head = new
    assert m.fc is new and m.head is new and "head" not in m._modules


@pytest.mark.parametrize(
    "name,shape",
    [("wrn40_2", (3, 64, 64)), ("wrn40_2", (3, 32)), ("resnet34", (3, 4, 4)), ("densenet_bc", (3, 2, 2)), ("digits_mlp", (3, 224, 224))],
)
def test_unsupported_input_shapes_fail_clearly(name, shape):
    with pytest.raises(ValueError, match=name):
        _registered()[name][0](10, shape)


def test_other_channel_counts():
    x = torch.rand(2, 1, 32, 32)
    for name in ("wrn40_2", "resnet34"):
        m = _registered()[name][0](5, (1, 32, 32)).eval()
        with torch.no_grad():
            assert m(x).shape == (2, 5)


def test_digits_mlp_contract_and_width():
    m = archs.digits_mlp(10, (1, 8, 8), width=32).eval()
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        assert m(x).shape == (5, 10)
        assert torch.allclose(m(x), m.head(m.features(x)))
    assert m.head.in_features == 32
    assert archs.digits_mlp(10, (1, 8, 8)).head.in_features == 128  # default width


def _digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0  # [0, 1] pixels
    y = torch.tensor(data.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return (x[:1300], y[:1300]), (x[1300:], y[1300:])


@pytest.mark.parametrize("loss", [CrossEntropy(), LogitNormLoss(tau=0.04)], ids=["ce", "logitnorm"])
def test_digits_mlp_trains_fast_to_90_percent(loss):
    torch.manual_seed(0)
    (xtr, ytr), (xte, yte) = _digits()
    mean, std = xtr.mean().item(), xtr.std().item()
    model = Normalized(archs.digits_mlp(10, (1, 8, 8)), (mean,), (std,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    model.train()
    for _ in range(10):  # 200 SGD steps: well under a second on 2 idle cores
        perm = torch.randperm(len(ytr))
        for i in range(0, len(ytr) - 63, 64):  # drop_last, as the official training does
            idx = perm[i : i + 64]
            opt.zero_grad()
            loss(model(xtr[idx]), ytr[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(xte).argmax(1) == yte).float().mean().item()
    assert acc > 0.9, acc
