"""OpenOOD v1.5's components, registered by import string (the paper plugin's pattern: loading this
module imports no torch).  The entry points of pyproject.toml name the objects at the bottom."""

from __future__ import annotations

from pathlib import Path

from logitnorm_bench import hookimpl
from logitnorm_bench.plugins import lazy_plugin, register_defined  # noqa: F401 - the heavy modules use it
from ood_bench_suites import _description

HERE = Path(__file__).resolve().parent

DATASETS = {
    "openood_cifar10": ("OpenoodCifar10", "CIFAR-10 as OpenOOD v1.5's ID set (OpenOOD's normalisation); "
                                          "torchvision layout <root>/cifar-10-batches-py"),
    "openood_cifar100": ("OpenoodCifar100", "CIFAR-100 as OpenOOD v1.5's ID set (OpenOOD's normalisation); "
                                            "torchvision layout <root>/cifar-100-python"),
    "cifar10_ood": ("Cifar10Ood", "CIFAR-10 test split as OOD data (OpenOOD's near-OOD for CIFAR-100)"),
    "cifar100_ood": ("Cifar100Ood", "CIFAR-100 test split as OOD data (OpenOOD's near-OOD for CIFAR-10)"),
    "tin_openood_c10": ("TinForCifar10", "TinyImageNet restricted by OpenOOD's list "
                                         "benchmark_imglist/cifar10/test_tin.txt (near-OOD for CIFAR-10)"),
    "tin_openood_c100": ("TinForCifar100", "TinyImageNet restricted by OpenOOD's list "
                                           "benchmark_imglist/cifar100/test_tin.txt (near-OOD for CIFAR-100)"),
    "mnist_ood": ("MnistOod", "MNIST test split (torchvision, md5-checked) as RGB 32x32 OOD data (far-OOD)"),
}

ARCHITECTURES = {
    "resnet18_32x32": ("resnet18_32x32", "OpenOOD's ResNet18_32x32 (3x3 stem, no max-pool, parameter names "
                                         "of openood/networks/resnet18_32x32.py)."),
}

REPORTS = {
    "openood_v15": ("OpenOODReference", "OpenOOD v1.5 (Zhang et al. 2023): near/far-OOD AUROC beside ours."),
}


class _Suites:
    @hookimpl
    def register_suites(self, register):
        for path in sorted(HERE.glob("openood_*.yaml")):
            register(path.stem, lambda path=path: path, description=_description(path))


datasets = lazy_plugin("datasets", "ood_bench_openood.datasets", DATASETS)
architectures = lazy_plugin("architectures", "ood_bench_openood.architectures", ARCHITECTURES)
reports = lazy_plugin("reports", "ood_bench_openood.report", REPORTS)
suites = _Suites()
