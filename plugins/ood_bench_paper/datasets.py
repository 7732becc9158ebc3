"""The paper's datasets, plus small bundled ones for CPU runs, registered through ``register_datasets``.

Every image is a float tensor in ``[0, 1]``, shape ``(C, H, W)``, not normalised (the harness puts
the ID normalisation inside the model and augments training batches itself).  OOD-only datasets
use label ``-1``.  Folders are relative to the data root (``DataContext.root``); docs/datasets.md
lists each layout and source.

* ID: ``cifar10``, ``cifar100`` (torchvision).
* OOD test sets of the paper (Appendix D; folder names of the official ``hongxin001/logitnorm_ood``
  code, except ``LSUN_resize`` where it says ``LSUN_R``): ``textures``, ``svhn``, ``lsun_c``,
  ``lsun_r``, ``isun``, ``places365``.
* Synthetic OOD: ``gaussian_noise`` (the paper's validation set for tuning tau), ``uniform_noise``.
* Bundled, no network: ``digits``, ``digits_0to4`` (ID), ``digits_5to9``, ``photo_patches`` (OOD).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from logitnorm_bench import hookimpl

from . import plugin
from logitnorm_bench.components import DataContext, DatasetSource
from logitnorm_bench.download import download_url, extract_archive
from logitnorm_bench.errors import DataMissingError

CIFAR_MEAN = (0.492, 0.482, 0.446)  # official LogitNorm code, for CIFAR-10 and CIFAR-100 alike
CIFAR_STD = (0.247, 0.244, 0.262)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}

# iSUN is not in pytorch-ood; this is ODIN's archive (the link the energy/LogitNorm READMEs give).
ISUN_URL = "https://www.dropbox.com/s/ssz7qxfqae0cca5/iSUN.tar.gz?dl=1"
# md5 of iSUN.tar.gz as pinned by the third-party `detectors` package: edadaltocg/detectors,
# src/detectors/data/isun.py (`file_md5`, commit 07cf1acc), the only public checksum of this archive
# we found (pytorch-ood and OpenOOD have none).  Not verified against a download from here (no
# network).  Verification is enforced whenever it is set: if the archive ever changes, the
# ChecksumError names the actual digest.  Set to None to skip verification.
ISUN_MD5: str | None = "be77b0f2c26fda898afac5f99645ee70"
ISUN_SHA256: str | None = None
# Places365: the official validation images at 256x256 (36,500 images, ~501 MB), a plain HTTP
# download from MIT CSAIL, so no gdown.  URL and md5 are torchvision's own
# (torchvision.datasets.Places365: _BASE_URL + _IMAGES_META[("val", True)]; torchvision is a
# dependency, and tests/test_datasets.py checks that they still agree); edadaltocg/detectors,
# src/detectors/data/places365.py pins the same URL and md5.
PLACES365_URL = "http://data.csail.mit.edu/places/places365/val_256.tar"
PLACES365_MD5: str | None = "e27b17d8d44f4af9a78502beb927f808"
PLACES365_SHA256: str | None = None

# Download sources of pytorch-ood 0.4.0's classes (copied so that error messages need no import of
# pytorch-ood, which takes seconds; a test checks that they still agree).
TEXTURES_URL = "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz"
LSUN_C_URL = "https://www.dropbox.com/s/raw/fhtsw1m3qxlwj6h/LSUN.tar.gz"
LSUN_R_URL = "https://www.dropbox.com/s/raw/moqh2wh8696c3yl/LSUN_resize.tar.gz"
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/test_32x32.mat"


def _ood_label(_target) -> int:
    """Target transform of OOD sets (a module function, so DataLoader workers can pickle it)."""
    return -1


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _check_split(source: DatasetSource, name: str, split: str) -> None:
    if split not in source.splits:
        raise ValueError(f"{name}: no split {split!r}; it has {', '.join(source.splits)}")


def _shape(shape, default=(3, 32, 32)) -> tuple[int, int, int]:
    shape = default if shape is None else tuple(int(s) for s in shape)  # suites give lists
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be (C, H, W) with positive sizes, got {shape}")
    return shape


def _rng_seed(*key: int) -> int:
    """A 64-bit seed that mixes ``key`` well: (seed, stream, index) never collide as sums would."""
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(1, dtype=np.uint64)[0])


def _data_status(state: str, size: int | None, source: str, folder: Path | None = None, detail: str = ""):
    """A :class:`~logitnorm_bench.components.DataStatus` (what ``ood-bench data`` shows)."""
    from logitnorm_bench.components import DataStatus

    return DataStatus(state, size, source, str(folder) if folder is not None else None, detail)


def _bytes_under(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------
# CIFAR and SVHN (torchvision)
# --------------------------------------------------------------------------------------------


class _Cifar(DatasetSource):
    """torchvision's CIFAR loader, reading ``<root>/<base_folder>`` (md5 of every file checked)."""

    input_shape = (3, 32, 32)
    mean, std = CIFAR_MEAN, CIFAR_STD
    splits = ("train", "test")
    name = ""

    def _tv_class(self):
        raise NotImplementedError

    def build(self, split: str, ctx: DataContext) -> Dataset:
        _check_split(self, self.name, split)
        cls = self._tv_class()
        folder = Path(ctx.root) / cls.base_folder
        try:
            return cls(root=str(ctx.root), train=(split == "train"), transform=T.ToTensor(), download=ctx.download)
        except Exception as exc:  # torchvision: RuntimeError (missing/corrupt); urllib: URLError
            why = _one_line(exc) + ("" if ctx.download else "; downloading is off")
            raise DataMissingError(
                f"{self.name}: could not load {folder} ({why}); download {cls.url} and unpack it in "
                f"{ctx.root}, giving {folder}/{{{','.join(f for f, _ in cls.train_list + cls.test_list)},"
                f"{cls.meta['filename']}}}") from None

    DOWNLOAD_BYTES: int | None = None

    def status(self, splits, ctx: DataContext):
        """Present, partial or checksum bad from torchvision's md5 of every file (``ood-bench data``)."""
        from torchvision.datasets.utils import check_integrity

        cls = self._tv_class()
        folder = Path(ctx.root) / cls.base_folder
        files = [*cls.train_list, *cls.test_list, (cls.meta["filename"], cls.meta["md5"])]
        there = [(f, md5) for f, md5 in files if (folder / f).is_file()]
        if not there:
            return _data_status("missing", self.DOWNLOAD_BYTES, cls.url, folder, f"nothing under {folder}")
        bad = [f for f, md5 in there if not check_integrity(str(folder / f), md5)]
        if bad:
            return _data_status("checksum bad", _bytes_under(folder), cls.url, folder, f"md5 mismatch: {', '.join(bad)}")
        if len(there) < len(files):
            return _data_status("partial", _bytes_under(folder), cls.url, folder,
                                f"{len(files) - len(there)} of {len(files)} files missing under {folder}")
        return _data_status("present", _bytes_under(folder), cls.url, folder)


