"""Issue 14: peak memory of an evaluation read from on-disk image folders of 10k, 50k and 200k PNGs.

Each measurement is one fresh process running ``api.run`` (the harness's worker: shared pass, the
detectors' own passes, records and per-sample scores) on given weights of a small model
(``digits_mlp``, width 64, random init) with the folder as the ID test set and ``uniform_noise``
(2,000 images) as the OOD set.  The folders are synthetic 32x32 RGB PNGs in 10 class folders
(``ROOT/test/classK/``), written once into ``--cache`` (200k PNGs take a few minutes and about 1 GiB)
and read by the built-in ``image_folder`` dataset (``id_dataset_params: {root: ROOT}``).  Streamed
(``--stream-above-mb 0``) for every size; the in-memory path beside it up to ``--in-memory-up-to``
images (its memory grows with the set: 200k images are 2.3 GiB of float32 before any copy).

Peak RSS is ``ru_maxrss`` of the measuring process (``RUSAGE_SELF``) and, separately, the largest of
its DataLoader worker processes (``RUSAGE_CHILDREN``: a forked worker shares the parent's pages, so
it is not added on top).  Target: streamed peak flat within 1.2x from the smallest to the largest
size, and below 3 GiB.

    python benchmarks/stream_memory.py --cache /data/stream-cache --threads 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
from stream_folders import png_folder  # noqa: E402

ARCH, ARCH_PARAMS = "digits_mlp", {"width": 64}


def _gib(kib: int) -> float:
    return kib / 2 ** 20  # ru_maxrss is in KiB on Linux


def measure(spec: dict) -> dict:
    """One evaluation in this (fresh) process; its peak RSS and that of its loader workers."""
    import torch

    from logitnorm_bench import api
    from logitnorm_bench.plugins import get_plugins
    from logitnorm_bench.records import ResultsDir
    from logitnorm_bench.train import build_model

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    plugins = get_plugins()
    folder = {"root": spec["folder"]}
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "weights.pt"
        model = build_model(plugins, ARCH, ARCH_PARAMS, plugins.losses.build("ce"),
                            plugins.datasets.build("image_folder", **folder), 0)
        torch.save(model.net.state_dict(), weights)
        suite = {"suite": "stream_memory", "version": 1,
                 "defaults": {"evaluation": {"batch_size": spec["batch_size"], "ood_samples": spec["ood"]}},
                 "experiments": {"e": {"matrix": {
                     "id_dataset": ["image_folder"], "id_dataset_params": [folder], "arch": [ARCH], "arch_params": [ARCH_PARAMS], "loss": ["ce"],
                     "detector": spec["detectors"], "ood_dataset": ["uniform_noise"], "seed": [0],
                     "weights": [str(weights)]}}}}
        t0 = time.perf_counter()
        outcome = api.run(suite, Path(tmp) / "results", data=Path(tmp) / "data", device=spec["device"],
                          progress="off", log_file=False, stream_above_mb=spec["stream_above_mb"],
                          loader_workers=spec["loader_workers"])
        seconds = time.perf_counter() - t0
        # Random weights on random images are at chance, which the harness flags after evaluating in full.
        errors = [r.get("error") for r in ResultsDir(outcome.results).records()]
        evaluated = sum(e is None or "is at chance" in e for e in errors)
    return {"self_gib": _gib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
            "workers_gib": _gib(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss),
            "seconds": seconds, "cells": len(errors), "evaluated": evaluated,
            "errors": [e for e in errors if e and "is at chance" not in e]}


def in_child(spec: dict) -> dict:
    """:func:`measure` in a fresh Python process (so that each peak is its own)."""
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"measurement failed ({spec['folder']}):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["errors"] or not result["evaluated"]:
        raise SystemExit(f"evaluation failed ({spec['folder']}): {result}")
    return result


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, default=Path(".cache/stream-bench"),
                   help="where the PNG folders are written once (default .cache/stream-bench)")
    p.add_argument("--sizes", default="10000,50000,200000", help="ID images per folder, comma-separated")
    p.add_argument("--in-memory-up-to", type=int, default=50_000,
                   help="also measure the in-memory path for sizes up to this many images")
    p.add_argument("--detectors", default="msp,energy,odin")
    p.add_argument("--loader-workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--limit-gib", type=float, default=3.0)
    p.add_argument("--child", help=argparse.SUPPRESS)  # a JSON spec: one measurement, printed as JSON
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    ood = 2000
    if args.tiny:
        sizes, args.in_memory_up_to, args.batch_size, ood = [40, 80], 40, 16, 20
    dev = C.setup(args, "Streaming: evaluation peak RSS vs the number of on-disk images")
    t0 = time.perf_counter()
    folders = {n: png_folder(args.cache / f"png-{n}" / "test", n, seed=n).parent for n in sizes}
    print(f"folders ready in {time.perf_counter() - t0:.1f}s under {args.cache}; model {ARCH} {ARCH_PARAMS}, "
          f"detectors {args.detectors}, OOD uniform_noise x {ood}, batch size {args.batch_size}, "
          f"loader workers {args.loader_workers}")
    rows, streamed = [], {}
    for n in sizes:
        spec = {"folder": str(folders[n]), "threads": args.threads, "device": str(dev), "ood": ood,
                "batch_size": args.batch_size, "detectors": args.detectors.split(","),
                "loader_workers": args.loader_workers}
        st = streamed[n] = in_child(dict(spec, stream_above_mb=0))
        mem = in_child(dict(spec, stream_above_mb=1e9)) if n <= args.in_memory_up_to else None
        rows.append([n, n * 3 * 32 * 32 * 4 / 2 ** 20, st["self_gib"], st["workers_gib"], st["seconds"],
                     mem["self_gib"] if mem else "not run", mem["seconds"] if mem else "not run"])
    print()
    C.table(["images", "float32 tensor MiB", "streamed peak RSS GiB", "streamed loader worker peak GiB",
             "streamed seconds", "in-memory peak RSS GiB", "in-memory seconds"], rows)
    print()
    peaks = [max(streamed[n]["self_gib"], streamed[n]["workers_gib"]) for n in sizes]
    C.target(f"streamed peak RSS {sizes[-1]} / {sizes[0]} images", peaks[-1] / peaks[0], "<=", 1.2, "x")
    C.target(f"streamed peak RSS at {sizes[-1]} images", peaks[-1], "<=", args.limit_gib, " GiB")
    C.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
