"""The paper's architectures: ``wrn40_2``, ``resnet34``, ``densenet_bc``, plus ``digits_mlp``.

Each factory is ``factory(num_classes, input_shape, **params)`` and returns a module with
``forward(x) == head(features(x))`` (see :class:`logitnorm_bench.components.Classifier`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torchvision
from pytorch_ood.model import WideResNet as _PytorchOodWideResNet
from torch import Tensor, nn

from logitnorm_bench import hookimpl

from . import plugin
from logitnorm_bench.classifier import FcIsHead
from logitnorm_bench.components import Normalized


def _check_shape(name: str, input_shape: Sequence[int], *, exact_hw=None, min_hw=None) -> tuple[int, int, int]:
    try:
        c, h, w = (int(v) for v in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: input_shape must be (C, H, W), got {input_shape!r}") from None
    if exact_hw is not None and (h, w) != exact_hw:
        raise ValueError(
            f"{name}: supports only {exact_hw[0]}x{exact_hw[1]} inputs (its pooling is fixed), got input_shape {input_shape!r}"
        )
    if min_hw is not None and (h < min_hw or w < min_hw):
        raise ValueError(f"{name}: needs inputs of at least {min_hw}x{min_hw}, got input_shape {input_shape!r}")
    if c < 1:
        raise ValueError(f"{name}: input_shape needs at least one channel, got {input_shape!r}")
    return c, h, w


# --------------------------------------------------------------------------------------
# WRN-40-2
# --------------------------------------------------------------------------------------


class WRN(FcIsHead, _PytorchOodWideResNet):
    """pytorch-ood's WideResNet with the Classifier contract.

    pytorch-ood's class has the official LogitNorm / energy_ood parameter names (``conv1``,
    ``block1.layer.0.bn1``, ..., ``bn1``, ``fc``) and the official init, so official checkpoints
    load unchanged.  To keep those names, ``head`` is an alias of ``fc`` rather than a new
    submodule: reading ``head`` gives ``fc``, assigning ``head`` (GODIN) replaces ``fc``.
    """

    def __init__(self, num_classes: int, depth: int = 40, widen_factor: int = 2, dropout: float = 0.3, in_channels: int = 3):
        super().__init__(num_classes, depth=depth, widen_factor=widen_factor, drop_rate=dropout, in_channels=in_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def wrn40_2(num_classes: int, input_shape: Sequence[int] = (3, 32, 32), dropout: float = 0.3) -> WRN:
    c, _, _ = _check_shape("wrn40_2", input_shape, exact_hw=(32, 32))
    if not 0 <= dropout < 1:
        raise ValueError(f"wrn40_2: dropout must be in [0, 1), got {dropout!r}")
    return WRN(num_classes, depth=40, widen_factor=2, dropout=dropout, in_channels=c)


def load_official_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor], strict: bool = True):
    """Load a hongxin001/logitnorm_ood (or energy_ood) WRN checkpoint into a ``wrn40_2`` model.

    Handles the prefixes that differ: ``module.`` (saved from DataParallel) and a
    :class:`Normalized` wrapper around the model (its ``net.``).  Also accepts a checkpoint dict
    that holds the weights under ``state_dict``/``model``/``net``.  Returns ``load_state_dict``'s result.
    """
    for key in ("state_dict", "model", "net"):
        if key in state_dict and isinstance(state_dict[key], Mapping):
            state_dict = state_dict[key]
            break
    cleaned = {}
    for k, v in state_dict.items():
        while k.startswith("module."):
            k = k[len("module."):]
        cleaned[k] = v
    target = model.net if isinstance(model, Normalized) else model
    if "net.conv1.weight" in cleaned:  # saved from a Normalized-wrapped model: drop its mean/std
        cleaned = {k[len("net."):]: v for k, v in cleaned.items() if k.startswith("net.")}
    return target.load_state_dict(cleaned, strict=strict)


# --------------------------------------------------------------------------------------
# ResNet-34 and DenseNet-BC (CIFAR variants of torchvision's models)
# --------------------------------------------------------------------------------------


class _BodyHead(nn.Module):
    """``body`` maps images to flattened penultimate features; ``head`` is the final Linear."""

    def __init__(self, body: nn.Module, head: nn.Module):
        super().__init__()
        self.body = body
        self.head = head

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def resnet34(num_classes: int, input_shape: Sequence[int] = (3, 32, 32)) -> nn.Module:
    """CIFAR ResNet-34: torchvision's with a 3x3 stride-1 stem and no max-pool (He et al., 2016)."""
    c, _, _ = _check_shape("resnet34", input_shape, min_hw=8)
    net = torchvision.models.resnet34(num_classes=num_classes)
    net.conv1 = nn.Conv2d(c, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision does
    net.maxpool = nn.Identity()
    head, net.fc = net.fc, nn.Identity()  # torchvision's forward then ends at the flattened avgpool
    return _BodyHead(net, head)


def densenet_bc(num_classes: int, input_shape: Sequence[int] = (3, 32, 32), depth: int = 100, growth_rate: int = 12) -> nn.Module:
    """CIFAR DenseNet-BC (Huang et al., 2017): L=100, k=12, compression 0.5, bottleneck 4k.

    torchvision's DenseNet with the ImageNet stem (7x7/2 conv, BN, ReLU, max-pool) replaced by
    the CIFAR stem: one 3x3 conv to 2k channels.  torchvision's transitions halve the channels
    (compression 0.5); its forward ends with BN-ReLU-global-avgpool-Linear as the CIFAR model does.
    """
    c, _, _ = _check_shape("densenet_bc", input_shape, min_hw=8)
    if (depth - 4) % 6 != 0:
        raise ValueError(f"densenet_bc: depth must satisfy (depth - 4) % 6 == 0, got {depth!r}")
    n = (depth - 4) // 6  # bottleneck layers per dense block
    net = torchvision.models.DenseNet(
        growth_rate=growth_rate, block_config=(n, n, n), num_init_features=2 * growth_rate, bn_size=4, num_classes=num_classes
    )
    net.features.conv0 = nn.Conv2d(c, 2 * growth_rate, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(net.features.conv0.weight)  # as torchvision does
    net.features.norm0 = nn.Identity()
    net.features.relu0 = nn.Identity()
    net.features.pool0 = nn.Identity()
    head, net.classifier = net.classifier, nn.Identity()
    return _BodyHead(net, head)


# --------------------------------------------------------------------------------------
# A small network for the bundled 8x8 digits (the quick suite)
# --------------------------------------------------------------------------------------


def digits_mlp(num_classes: int, input_shape: Sequence[int] = (1, 8, 8), width: int = 128) -> nn.Module:
    """Flatten -> [Linear -> BN -> ReLU] x 2 -> Linear.

    BatchNorm keeps the penultimate features well scaled, which LogitNorm (whose logits are only
    ever seen after normalisation in training) needs to train as fast as cross-entropy.
    """
    c, h, w = _check_shape("digits_mlp", input_shape)
    if c * h * w > 4096:
        raise ValueError(f"digits_mlp: meant for small inputs such as (1, 8, 8); got input_shape {input_shape!r}")
    width = int(width)
    if width < 1:
        raise ValueError(f"digits_mlp: width must be >= 1, got {width!r}")
    body = nn.Sequential(
        nn.Flatten(),
        nn.Linear(c * h * w, width),
        nn.BatchNorm1d(width),
        nn.ReLU(inplace=True),
        nn.Linear(width, width),
        nn.BatchNorm1d(width),
        nn.ReLU(inplace=True),
    )
    return _BodyHead(body, nn.Linear(width, num_classes))


@hookimpl
def register_architectures(register):
    """This module as a plugin itself (``Plugins.add(ood_bench_paper.architectures, ...)``): the components of the
    entry point ``paper_architectures`` (the light :data:`ood_bench_paper.plugin.architectures`, which registers import
    strings), registered here as the callables, since this module is imported anyway."""
    plugin.register_defined(register, plugin.ARCHITECTURES, globals())
