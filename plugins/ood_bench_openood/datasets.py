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

import re
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from logitnorm_bench.components import DataContext, DatasetSource
from logitnorm_bench.download import download_url, extract_archive
from logitnorm_bench.errors import ConfigError, DataMissingError
from ood_bench_openood.imagenet_classes import WNIDS_1K, WNIDS_200
from ood_bench_openood.plugin import IMAGENET_BENCHMARKS, imagenet_ood_class
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
    """The images an OpenOOD image list names, read one at a time when indexed (never all at once):
    ``labels`` (default: -1 for every image, OOD data) and ``transform`` (default: the CIFAR
    benchmarks' Resize 32 + CenterCrop 32)."""

    def __init__(self, files: list[Path], labels: list[int] | None = None, transform=None):
        self.files, self.labels = files, labels
        self.transform = transform if transform is not None else openood_transform()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        with Image.open(self.files[index]) as img:
            return self.transform(img.convert("RGB")), -1 if self.labels is None else self.labels[index]


def read_imglist(path: Path) -> list[str]:
    """The image paths of an OpenOOD list file (``<path> <label>`` per line; blank lines skipped)."""
    return [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_labelled_imglist(path: Path) -> list[tuple[str, int]]:
    """``(path, label)`` of every line of an OpenOOD list file; a line without an integer label is
    bad input naming the file and the line."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            out.append((fields[0], int(fields[1])))
        except (IndexError, ValueError):
            raise ConfigError(f"{path}: line {n} is {line.strip()!r}; expected '<image path> <integer label>'"
                              ) from None
    return out


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


# ------------------------------------------------------------------------------------------
# ImageNet-200 and ImageNet-1K (OpenOOD v1.5, openood/evaluation_api/datasets.py DATA_INFO)
# ------------------------------------------------------------------------------------------

IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # openood/preprocessors/transform.py
IMAGENET_SHAPE = (3, 224, 224)
LARGESCALE, CLASSIC = "images_largescale", "images_classic"
OPENOOD_DOWNLOAD = "https://github.com/Jingkang50/OpenOOD/blob/main/scripts/download/download.py"
ILSVRC_URL = "https://image-net.org/challenges/LSVRC/2012/"
# OpenOOD's Google Drive file ids (scripts/download/download.py, download_id_dict) of the zips each
# set's images come from; each unpacks into <root>/openood/<images folder>/<name>/.  OpenOOD publishes
# no checksums for them, so none are checked.
GDRIVE_IDS = {
    "benchmark_imglist": "1lI1j0_fDDvjIt9JlWAw09X8ks-yrR_H1",
    "imagenet_1k": "1i1ipLDFARR-JZ9argXd2-0a6DXwVhXEj",
    "ssb_hard": "1PzkA-WGG8Z18h0ooL_pDdz9cO-DCIouE",
    "ninco": "1Z82cmvIB0eghTehxOGP5VTdLt7OD3nk6",
    "inaturalist": "1zfLfMvoUD0CUlKNnkk7LgxZZBnTBipdj",
    "texture": "1OSz1m3hHfVWbRdmMwKbUzoU8Hg9UKcam",
    "openimage_o": "1VUFXnB_z70uHfdgJG2E_pjYOcEgqM7tE",
}
_WNID = re.compile(r"(?:^|/)(n\d{8})(?=/|_)")


def imagenet_transform() -> T.Compose:
    """OpenOOD's ImageNet test preprocessing (TestStandardPreProcessor: RGB, Resize 256 bilinear,
    CenterCrop 224) without the normalisation, which the harness's model applies."""
    return T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(224), T.ToTensor()])


def check_labels(imglist: Path, entries: list[tuple[str, int]], wnids: tuple[str, ...]) -> None:
    """Every listed image whose path names a class (``.../n01443537/...`` or ``n01443537_123.JPEG``)
    must carry that class's label: the labels are what the model's outputs are scored against (and,
    for ImageNet-200, what picks the 1K classifier's rows), so a list labelled another way is refused."""
    for n, (path, label) in enumerate(entries, 1):
        found = _WNID.search(path)
        if not 0 <= label < len(wnids) or (found and found.group(1) != wnids[label]):
            expected = f"label {wnids.index(found.group(1))}" if found and found.group(1) in wnids else \
                f"a label in 0..{len(wnids) - 1} for one of its {len(wnids)} classes"
            raise ConfigError(f"{imglist}: entry {n} ({path}) has label {label}; expected {expected} (labels are "
                              f"the classes' WordNet ids in sorted order, ood_bench_openood.imagenet_classes)")


