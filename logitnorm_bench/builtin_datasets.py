"""The core's own datasets, registered through the entry point ``core_datasets`` of the group
``ood_bench`` like every other plugin.  Loading this module imports nothing heavy: the factory is an
import string, imported when a suite's params are resolved or the dataset is built."""

from __future__ import annotations

from logitnorm_bench.plugins import lazy_plugin

DATASETS = {
    "image_folder": ("ImageFolder", "Your own images: params root (train/ val/ test/ of class folders, or any "
                                    "folder of images as OOD data), image_size=32, mean/std (ImageNet's), "
                                    "resize=resize_crop, extensions."),
}

datasets = lazy_plugin("datasets", "logitnorm_bench.image_folder", DATASETS)
