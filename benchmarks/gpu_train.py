"""Issue 5, target 6: training images per second, the plain path vs the GPU fast path.

WRN-40-2, CIFAR-shaped synthetic data (50,000 images in host memory, as the harness holds a training
set), the paper's recipe (batch 128, SGD, crop + flip), through ``logitnorm_bench.train.train``.  For
each configuration: two "epochs" of ``--steps`` steps; the first warms up (cuDNN, torch.compile), the
second is timed.  Configurations, cumulative:

    plain                      everything off (augmentation on the CPU, batches copied to the GPU)
    +channels_last
    +bf16                      bf16 autocast
    +gpu_data                  training set on the GPU, augmented there
    +compile                   torch.compile of the model (the whole fast path)

Meant for one GPU (``--device cuda``, the default when one is present): about 3-6 minutes on one
H200 at the defaults (compile is most of it).  ``--tiny`` runs a seconds-long CPU version for CI
(bf16 and compile are then not exercised: the harness ignores bf16 off CUDA, and compile is left out).

    python benchmarks/gpu_train.py                 # on the GPU machine
    python benchmarks/gpu_train.py --tiny          # CI, CPU
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import _common as C  # noqa: E402

CONFIGS = {
    "plain": {},
    "+channels_last": {"channels_last": True},
    "+bf16": {"channels_last": True, "bf16": True},
    "+gpu_data": {"channels_last": True, "bf16": True, "gpu_data": True},
    "+compile": {"channels_last": True, "bf16": True, "gpu_data": True, "compile": True},
}


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.set_defaults(device="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=300, help="timed steps per configuration (default 300)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--n", type=int, default=50_000, help="training images held (default 50,000)")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"subset of {','.join(CONFIGS)}")
    args = p.parse_args(argv)
    configs = args.configs.split(",")
    if args.tiny:
        args.steps, args.batch_size, args.n, args.device = 3, 16, 64, "cpu"
        configs = [c for c in configs if c != "+compile"]
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        raise SystemExit(f"unknown configuration(s) {sorted(unknown)}; known: {list(CONFIGS)}")
    dev = C.setup(args, "GPU training path: images per second, plain vs fast path")
    if dev.type != "cuda":
        print("NOTE: not on a GPU -- bf16 is ignored off CUDA and the numbers say nothing about a GPU")

    from logitnorm_bench.plugins import get_plugins
    from logitnorm_bench.suite import FastPath, TrainRecipe, recipe_dict
    from logitnorm_bench.train import host_sync_every, train

    x = C.images(args.n, 1)
    y = torch.randint(0, 10, (args.n,), generator=torch.Generator().manual_seed(2))
    loss_fn = get_plugins().losses.build("ce")
    print(f"model {C.arch_name(args.tiny)}, {args.n} images held, batch {args.batch_size}, "
          f"{args.steps} timed steps per configuration after as many warm-up steps; "
          f"host sync every {host_sync_every(dev)} steps")
    rows, base = [], None
    for name in configs:
        recipe = recipe_dict(replace(TrainRecipe(), epochs=2, batch_size=args.batch_size,
                                     max_batches_per_epoch=args.steps, fast=FastPath(**CONFIGS[name])))
        model = C.wrn(args.tiny, seed=0)
        torch.manual_seed(0)
        C.sync(dev)
        res = train(model, loss_fn, x, y, recipe, 0, dev)
        C.sync(dev)
        warm, timed = res.history[0]["seconds"], res.history[1]["seconds"]
        ips = args.steps * args.batch_size / timed
        base = base or ips
        peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        rows.append([name, ips, ips / base, timed, warm, res.history[1]["loss"], peak])
        del model, res
    print()
    C.table(["configuration", "images/s", "x plain", "timed epoch s", "warm-up epoch s",
             "loss (timed epoch)", "peak GPU GiB"], rows)
    print()
    print(f"fast path (last row) vs plain: {rows[-1][1] / rows[0][1]:.3g}x images/s")
    C.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
