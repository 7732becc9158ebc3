"""Issue 14: streaming vs in-memory on a CIFAR-sized set read from disk: evaluation time, training time per epoch.

The data: 50,000 training and 10,000 test images, 3x32x32, plus 2,000 OOD images, as PNG files in
class folders (written once into ``--cache``).  PNG, not a tensor file, because that is what
streaming is for: a user's own folder of images, decoded as it is read.  (A tensor file would be
read by the in-memory path in one go and make the comparison one of memory copies.)  Both paths
read the same built-in ``image_folder`` datasets through the harness's own code:

* in memory: ``materialize`` once (the decoding is timed, and for evaluation included), then
  tensor indexing, as the harness does below ``stream_above_mb``;
* streamed: ``stream_above_mb: 0``, a DataLoader with ``--loader-workers`` worker processes that decode
  while the model computes.

Evaluation: ``Evaluator.evaluate`` (cells msp and energy on the OOD folder: the shared pass over the
ID test set and the OOD set, the metrics), from the datasets to the last result.  Training: ``train``
(crop + flip augmentation, SGD) for ``--epochs`` epochs of at most ``--max-batches`` batches; the
time per epoch is the last epoch's (the first one also starts the workers).  Both paths must give
bitwise the same scores and, on a CPU, weights (GPU training is not bitwise reproducible run to run);
the script checks it and exits 1 if not.  Model: WRN-40-2 (WRN-10-1 with --tiny).
Target: streaming / in-memory <= 1.15 for each, on CPU.  ``--device cuda`` runs it on a GPU.

    python benchmarks/stream_speed.py --cache /data/stream-cache --threads 2
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import _common as C  # noqa: E402
from stream_folders import png_folder  # noqa: E402


def evaluate(model, sources: dict, loading, batch_size: int, device):
    from logitnorm_bench.components import DataContext
    from logitnorm_bench.evaluation import Evaluator
    from logitnorm_bench.plugins import get_plugins
    from logitnorm_bench.suite import EvalProtocol

    protocol = dataclasses.asdict(EvalProtocol(ood_samples=None, batch_size=batch_size))
    ev = Evaluator(model, sources["id"], DataContext(root=Path(".")), get_plugins(), device, protocol,
                   source_for=lambda name: sources[name], loading=loading)
    cells = [SimpleNamespace(detector=d, detector_params={}, ood_dataset="ood") for d in ("msp", "energy")]
    results = [r for _, r in ev.evaluate(cells)]
    bad = [r["error"] for r in results if "error" in r]
    if bad:
        raise SystemExit(f"evaluation failed: {bad}")
    return results


def train_epochs(model, data, labels, recipe: dict, device):
    from logitnorm_bench.plugins import get_plugins
    from logitnorm_bench.train import train

    res = train(model, get_plugins().losses.build("ce"), data, labels, recipe, 0, device)
    return res.history, res.model.state_dict()


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, default=Path(".cache/stream-bench"),
                   help="where the PNG folders are written once (default .cache/stream-bench)")
    p.add_argument("--n-train", type=int, default=50_000)
    p.add_argument("--n-test", type=int, default=10_000)
    p.add_argument("--n-ood", type=int, default=2_000)
    p.add_argument("--batch-size", type=int, default=128, help="training batch (the paper's 128)")
    p.add_argument("--eval-batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-batches", type=int, default=50,
                   help="training batches per epoch (0 = the whole epoch: 390 WRN-40-2 steps are ~12 min on 2 cores)")
    p.add_argument("--loader-workers", type=int, default=2)
    args = p.parse_args(argv)
    if args.tiny:
        args.n_train, args.n_test, args.n_ood, args.batch_size, args.eval_batch_size = 96, 48, 24, 16, 16
        args.epochs, args.max_batches = 2, 3
    dev = C.setup(args, "Streaming vs in memory: a CIFAR-sized set of PNG files")

    from logitnorm_bench.loading import image_set
    from logitnorm_bench.suite import Loading, TrainRecipe, recipe_dict
    from logitnorm_bench.train import materialize

    t0 = time.perf_counter()
    from logitnorm_bench.image_folder import ImageFolder

    cifar = args.cache / f"cifar-{args.n_train}-{args.n_test}"  # train/ and test/ of class folders: an ID set
    png_folder(cifar / "train", args.n_train, seed=1)
    png_folder(cifar / "test", args.n_test, seed=2)
    ood = png_folder(args.cache / f"cifar-ood-{args.n_ood}", args.n_ood, seed=3)  # no split folders: OOD only
    sources = {"id": ImageFolder(str(cifar)), "ood": ImageFolder(str(ood))}
    print(f"folders ready in {time.perf_counter() - t0:.1f}s under {args.cache}; model {C.arch_name(args.tiny)}, "
          f"{args.n_train} train / {args.n_test} test / {args.n_ood} OOD PNGs, loader workers {args.loader_workers}")
    in_memory, streamed = Loading(stream_above_mb=1e9), Loading(stream_above_mb=0, loader_workers=args.loader_workers)

    model = C.wrn(args.tiny).to(dev).eval()
    t_eval_mem, res_mem = C.timed(lambda: evaluate(model, sources, in_memory, args.eval_batch_size, dev), dev)
    t_eval_st, res_st = C.timed(lambda: evaluate(model, sources, streamed, args.eval_batch_size, dev), dev)
    same_scores = all(torch.equal(a["scores"]["id"], b["scores"]["id"])
                      and all(torch.equal(x, y) for x, y in zip(a["scores"]["ood"], b["scores"]["ood"]))
                      for a, b in zip(res_mem, res_st))

    recipe = recipe_dict(TrainRecipe(epochs=args.epochs, batch_size=args.batch_size, lr=0.1, schedule="constant",
                                     max_batches_per_epoch=args.max_batches or None))
    train_ds = sources["id"].build("train", None)
    t_load, (x, y) = C.timed(lambda: materialize(train_ds), dev)
    hist_mem, state_mem = train_epochs(C.wrn(args.tiny), x, y, recipe, dev)
    del x, y
    data = image_set(train_ds, sources["id"].input_shape, streamed, dev)
    hist_st, state_st = train_epochs(C.wrn(args.tiny), data, None, recipe, dev)
    # GPU training is not bitwise reproducible from one run to the next (cuDNN), so only a CPU checks it.
    same_weights = all(torch.equal(state_mem[k], state_st[k]) for k in state_mem) if dev.type == "cpu" else None
    e_mem, e_st = hist_mem[-1]["seconds"], hist_st[-1]["seconds"]
    batches = args.max_batches or args.n_train // args.batch_size

    print()
    C.table(["what", "in memory, s", "streamed, s", "streamed / in memory"], [
        [f"evaluation: {args.n_test} ID + {args.n_ood} OOD images, msp + energy (with decoding)", t_eval_mem,
         t_eval_st, t_eval_st / t_eval_mem],
        [f"training: epoch {args.epochs} ({batches} batches of {args.batch_size})", e_mem, e_st, e_st / e_mem],
        ["training: epoch 1 (streamed: starts its workers)", hist_mem[0]["seconds"], hist_st[0]["seconds"],
         hist_st[0]["seconds"] / hist_mem[0]["seconds"]],
        [f"loading {args.n_train} training PNGs into memory (once per run)", t_load, 0.0, "-"],
    ])
    print()
    weights = {True: "yes", False: "NO", None: f"not checked on {dev.type} (not bitwise reproducible)"}
    C.table(["check", "result"], [["scores bitwise equal", "yes" if same_scores else "NO"],
                                  ["weights bitwise equal after training", weights[same_weights]]])
    print()
    C.target("streaming / in-memory evaluation time", t_eval_st / t_eval_mem, "<=", 1.15, "x")
    C.target("streaming / in-memory training time per epoch", e_st / e_mem, "<=", 1.15, "x")
    C.finish()
    return 0 if same_scores and same_weights is not False else 1


if __name__ == "__main__":
    sys.exit(main())
