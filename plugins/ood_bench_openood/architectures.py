"""Architectures of the OpenOOD v1.5 benchmarks.

* ``resnet18_32x32``: OpenOOD's ``ResNet18_32x32`` (openood/networks/resnet18_32x32.py at
  Jingkang50/OpenOOD 3c35632): BasicBlock [2, 2, 2, 2], 3x3 stride-1 stem without max-pool, adaptive
  average pooling, ``fc``.  The parameter names are OpenOOD's, so its published checkpoints load
  unchanged into the module (inside the harness's :class:`~logitnorm_bench.components.Normalized`
  wrapper: ``net.``).
* ``tv_resnet50``, ``tv_resnet18``: torchvision's ResNets with torchvision's parameter names, for the
  ImageNet benchmarks' ``weights: torchvision:resnet50/IMAGENET1K_V1`` (no training); ``classes:
  imagenet200`` restricts the 1K head to ImageNet-200's classes (:class:`TorchvisionResNet`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock as BasicBlock_tv
from torchvision.models.resnet import Bottleneck, ResNet

from logitnorm_bench.classifier import FcIsHead
from logitnorm_bench.errors import ConfigError
from ood_bench_openood.imagenet_classes import imagenet200_to_1k
from ood_bench_paper.architectures import _check_shape


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18_32x32(FcIsHead, nn.Module):
    """``forward(x) == head(features(x))``; ``head`` is an alias of OpenOOD's ``fc`` (as the paper
    plugin's WRN does), so checkpoints keep OpenOOD's names and GODIN can still replace the head."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, num_blocks=(2, 2, 2, 2)):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(64, num_blocks[0], 1)
        self.layer2 = self._make_layer(128, num_blocks[1], 2)
        self.layer3 = self._make_layer(256, num_blocks[2], 2)
        self.layer4 = self._make_layer(512, num_blocks[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        self.feature_size = 512

    def _make_layer(self, planes: int, n: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def features(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.avgpool(out).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def resnet18_32x32(num_classes: int, input_shape: Sequence[int] = (3, 32, 32)) -> ResNet18_32x32:
    c, _, _ = _check_shape("resnet18_32x32", input_shape, min_hw=8)
    return ResNet18_32x32(num_classes, in_channels=c)


# ------------------------------------------------------------------------------------------
# torchvision's ResNets (ImageNet, 224x224), for torchvision's published weights
# ------------------------------------------------------------------------------------------

#: ``classes`` values: a named subset of ImageNet-1K's classes -> (classes of the full head, the 1K
#: index of each kept class in the subset's label order).
CLASS_SUBSETS = {"imagenet200": (1000, imagenet200_to_1k)}


def _subset(classes: str | None, num_classes: int, arch: str) -> list[int] | None:
    if classes is None:
        return None
    if classes not in CLASS_SUBSETS:
        raise ConfigError(f"{arch}: classes is {classes!r}; expected null or one of {', '.join(CLASS_SUBSETS)}")
    index = CLASS_SUBSETS[classes][1]()
    if num_classes != len(index):
        raise ConfigError(f"{arch}: classes {classes!r} keeps {len(index)} classes, but the ID dataset has "
                          f"{num_classes}; expected an ID dataset labelled by {classes}'s classes")
    return index


class TorchvisionResNet(FcIsHead, ResNet):
    """torchvision's ``ResNet`` unchanged (so torchvision's state dicts load by their own names) with
    the harness's contract: ``features`` (the pooled penultimate layer) and ``head`` (an alias of
    ``fc``).

    With ``class_index`` (the ``classes`` parameter), the head is a ``Linear`` with only those
    classes' rows, in that order: loading a state dict whose ``fc`` has all ``full_classes`` rows
    keeps the rows of ``class_index`` (a state dict of the restricted head loads as it is).  So
    ``head(f) == full_fc(f)[:, class_index]``: the 1K classifier's logits of the kept classes, every
    detector seeing only those, as if the other classes did not exist.
    """

    def __init__(self, block, layers, num_classes: int, class_index: list[int] | None = None,
                 full_classes: int | None = None):
        super().__init__(block, layers, num_classes=num_classes)
        self.class_index, self.full_classes = class_index, full_classes
        self.feature_size = self.fc.in_features
        if class_index is not None:
            self._register_load_state_dict_pre_hook(self._keep_rows)

    def _keep_rows(self, state_dict, prefix, *_args) -> None:
        for key in (f"{prefix}fc.weight", f"{prefix}fc.bias"):
            value = state_dict.get(key)
            if value is not None and value.shape[0] == self.full_classes != len(self.class_index):
                state_dict[key] = value[torch.as_tensor(self.class_index)]

    def features(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _torchvision_resnet(arch: str, block, layers, num_classes: int, input_shape, classes):
    c, _, _ = _check_shape(arch, input_shape, min_hw=32)
    if c != 3:
        raise ConfigError(f"{arch}: input_shape {tuple(input_shape)}; expected 3 channels (torchvision's stem)")
    index = _subset(classes, num_classes, arch)
    full = CLASS_SUBSETS[classes][0] if index is not None else None
    return TorchvisionResNet(block, layers, num_classes, class_index=index, full_classes=full)


def _weights_classes(arch: str):
    def torchvision_classes(num_classes: int, classes: str | None = None) -> int:
        """The number of classes of the torchvision state dict this architecture loads."""
        return CLASS_SUBSETS[classes][0] if _subset(classes, num_classes, arch) is not None else num_classes
    return torchvision_classes


def tv_resnet50(num_classes: int, input_shape: Sequence[int] = (3, 224, 224),
                classes: str | None = None) -> TorchvisionResNet:
    return _torchvision_resnet("tv_resnet50", Bottleneck, [3, 4, 6, 3], num_classes, input_shape, classes)


def tv_resnet18(num_classes: int, input_shape: Sequence[int] = (3, 224, 224),
                classes: str | None = None) -> TorchvisionResNet:
    return _torchvision_resnet("tv_resnet18", BasicBlock_tv, [2, 2, 2, 2], num_classes, input_shape, classes)


# What logitnorm_bench.weights checks a ``torchvision:<model>/<weights>`` entry against at plan time.
tv_resnet50.torchvision_model, tv_resnet50.torchvision_classes = "resnet50", _weights_classes("tv_resnet50")
tv_resnet18.torchvision_model, tv_resnet18.torchvision_classes = "resnet18", _weights_classes("tv_resnet18")