class _ImagenetList(DatasetSource):
    """One of OpenOOD v1.5's ImageNet-scale image lists under ``<root>/openood/``.

    ``lists``: split -> (list file under ``benchmark_imglist/<benchmark>/``, images folder the list's
    paths are relative to).  ``archives``: OpenOOD's zips holding the images (:data:`GDRIVE_IDS`).
    ``wnids``: for an ID set, its classes in label order (every label is checked); None for OOD data.
    The images are read when indexed, never all at once.
    """

    name = benchmark = ""
    input_shape = IMAGENET_SHAPE
    mean, std = IMAGENET_NORM
    lists: dict[str, tuple[str, str]] = {}
    archives: tuple[str, ...] = ()
    wnids: tuple[str, ...] | None = None
    download_name = ""  # OpenOOD's download.py benchmark name

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.lists)

    def _how_to_get(self, root: Path, split: str) -> str:
        base = root / OPENOOD_FOLDER
        zips = ", ".join(f"{a} (Google Drive id {GDRIVE_IDS[a]}) into "
                         f"{base / (CLASSIC if a == 'texture' else LARGESCALE) / a}" for a in self.archives)
        train = (f"; the ILSVRC-2012 training images are not in OpenOOD's zips: get them from {ILSVRC_URL} "
                 f"into {base / LARGESCALE / 'imagenet_1k' / 'train'}/<wnid>/") if split == "train" and self.wnids else ""
        return (f"get OpenOOD's benchmark_imglist (Google Drive id {GDRIVE_IDS['benchmark_imglist']}) into {base} and "
                f"unpack {zips}, e.g. with OpenOOD's {OPENOOD_DOWNLOAD} --contents datasets --datasets "
                f"{self.download_name} --dataset_mode benchmark --save_dir {base}{train}; OpenOOD publishes no "
                f"checksums for these zips, so none are checked")

    def build(self, split: str, ctx: DataContext) -> Dataset:
        _check_split(self, self.name, split)
        root = Path(ctx.root)
        list_name, images = self.lists[split]
        imglist = root / OPENOOD_FOLDER / "benchmark_imglist" / self.benchmark / list_name
        base = root / OPENOOD_FOLDER / images
        # Not downloaded even when downloading is on: Google Drive serves these multi-GB zips only
        # through a confirmation page, and ILSVRC-2012 needs an image-net.org account.
        if not imglist.is_file():
            raise DataMissingError(f"{self.name}: no image list {imglist}; {self._how_to_get(root, split)}")
        entries = read_labelled_imglist(imglist)
        missing = [p for p, _ in entries if not (base / p).is_file()]
        if missing:
            raise DataMissingError(f"{self.name}: {len(missing)} of the {len(entries)} images of {imglist.name} "
                                   f"missing, first {base / missing[0]}; {self._how_to_get(root, split)}")
        if self.wnids is None:
            return ListedImages([base / p for p, _ in entries], transform=imagenet_transform())
        check_labels(imglist, entries, self.wnids)
        return ListedImages([base / p for p, _ in entries], [label for _, label in entries], imagenet_transform())


class OpenoodImagenet200(_ImagenetList):
    """ImageNet-200 (OpenOOD v1.5): ImageNet-1K's images of ImageNet-R's 200 classes, labels 0..199."""

    name, benchmark, num_classes, download_name = "openood_imagenet200", "imagenet200", 200, "imagenet-200"
    lists = {split: (f"{split}_imagenet200.txt", LARGESCALE) for split in ("train", "val", "test")}
    archives = ("imagenet_1k",)
    wnids = WNIDS_200


class OpenoodImagenet1k(_ImagenetList):
    """ImageNet-1K (OpenOOD v1.5's lists of ILSVRC-2012 images), labels 0..999."""

    name, benchmark, num_classes, download_name = "openood_imagenet1k", "imagenet", 1000, "imagenet-1k"
    lists = {split: (f"{split}_imagenet.txt", LARGESCALE) for split in ("train", "val", "test")}
    archives = ("imagenet_1k",)
    wnids = WNIDS_1K


def _ood_set(cls_name: str, name: str, bench: str, list_stem: str, archive: str, val: bool) -> type:
    """An OOD set of one benchmark: ``test_<list_stem>.txt`` (and ``val_<list_stem>.txt``) of
    ``benchmark_imglist/<bench>/``."""
    images = CLASSIC if archive == "texture" else LARGESCALE
    lists = {"test": (f"test_{list_stem}.txt", images)}
    if val:
        lists["val"] = (f"val_{list_stem}.txt", images)
    return type(cls_name, (_ImagenetList,), {
        "name": name, "benchmark": bench, "lists": lists, "archives": (archive,),
        "download_name": "imagenet-200" if bench == "imagenet200" else "imagenet-1k",
        "__doc__": f"OpenOOD v1.5's {list_stem} list for {bench} (OOD, label -1).", "__module__": __name__})


# OOD set -> the OpenOOD zip holding its images.  OpenImage-O also has OpenOOD's validation list
# (val_openimage_o.txt, the OOD images OpenOOD tunes hyperparameters on) as its ``val`` split.
IMAGENET_OOD_ARCHIVE = {"ssb_hard": "ssb_hard", "ninco": "ninco", "inaturalist": "inaturalist", "textures": "texture",
                        "openimage_o": "openimage_o"}
for _short, _bench in IMAGENET_BENCHMARKS.items():
    for _set, _archive in IMAGENET_OOD_ARCHIVE.items():
        _cls = imagenet_ood_class(_set, _short)
        globals()[_cls] = _ood_set(_cls, f"{_set}_openood_{_short}", _bench, _set, _archive, val=_set == "openimage_o")