class Cifar10(_Cifar):
    name, num_classes = "cifar10", 10
    DOWNLOAD_BYTES = 170_498_071  # cifar-10-python.tar.gz

    def _tv_class(self):
        from torchvision.datasets import CIFAR10
        return CIFAR10


class Cifar100(_Cifar):
    name, num_classes = "cifar100", 100
    DOWNLOAD_BYTES = 169_001_437  # cifar-100-python.tar.gz

    def _tv_class(self):
        from torchvision.datasets import CIFAR100
        return CIFAR100


class Svhn(DatasetSource):
    """SVHN test split (26,032 images) as OOD data: ``<root>/svhn/test_32x32.mat``."""

    folder = "svhn"

    def build(self, split: str, ctx: DataContext) -> Dataset:
        _check_split(self, "svhn", split)
        from torchvision.datasets import SVHN

        folder = Path(ctx.root) / self.folder
        try:
            return SVHN(root=str(folder), split="test", transform=T.ToTensor(), target_transform=_ood_label,
                        download=ctx.download)
        except Exception as exc:
            why = _one_line(exc) + ("" if ctx.download else "; downloading is off")
            raise DataMissingError(f"svhn: could not load {folder / 'test_32x32.mat'} ({why}); "
                                   f"download {SVHN_URL} into {folder}") from None

    def status(self, splits, ctx: DataContext):
        """``test_32x32.mat`` with torchvision's md5 (``ood-bench data``)."""
        from torchvision.datasets import SVHN
        from torchvision.datasets.utils import check_integrity

        path = Path(ctx.root) / self.folder / "test_32x32.mat"
        if not path.is_file():
            return _data_status("missing", 64_275_384, SVHN_URL, path.parent, f"no {path}")
        if not check_integrity(str(path), SVHN.split_list["test"][2]):
            return _data_status("checksum bad", path.stat().st_size, SVHN_URL, path.parent, f"md5 mismatch: {path}")
        return _data_status("present", path.stat().st_size, SVHN_URL, path.parent)


