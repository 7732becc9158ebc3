"""Helpers of the streaming benchmarks (``stream_memory.py``, ``stream_speed.py``; not a script).

Synthetic on-disk image folders, made once into a cache folder, and a dataset plugin that reads
them.  Until the built-in ``image_folder`` dataset lands (suite keys ``id_dataset_params`` /
``ood_dataset_params``), the folders are read by :class:`FolderSource` over torchvision's
``ImageFolder``; switching over means replacing :func:`register_folders` and the suite's dataset names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from logitnorm_bench.components import DatasetSource

CLASSES = 10
SHAPE = (3, 32, 32)


def png_folder(cache: Path, name: str, n: int, seed: int) -> Path:
    """``cache/name``: ``n`` random 32x32 RGB PNGs in ``CLASSES`` class folders (image i in class i % 10),
    written once (a ``.complete`` marker holds the count) and reused by later runs."""
    from PIL import Image

    root = Path(cache) / name
    marker = root / ".complete"
    if marker.is_file() and marker.read_text().strip() == str(n):
        return root
    for k in range(CLASSES):
        (root / f"class{k}").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    chunk = 1000
    for start in range(0, n, chunk):
        pixels = rng.integers(0, 256, size=(min(chunk, n - start), 32, 32, 3), dtype=np.uint8)
        for j, img in enumerate(pixels):
            i = start + j
            Image.fromarray(img).save(root / f"class{i % CLASSES}" / f"{i:07d}.png", compress_level=1)
    marker.write_text(str(n))
    return root


class FolderSource(DatasetSource):
    """An ImageFolder tree of 32x32 RGB images as a dataset (every split is the same folder)."""

    num_classes = CLASSES
    input_shape = SHAPE
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)

    def __init__(self, splits: dict[str, Path]):
        self.roots = {k: Path(v) for k, v in splits.items()}
        self.splits = tuple(self.roots)

    def build(self, split, ctx):
        from torchvision.datasets import ImageFolder
        from torchvision.transforms import ToTensor

        return ImageFolder(str(self.roots[split]), transform=ToTensor())


def register_folders(datasets: dict[str, dict[str, Path]], ood: bool = False) -> None:
    """Register ``name -> {split: folder}`` as datasets of the process's plugins (an in-process plugin)."""
    from logitnorm_bench import hookimpl
    from logitnorm_bench.plugins import get_plugins

    class Plugin:
        @hookimpl
        def register_datasets(self, register):
            for name, splits in datasets.items():
                register(name, lambda splits=splits: FolderSource(splits),
                         description="stream benchmark: a synthetic PNG folder")

    get_plugins().add(Plugin(), name=f"stream-bench-{'-'.join(sorted(datasets))}")


def seeded_model(arch: str, params: dict, seed: int = 0) -> torch.nn.Module:
    """The architecture as the harness builds it for a FolderSource ID set (seeded init, normalisation inside)."""
    from logitnorm_bench.plugins import get_plugins
    from logitnorm_bench.train import build_model

    plugins = get_plugins()
    return build_model(plugins, arch, params, plugins.losses.build("ce"), FolderSource({}), seed)
