"""OpenOOD v1.5's CIFAR benchmark data (Zhang et al. 2023; Jingkang50/OpenOOD, configs/datasets/cifar*/).

* ID: ``openood_cifar10``, ``openood_cifar100``: the paper plugin's torchvision CIFAR loaders with
  OpenOOD's normalisation (openood/preprocessors/transform.py).
* Near-OOD: ``cifar100_ood`` / ``cifar10_ood`` (the other CIFAR's test split, label -1) and
  ``tin_openood_c10`` / ``tin_openood_c100``: TinyImageNet images restricted by OpenOOD's published
  lists ``benchmark_imglist/cifar10/test_tin.txt`` and ``.../cifar100/test_tin.txt``, which leave out
  the TinyImageNet images whose content overlaps the CIFAR classes.
* Far-OOD: ``mnist_ood`` (torchvision MNIST test split, md5-checked, as RGB 32x32); SVHN, Textures
  and Places365 are the paper plugin's ``svhn``, ``textures``, ``places365`` (used by name).

OpenOOD's test transform is Resize(32) + CenterCrop(32) for every set; the loaders here do the same.
The TinyImageNet lists and images live in OpenOOD's own layout under ``<root>/openood/``
(``benchmark_imglist/<benchmark>/test_tin.txt``, paths in it relative to ``images_classic/``).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from logitnorm_bench.components import DataContext, DatasetSource
from logitnorm_bench.download import download_url, extract_archive
from logitnorm_bench.errors import DataMissingError
from ood_bench_paper.datasets import Cifar10, Cifar100, _check_split, _ood_label, _one_line

OPENOOD_CIFAR10_NORM = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
OPENOOD_CIFAR100_NORM = ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))

# OpenOOD's own Google Drive files (scripts/download/download.py, download_id_dict), as zips.
# Their checksums are not published and could not be computed here (no network): None skips the
# check.  Module globals read at call time, so a test can point them at a local server.
IMGLIST_URL = "https://drive.google.com/uc?export=download&id=1lI1j0_fDDvjIt9JlWAw09X8ks-yrR_H1"
IMGLIST_SHA256: str | None = None
TIN_URL = "https://drive.google.com/uc?export=download&id=1PZ-ixyx52U989IKsMA2OT-24fToTrelC"
TIN_SHA256: str | None = None
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz"

OPENOOD_FOLDER = "openood"


def openood_transform() -> T.Compose:
    """OpenOOD's test preprocessing without the normalisation (the harness's model normalises)."""
    return T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor()])


class OpenoodCifar10(Cifar10):
    name = "openood_cifar10"
    mean, std = OPENOOD_CIFAR10_NORM


class OpenoodCifar100(Cifar100):
    name = "openood_cifar100"
    mean, std = OPENOOD_CIFAR100_NORM


class Relabelled(Dataset):
    """``base``'s images with every label -1 (an ID dataset's split used as OOD data)."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        return self.base[index][0], -1


class _CifarOod(DatasetSource):
    name = ""
    source = Cifar10

    def build(self, split: str, ctx: DataContext) -> Dataset:
        _check_split(self, self.name, split)
        return Relabelled(self.source().build("test", ctx))


class Cifar10Ood(_CifarOod):
    name, source = "cifar10_ood", Cifar10


class Cifar100Ood(_CifarOod):
    name, source = "cifar100_ood", Cifar100


class MnistOod(DatasetSource):
    """MNIST's 10,000 test digits, grey copied to 3 channels and resized to 32x32 (OpenOOD's
    far-OOD ``mnist``; OpenOOD's own list draws from all 70,000 MNIST images)."""

    name, folder = "mnist_ood", "mnist"

    def build(self, split: str, ctx: DataContext) -> Dataset:
        _check_split(self, self.name, split)
        from torchvision.datasets import MNIST

        folder = Path(ctx.root) / self.folder
        transform = T.Compose([T.Grayscale(3), T.Resize(32), T.CenterCrop(32), T.ToTensor()])
        try:  # torchvision checks the md5 of every file it downloads
            return MNIST(root=str(folder), train=False, transform=transform, target_transform=_ood_label,
                         download=ctx.download)
        except Exception as exc:
            why = _one_line(exc) + ("" if ctx.download else "; downloading is off")
            raise DataMissingError(f"{self.name}: could not load {folder / 'MNIST' / 'raw'} ({why}); download "
                                   f"{MNIST_URL} (and its t10k-labels file) into it") from None


class ListedImages(Dataset):
    """The images an OpenOOD image list names (first field of each line, relative to ``base``), label -1."""

    def __init__(self, files: list[Path]):
        self.files, self.transform = files, openood_transform()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        with Image.open(self.files[index]) as img:
            return self.transform(img.convert("RGB")), -1


def read_imglist(path: Path) -> list[str]:
    """The image paths of an OpenOOD list file (``<path> <label>`` per line; blank lines skipped)."""
    return [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class _OpenoodList(DatasetSource):
    """Images of OpenOOD's ``images_classic/`` selected by one of its ``benchmark_imglist`` files."""

    name = benchmark = list_name = archive = ""

    def _paths(self, root: Path) -> tuple[Path, Path]:
        base = root / OPENOOD_FOLDER
        return base / "benchmark_imglist" / self.benchmark / self.list_name, base / "images_classic"

    def _missing(self, root: Path) -> list[str]:
        imglist, images = self._paths(root)
        if not imglist.is_file():
            return [str(imglist)]
        return [str(images / p) for p in read_imglist(imglist) if not (images / p).is_file()]

    def _download(self, root: Path) -> None:
        import ood_bench_openood.datasets as here  # the module globals, as a test may set them

        imglist, images = self._paths(root)
        for url, sha256, target, needed in ((here.IMGLIST_URL, here.IMGLIST_SHA256, imglist.parent.parent.parent,
                                             not imglist.is_file()),
                                            (here.TIN_URL, here.TIN_SHA256, images, True)):
            if needed:
                archive = download_url(url, target / "download.zip", sha256=sha256)
                try:
                    extract_archive(archive, target)
                finally:
                    archive.unlink()

    def build(self, split: str, ctx: DataContext) -> Dataset:
        _check_split(self, self.name, split)
        root = Path(ctx.root)
        missing, why = self._missing(root), "downloading is off"
        if missing and ctx.download:
            try:
                self._download(root)
                why = "the download did not hold them"
            except Exception as exc:
                why = f"download failed: {_one_line(exc)}"
            missing = self._missing(root)
        imglist, images = self._paths(root)
        if missing:
            raise DataMissingError(
                f"{self.name}: {len(missing)} file(s) missing, first {missing[0]} ({why}); get OpenOOD's "
                f"benchmark_imglist and images_classic/{self.archive} (its scripts/download/download.py, or "
                f"{IMGLIST_URL} and {TIN_URL}) and unpack them under {root / OPENOOD_FOLDER}")
        return ListedImages([images / p for p in read_imglist(imglist)])


class TinForCifar10(_OpenoodList):
    name, benchmark, list_name, archive = "tin_openood_c10", "cifar10", "test_tin.txt", "tin"


class TinForCifar100(_OpenoodList):
    name, benchmark, list_name, archive = "tin_openood_c100", "cifar100", "test_tin.txt", "tin"
