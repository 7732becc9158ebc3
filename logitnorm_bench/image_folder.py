"""``image_folder``: a user's own folder of images as a dataset, set up from a suite (docs/datasets.md).

Two layouts under ``root``:

* **splits**: ``train/``, ``val/``, ``test/`` (those present are the splits; an ID dataset needs
  ``train`` and ``test``), each holding one folder per class; the classes are the sorted folder names,
  the same in every split, and label *i* is the *i*-th class.  Split folders holding images directly
  (no class folders) make an OOD-only set with those splits (label -1).
* **flat**: no split folder at the top: every image at any depth is one OOD-only split ``test``
  (label -1).  It has no ``val`` split, so it cannot be a selection's validation set; give such a set
  ``val/`` and ``test/`` folders instead.

Images are read lazily, one file per item (PIL, converted to RGB, so grayscale and palette images
work), resized by ``resize`` to ``image_size`` and returned in [0, 1] (the harness normalises inside
the model with ``mean`` / ``std``).  Files are listed once per split, sorted by path; hidden files are
skipped.  Every file's header is read when a split is first listed, so an unreadable image is named
(bad input, one line) before anything trains.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch.utils.data import Dataset

from logitnorm_bench.components import DatasetSource, DataStatus
from logitnorm_bench.errors import ConfigError, DataMissingError

SPLITS = ("train", "val", "test")
RESIZE = ("resize_crop", "resize")
#: ImageNet's statistics (torchvision's and OpenOOD's ImageNet preprocessing): the usual ones for natural
#: photos, and what torchvision's pretrained weights (``weights:``) expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_IMAGE_SIZE = 4096


class FolderImages(Dataset):
    """``(image, label)`` from a list of files; images are opened at each access."""

    def __init__(self, files: list[str], labels: list[int], transform):
        self.files, self.labels, self.transform = files, labels, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        from PIL import Image

        path = self.files[index]
        try:
            with Image.open(path) as img:
                image = img.convert("RGB")
        except Exception as exc:  # noqa: BLE001 - any decoder error: name the file
            raise ValueError(f"image_folder: cannot read image {path}: {type(exc).__name__}: {exc}") from None
        return self.transform(image), self.labels[index]


class ImageFolder(DatasetSource):
    """A folder of images (see the module docstring); every argument is a suite parameter."""

    def __init__(self, root: str, image_size: int = 32, mean: tuple = IMAGENET_MEAN, std: tuple = IMAGENET_STD,
                 resize: str = "resize_crop", extensions: tuple = (".jpg", ".jpeg", ".png")):
        if not isinstance(root, str) or not root.strip():
            raise ValueError(f"root: got {root!r}; expected the path of a folder (a string)")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or not 0 < image_size <= MAX_IMAGE_SIZE:
            raise ValueError(f"image_size: got {image_size!r}; expected an integer from 1 to {MAX_IMAGE_SIZE}")
        self.mean, self.std = _stats("mean", mean), _stats("std", std)
        if min(self.std) <= 0:
            raise ValueError(f"std: got {list(std)!r}; expected three numbers > 0")
        if resize not in RESIZE:
            raise ValueError(f"resize: got {resize!r}; expected one of {', '.join(RESIZE)}")
        if (not isinstance(extensions, (list, tuple)) or not extensions
                or not all(isinstance(e, str) and e.strip(". ") for e in extensions)):
            raise ValueError(f"extensions: got {extensions!r}; expected a non-empty list such as [.jpg, .png]")
        self.root = Path(root).expanduser()  # relative: to the working directory, as weights: paths are
        self.image_size, self.resize = image_size, resize
        self.extensions = tuple(sorted({"." + e.lower().lstrip(".") for e in extensions}))
        self.input_shape = (3, image_size, image_size)
        self._layout: tuple[tuple[str, ...], list[str]] | None = None
        self._files: dict[str, tuple[list[str], list[int]]] = {}

    # What the harness reads before building a split.  A root that is missing or holds a bad layout
    # reads as an OOD set with split test, so `ood-bench data` can build it and report what is wrong.
    @property
    def splits(self) -> tuple[str, ...]:
        return self._safe_layout()[0]

    @property
    def num_classes(self) -> int:
        return len(self._safe_layout()[1])

    @property
    def classes(self) -> list[str]:
        return list(self._safe_layout()[1])

    def _safe_layout(self):
        try:
            return self.layout()
        except ConfigError:
            return ("test",), []

    def layout(self) -> tuple[tuple[str, ...], list[str]]:
        """(splits, classes); classes is empty for an OOD-only set."""
        if self._layout is not None:
            return self._layout
        if not self.root.is_dir():
            what = "is not a folder" if self.root.exists() else "does not exist"
            raise DataMissingError(f"image_folder: root {self.root} {what}; expected a folder of images, or "
                                   "train/ val/ test/ folders of class folders")
        present = tuple(s for s in SPLITS if (self.root / s).is_dir())
        if not present:
            self._layout = ("test",), []
            return self._layout
        per_split = {s: sorted(p.name for p in (self.root / s).iterdir() if p.is_dir() and not p.name.startswith("."))
                     for s in present}
        first = per_split[present[0]]
        for s in present[1:]:
            if per_split[s] != first:
                raise ConfigError(f"image_folder: the class folders of {self.root / s} "
                                  f"({_names(per_split[s])}) differ from those of {self.root / present[0]} "
                                  f"({_names(first)}); expected the same classes in every split")
        self._layout = present, first
        return self._layout

    def build(self, split: str, ctx=None) -> Dataset:
        files, labels = self._list(split)
        return FolderImages(files, labels, self._transform())

    def _list(self, split: str) -> tuple[list[str], list[int]]:
        if split in self._files:
            return self._files[split]
        splits, classes = self.layout()
        if split not in splits:
            raise DataMissingError(f"image_folder: no {split}/ folder under {self.root} (splits there: "
                                   f"{', '.join(splits)}); expected {self.root / split}")
        folder = self.root if splits == ("test",) and not (self.root / "test").is_dir() else self.root / split
        if classes:
            loose = self._images(folder, recursive=False)
            if loose:
                raise ConfigError(f"image_folder: {loose[0]} lies directly in {folder} beside the class "
                                  "folders; expected every image inside a class folder")
            files, labels = [], []
            for label, name in enumerate(classes):
                found = self._images(folder / name)
                files += found
                labels += [label] * len(found)
        else:
            files = self._images(folder)
            labels = [-1] * len(files)
        if not files:
            raise DataMissingError(f"image_folder: no images under {folder} (extensions "
                                   f"{', '.join(self.extensions)}, at any depth)")
        _check_headers(files)
        self._files[split] = files, labels
        return files, labels

    def _images(self, folder: Path, recursive: bool = True) -> list[str]:
        """The image files under ``folder``, as plain strings sorted by their relative path.

        Strings from ``os.walk``, not ``Path`` objects: a ``Path`` with its cached parts costs about
        1 KB, so 200k images listed through ``rglob`` took 0.25 GiB, which grew the evaluation's
        memory with the set (benchmarks/stream_memory.py); a string costs about a tenth of that.
        """
        found: list[str] = []
        top = str(folder)
        for dirpath, dirnames, filenames in os.walk(top, followlinks=True):  # as rglob does
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # hidden folders: not entered
            for name in filenames:
                full = os.path.join(dirpath, name)
                if (not name.startswith(".") and os.path.splitext(name)[1].lower() in self.extensions
                        and os.path.isfile(full)):
                    found.append(full)
            if not recursive:
                break
        cut = len(os.path.join(top, ""))
        found.sort(key=lambda full: full[cut:].replace(os.sep, "/"))  # by the relative path, as documented
        return found

    def _transform(self):
        import torchvision.transforms as T

        size = self.image_size
        if self.resize == "resize":
            steps = [T.Resize((size, size), antialias=True)]
        else:  # shorter side to `size`, then the central square: torchvision's and OpenOOD's test transform
            steps = [T.Resize(size, antialias=True), T.CenterCrop(size)]
        return T.Compose([*steps, T.ToTensor()])

    def status(self, splits, ctx=None) -> DataStatus:
        try:
            files = [f for s in splits for f in self._list(s)[0]]
        except ConfigError as exc:  # absent, empty, classes that differ, an unreadable image: not ready
            return DataStatus("missing", source="local folder", folder=str(self.root), detail=str(exc))
        size = sum(os.path.getsize(f) for f in files)
        return DataStatus("present", size=size, source="local folder", folder=str(self.root))


def _stats(name: str, value) -> tuple[float, float, float]:
    if (not isinstance(value, (list, tuple)) or len(value) != 3
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise ValueError(f"{name}: got {value!r}; expected three numbers, one per RGB channel")
    return tuple(float(v) for v in value)



def _names(classes: list[str], shown: int = 5) -> str:
    text = ", ".join(classes[:shown])
    return text + (f", ... ({len(classes)} in all)" if len(classes) > shown else "") if classes else "none"


def _check_headers(files: list[str]) -> None:
    """Open every file's header (PIL reads a few bytes, not the pixels): the first unreadable one is named."""
    from PIL import Image

    for path in files:
        try:
            with Image.open(path) as img:
                img.size  # noqa: B018 - parsed from the header
        except Exception as exc:  # noqa: BLE001 - every decoder's error
            raise ConfigError(f"image_folder: cannot read image {path} ({type(exc).__name__}: {exc}); expected "
                              "an image file PIL can open (remove it, or fix its extension)") from None