# --------------------------------------------------------------------------------------------
# Image folders (Textures, LSUN-C, LSUN-R, iSUN, Places365)
# --------------------------------------------------------------------------------------------


def image_files(folder: Path) -> list[Path]:
    """Every .jpg/.jpeg/.png under ``folder`` at any depth, sorted; hidden files (``._x.jpg``) skipped."""
    if not folder.is_dir():
        return []
    files = (p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    return sorted((p for p in files if p.is_file()), key=lambda p: p.relative_to(folder).as_posix())


class ImageFiles(Dataset):
    """Images from a list of files, as RGB tensors, all labelled -1."""

    def __init__(self, files: list[Path], transform: Callable):
        self.files, self.transform = list(files), transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        with Image.open(self.files[index]) as img:
            return self.transform(img.convert("RGB")), -1


class _ImageFolderSource(DatasetSource):
    """An OOD image folder under the data root, downloaded when missing and allowed."""

    name = folder = url = layout = ""
    resize = False  # Resize(32) + CenterCrop(32), as the official code does for Textures and Places365

    def _download(self, folder: Path, ctx: DataContext) -> None:
        raise NotImplementedError

    def transform(self) -> Callable:
        if self.resize:
            return T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor()])
        # The official code feeds these as they are (ODIN's 32x32 archives); the crop is a no-op
        # then and only guarantees the declared shape, so that batches stack.
        return T.Compose([T.CenterCrop(32), T.ToTensor()])

    def build(self, split: str, ctx: DataContext) -> Dataset:
        _check_split(self, self.name, split)
        folder = Path(ctx.root) / self.folder
        files = image_files(folder)
        why = "downloading is off"
        if not files and ctx.download:
            try:
                self._download(folder, ctx)
                why = "the download held no images"
            except Exception as exc:  # no network, bad checksum, ...
                why = f"download failed: {_one_line(exc)}"
            files = image_files(folder)
        if not files:
            raise DataMissingError(f"{self.name}: no images under {folder} ({why}); get {self.url} and unpack "
                                   f"it there; expected layout {self.layout} (** = any depth; .jpg/.jpeg/.png)")
        return ImageFiles(files, self.transform())

    expected_images: int | None = None  #: the archive's image count, when known: fewer is "partial"

    def status(self, splits, ctx: DataContext):
        """Present, partial (fewer images than the archive holds) or missing (``ood-bench data``)."""
        folder = Path(ctx.root) / self.folder
        n = len(image_files(folder))
        if not n:
            return _data_status("missing", None, self.url, folder, f"no images under {folder}")
        if self.expected_images and n < self.expected_images:
            return _data_status("partial", _bytes_under(folder), self.url, folder,
                                f"{n} of {self.expected_images} images under {folder}")
        return _data_status("present", _bytes_under(folder), self.url, folder)


