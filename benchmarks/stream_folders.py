"""Helpers of the streaming benchmarks (``stream_memory.py``, ``stream_speed.py``; not a script).

Synthetic on-disk image folders, written once into a cache folder, read by the built-in
``image_folder`` dataset (``logitnorm_bench/image_folder.py``), as a user's own images are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = 10


def png_folder(folder: Path, n: int, seed: int) -> Path:
    """``folder``: ``n`` random 32x32 RGB PNGs in ``CLASSES`` class folders (image i in class i % 10),
    written once (a ``.complete`` marker holds the count) and reused by later runs."""
    from PIL import Image

    folder = Path(folder)
    marker = folder / ".complete"  # hidden: image_folder skips it
    if marker.is_file() and marker.read_text().strip() == str(n):
        return folder
    for k in range(CLASSES):
        (folder / f"class{k}").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    chunk = 1000
    for start in range(0, n, chunk):
        pixels = rng.integers(0, 256, size=(min(chunk, n - start), 32, 32, 3), dtype=np.uint8)
        for j, img in enumerate(pixels):
            i = start + j
            Image.fromarray(img).save(folder / f"class{i % CLASSES}" / f"{i:07d}.png", compress_level=1)
    marker.write_text(str(n))
    return folder
