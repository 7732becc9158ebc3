"""OpenOOD v1.5's ``ResNet18_32x32`` (openood/networks/resnet18_32x32.py at Jingkang50/OpenOOD
3c35632): BasicBlock [2, 2, 2, 2], 3x3 stride-1 stem without max-pool, adaptive average pooling,
``fc``.  The parameter names are OpenOOD's, so its published checkpoints load unchanged into the
module (inside the harness's :class:`~logitnorm_bench.components.Normalized` wrapper: ``net.``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

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


class ResNet18_32x32(nn.Module):
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

    @property
    def head(self) -> nn.Module:
        return self.fc

    def __setattr__(self, name, value):
        super().__setattr__("fc" if name == "head" else name, value)

    def features(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.avgpool(out).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def resnet18_32x32(num_classes: int, input_shape: Sequence[int] = (3, 32, 32)) -> ResNet18_32x32:
    c, _, _ = _check_shape("resnet18_32x32", input_shape, min_hw=8)
    return ResNet18_32x32(num_classes, in_channels=c)