class Textures(_ImageFolderSource):
    """DTD, 5,640 texture images; pytorch-ood's downloader unpacks ``dtd/images/<category>/*.jpg``."""

    name, folder, url, resize = "textures", "dtd/images", TEXTURES_URL, True
    expected_images = 5_640
    layout = "<root>/dtd/images/<category>/*.jpg"

    def _download(self, folder: Path, ctx: DataContext) -> None:
        from pytorch_ood.dataset.img import Textures as PoodTextures
        PoodTextures(root=str(ctx.root), download=True)  # the archive's top folder is dtd/


class LsunCrop(_ImageFolderSource):
    name, folder, url = "lsun_c", "LSUN_C", LSUN_C_URL
    expected_images = 10_000
    layout = "<root>/LSUN_C/**/*.jpg"

    def _download(self, folder: Path, ctx: DataContext) -> None:
        from pytorch_ood.dataset.img import LSUNCrop
        LSUNCrop(root=str(folder), download=True)


class LsunResize(_ImageFolderSource):
    name, folder, url = "lsun_r", "LSUN_resize", LSUN_R_URL
    expected_images = 10_000
    layout = "<root>/LSUN_resize/**/*.jpg"

    def _download(self, folder: Path, ctx: DataContext) -> None:
        from pytorch_ood.dataset.img import LSUNResize
        LSUNResize(root=str(folder), download=True)


class Isun(_ImageFolderSource):
    name, folder, url = "isun", "iSUN", ISUN_URL
    expected_images = 8_925
    layout = "<root>/iSUN/**/*.jpeg"

    def _download(self, folder: Path, ctx: DataContext) -> None:
        # Module globals read at call time, so a test can point them at a local server.
        _fetch_and_unpack(ISUN_URL, folder / "iSUN.tar.gz", md5=ISUN_MD5, sha256=ISUN_SHA256)


class Places365(_ImageFolderSource):
    """The official code reads ``places365/test_subset``; the download puts the official validation
    images there (``val_256/*.jpg``).  Any Places365 images under that folder are used as they are."""

    name, folder, url, resize = "places365", "places365/test_subset", PLACES365_URL, True
    layout = "<root>/places365/test_subset/**/*.jpg"

    def _download(self, folder: Path, ctx: DataContext) -> None:
        _fetch_and_unpack(PLACES365_URL, folder / "val_256.tar", md5=PLACES365_MD5, sha256=PLACES365_SHA256)


def _fetch_and_unpack(url: str, archive: Path, md5: str | None, sha256: str | None) -> None:
    """Download ``url`` to ``archive`` (checksums verified), unpack it beside itself, delete it."""
    download_url(url, archive, md5=md5, sha256=sha256)
    try:
        extract_archive(archive, archive.parent)
    finally:
        archive.unlink()


# --------------------------------------------------------------------------------------------
# Synthetic noise
# --------------------------------------------------------------------------------------------

# pytorch-ood's GaussianNoise/UniformNoise draw a fresh image at every access, so two passes over
# the "same" set differ.  Here image i is a pure function of (seed, split, i).
_STREAMS = {"test": 0, "val": 1}  # val differs from test, so tuning never sees test images


class NoiseImages(Dataset):
    def __init__(self, n: int, shape: tuple[int, int, int], draw: Callable, seed: int, stream: int):
        self.n, self.shape, self.draw, self.seed, self.stream = n, shape, draw, seed, stream

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        if not 0 <= index < self.n:
            raise IndexError(index)
        g = torch.Generator().manual_seed(_rng_seed(self.seed, self.stream, index))
        return self.draw(self.shape, g), -1


