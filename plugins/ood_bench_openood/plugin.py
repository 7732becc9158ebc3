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
    "openood_imagenet200": ("OpenoodImagenet200", "ImageNet-200 (ImageNet-R's 200 classes) by OpenOOD v1.5's lists "
                                                  "benchmark_imglist/imagenet200/{train,val,test}_imagenet200.txt"),
    "openood_imagenet1k": ("OpenoodImagenet1k", "ImageNet-1K by OpenOOD v1.5's lists "
                                                "benchmark_imglist/imagenet/{train,val,test}_imagenet.txt"),
}
# OpenOOD v1.5's ImageNet OOD sets, one per benchmark (each benchmark folder has its own lists):
# short benchmark name -> OpenOOD's folder, and set -> its description.
IMAGENET_BENCHMARKS = {"in200": "imagenet200", "in1k": "imagenet"}
IMAGENET_OOD_TEXT = {"ssb_hard": "SSB-hard (near-OOD)", "ninco": "NINCO (near-OOD)",
                     "inaturalist": "iNaturalist (far-OOD)", "textures": "Textures (far-OOD)",
                     "openimage_o": "OpenImage-O (far-OOD; val split: val_openimage_o.txt)"}


def imagenet_ood_class(ood_set: str, short: str) -> str:
    """The class name in :mod:`.datasets` of ``<ood_set>_openood_<short>`` (``ssb_hard``, ``in200`` -> ``SsbHardIn200``)."""
    return "".join(w.title() for w in ood_set.split("_")) + short.title()


for _short, _folder in IMAGENET_BENCHMARKS.items():
    for _set, _text in IMAGENET_OOD_TEXT.items():
        DATASETS[f"{_set}_openood_{_short}"] = (imagenet_ood_class(_set, _short),
                                                f"{_text} by OpenOOD v1.5's list benchmark_imglist/{_folder}/test_{_set}.txt")

ARCHITECTURES = {
    "resnet18_32x32": ("resnet18_32x32", "OpenOOD's ResNet18_32x32 (3x3 stem, no max-pool, parameter names "
                                         "of openood/networks/resnet18_32x32.py)."),
    "tv_resnet50": ("tv_resnet50", "torchvision's ResNet-50 (224x224; torchvision's parameter names, so "
                                   "weights: torchvision:resnet50/... loads); param classes=imagenet200 keeps "
                                   "the 1K head's rows of ImageNet-200's classes."),
    "tv_resnet18": ("tv_resnet18", "torchvision's ResNet-18, as tv_resnet50."),
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