class _NoiseSource(DatasetSource):
    splits = ("test", "val")
    name = ""

    def __init__(self, n: int = 2000, shape=None, seed: int | None = None):
        if int(n) < 1:
            raise ValueError(f"{self.name}: n must be >= 1, got {n}")
        self.n, self.input_shape, self.seed = int(n), _shape(shape), seed
        self.mean, self.std = (0.5,) * self.input_shape[0], (0.5,) * self.input_shape[0]  # unused: OOD only

    def draw(self, shape, g: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def status(self, splits, ctx: DataContext):
        return _data_status("present", 0, "generated (no download)")

    def build(self, split: str, ctx: DataContext) -> Dataset:
        _check_split(self, self.name, split)
        seed = ctx.seed if self.seed is None else self.seed
        return NoiseImages(self.n, self.input_shape, self.draw, int(seed), _STREAMS[split])


class GaussianNoise(_NoiseSource):
    """N(loc, scale^2) per pixel, clipped to [0, 1].

    The paper tunes tau on "Gaussian noises" without giving parameters.  Defaults 0.5/0.25 keep about
    95% of pixels unclipped; Outlier Exposure's N(0, 0.5^2) in normalised space is roughly
    scale=0.125 in pixel space for CIFAR's std.
    """

    name = "gaussian_noise"

    def __init__(self, n: int = 2000, shape=None, seed: int | None = None, loc: float = 0.5, scale: float = 0.25):
        super().__init__(n, shape, seed)
        if not scale > 0:
            raise ValueError(f"gaussian_noise: scale must be > 0, got {scale}")
        self.loc, self.scale = float(loc), float(scale)

    def draw(self, shape, g):
        return (torch.randn(shape, generator=g) * self.scale + self.loc).clamp_(0.0, 1.0)


class UniformNoise(_NoiseSource):
    """U[0, 1] per pixel."""

    name = "uniform_noise"

    def draw(self, shape, g):
        return torch.rand(shape, generator=g)


# --------------------------------------------------------------------------------------------
# Bundled real data: scikit-learn's digits and sample photos (no network, seconds on a CPU)
# --------------------------------------------------------------------------------------------


class Tensors(Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.images[index], int(self.labels[index])


@lru_cache(maxsize=1)
def digits_splits() -> dict[str, np.ndarray]:
    """Fixed indices into ``load_digits()``: stratified 70/30 train/test, then 10% of train as val.

    Seed 0 always (not ``ctx.seed``): every run must see the same split.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    y = load_digits().target
    train, test = train_test_split(np.arange(len(y)), test_size=0.3, stratify=y, random_state=0)
    train, val = train_test_split(train, test_size=0.1, stratify=y[train], random_state=0)
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)  # pixels are 0..16
    return images, torch.from_numpy(d.target.astype(np.int64))


def _digits_subset(split: str, classes: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = _digits_arrays()
    idx = torch.from_numpy(digits_splits()[split])
    keep = idx[torch.isin(labels[idx], torch.tensor(classes))]
    return images[keep], labels[keep]


@lru_cache(maxsize=None)
def _digits_stats(classes: tuple[int, ...]) -> tuple[tuple[float], tuple[float]]:
    images, _ = _digits_subset("train", classes)
    return (float(images.mean()),), (float(images.std()),)


class Digits(DatasetSource):
    """scikit-learn's 8x8 digits (1,797 images), 1 channel; ID over ``classes``, labels 0..k-1."""

    name = "digits"
    input_shape = (1, 8, 8)
    splits = ("train", "val", "test")
    classes: tuple[int, ...] = tuple(range(10))

    def __init__(self):
        self.num_classes = len(self.classes)
        self.mean, self.std = _digits_stats(self.classes)

    def build(self, split: str, ctx: DataContext) -> Dataset:
        _check_split(self, self.name, split)
        images, labels = _digits_subset(split, self.classes)
        relabel = torch.full((10,), -1, dtype=torch.int64)
        relabel[list(self.classes)] = torch.arange(len(self.classes))
        return Tensors(images, relabel[labels])

    def status(self, splits, ctx: DataContext):
        return _data_status("present", 0, "scikit-learn (bundled, no download)")


class DigitsLow(Digits):
    """Digits 0-4 only (ID, 5 classes)."""

    name = "digits_0to4"
    classes = (0, 1, 2, 3, 4)


class DigitsHigh(DatasetSource):
    """Digits 5-9 of the fixed test split, as OOD data for ``digits_0to4`` (label -1)."""

    input_shape = (1, 8, 8)

    def __init__(self):
        self.mean, self.std = _digits_stats(DigitsLow.classes)

    def build(self, split: str, ctx: DataContext) -> Dataset:
        _check_split(self, "digits_5to9", split)
        images, labels = _digits_subset("test", (5, 6, 7, 8, 9))
        return Tensors(images, torch.full_like(labels, -1))

    def status(self, splits, ctx: DataContext):
        return _data_status("present", 0, "scikit-learn (bundled, no download)")


@lru_cache(maxsize=1)
def _sample_photos() -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # china.jpg, flower.jpg: (427, 640, 3) uint8
    return tuple(torch.from_numpy(np.array(p)).permute(2, 0, 1).float() / 255.0 for p in photos)


class PhotoPatches(DatasetSource):
    """Random crops of scikit-learn's two sample photos (china.jpg, flower.jpg), resized to ``shape``.

    A natural-image OOD set for the digits.  Crop i (photo, size, position) is a pure function of
    (seed, split, i); crop sides range from the target height to half the photo's short side, so
    patches go from fine texture to whole objects.  ``shape`` with 1 channel gives grayscale
    (ITU-R 601 luma, as PIL's "L"), 3 channels colour.
    """

    splits = ("test", "val")

    def __init__(self, n: int = 500, shape=None, seed: int | None = None):
        self.input_shape = _shape(shape, default=(1, 8, 8))
        if self.input_shape[0] not in (1, 3):
            raise ValueError(f"photo_patches: shape needs 1 or 3 channels, got {self.input_shape}")
        if int(n) < 1:
            raise ValueError(f"photo_patches: n must be >= 1, got {n}")
        self.n, self.seed = int(n), seed
        self.mean, self.std = (0.5,) * self.input_shape[0], (0.5,) * self.input_shape[0]  # unused: OOD only

    def build(self, split: str, ctx: DataContext) -> Dataset:
        _check_split(self, "photo_patches", split)
        seed = ctx.seed if self.seed is None else self.seed
        return NoiseImages(self.n, self.input_shape, self._crop, int(seed), _STREAMS[split])

    def status(self, splits, ctx: DataContext):
        return _data_status("present", 0, "scikit-learn sample photos (bundled, no download)")

    @staticmethod
    def _crop(shape, g: torch.Generator) -> torch.Tensor:
        c, h, w = shape
        photo = _sample_photos()[int(torch.randint(2, (1,), generator=g))]
        ph, pw = photo.shape[1:]
        lo = min(h, ph // 2)
        side = int(torch.randint(lo, max(lo, min(ph, pw) // 2) + 1, (1,), generator=g))
        ch, cw = side, min(pw, max(1, round(side * w / h)))
        top = int(torch.randint(ph - ch + 1, (1,), generator=g))
        left = int(torch.randint(pw - cw + 1, (1,), generator=g))
        patch = photo[:, top:top + ch, left:left + cw]
        if c == 1:
            patch = (patch * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True)
        out = F.interpolate(patch[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        return out[0].clamp_(0.0, 1.0)


@hookimpl
def register_datasets(register):
    """This module as a plugin itself (``Plugins.add(ood_bench_paper.datasets, ...)``): the components of the
    entry point ``paper_datasets`` (the light :data:`ood_bench_paper.plugin.datasets`, which registers import
    strings), registered here as the callables, since this module is imported anyway."""
    plugin.register_defined(register, plugin.DATASETS, globals())
