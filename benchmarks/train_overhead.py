"""Issue 5, target 3: the harness's training loop vs a bare PyTorch loop, same recipe, model, data.

WRN-40-2, CIFAR-shaped random images and labels held in memory, the paper's recipe (SGD momentum
0.9, weight decay 5e-4, lr 0.1, multistep; random crop with 4 px zero padding + horizontal flip;
batch 128, drop_last), CE loss, CPU.  An "epoch" here is ``--n`` images (a CPU cannot do 50,000
WRN-40-2 images in a benchmark); both loops run the same number of steps on the same images.

* harness: ``logitnorm_bench.train.train`` (no checkpoint, no monitor: what is compared is the loop;
  ``--checkpoint`` adds a variant that saves the resumable checkpoint every epoch, as the runner does);
* harness + progress: the same with the worker's progress reporting attached (its per-step call and
  per-epoch events feeding the suite's monitor), as ``ood-bench run`` trains;
* bare: the loop anyone would write -- randperm, pad + per-image crop slices + flip, forward,
  ``F.cross_entropy``, ``zero_grad``/``backward``/``step``, ``MultiStepLR``.  No loss check, no accuracy.

The two draw their random numbers in the same order from the same seed, so they train on the same
images with the same dropout masks; the script prints how far apart the final weights are (0 = the
same computation).  Runs alternate (bare, harness, bare, harness, ...) so load drifts hit both.

    python benchmarks/train_overhead.py --threads 2 --n 1024 --rounds 3
"""

from __future__ import annotations

import copy
import shutil
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import _common as C  # noqa: E402


def bare_loop(model, x, y, recipe: dict, seed: int, device) -> torch.nn.Module:
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=recipe["lr"], momentum=recipe["momentum"],
                          weight_decay=recipe["weight_decay"], nesterov=recipe["nesterov"])
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=recipe["milestones"], gamma=recipe["gamma"])
    g = torch.Generator().manual_seed(seed)
    bs, pad, n = recipe["batch_size"], recipe["crop_padding"], x.shape[0]
    h, w = x.shape[2:]
    for _ in range(recipe["epochs"]):
        perm = torch.randperm(n, generator=g)
        for b in range(n // bs):
            idx = perm[b * bs:(b + 1) * bs]
            xb = F.pad(x[idx], (pad, pad, pad, pad))
            i = torch.randint(0, 2 * pad + 1, (bs,), generator=g)
            j = torch.randint(0, 2 * pad + 1, (bs,), generator=g)
            xb = torch.stack([xb[k, :, i[k]:i[k] + h, j[k]:j[k] + w] for k in range(bs)])
            flip = torch.rand(bs, generator=g) < 0.5
            xb[flip] = xb[flip].flip(3)
            loss = F.cross_entropy(model(xb.to(device)), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    return model


def progress_events(recipe: dict):
    """What the worker hands ``train(events=...)`` in ``ood-bench run``: the reporter feeding the suite's
    monitor (periodic lines, as in a pipe) and an (empty) tracker set."""
    from pathlib import Path

    from logitnorm_bench.plugins import get_plugins
    from logitnorm_bench.progress import Monitor, RunReporter
    from logitnorm_bench.trackers import TrackedRun, Trackers
    from logitnorm_bench.worker import _RunEvents

    monitor = Monitor([("bench", "1/1 bench", recipe["epochs"], 0, "k")], mode="lines")
    tracked = TrackedRun("bench", "bench", "bench", {"train": recipe}, Path("."), "train")
    return _RunEvents(RunReporter("1/1 bench", "bench", monitor.handle), Trackers([], get_plugins(), tracked),
                      tracked, 0, "k")


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1024, help="images per epoch (default 1024 = 8 steps of 128)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=1, help="epochs per timed run (default 1)")
    p.add_argument("--rounds", type=int, default=3, help="alternating runs of each loop (default 3)")
    p.add_argument("--checkpoint", action="store_true", help="also time the harness saving a checkpoint every epoch")
    args = p.parse_args(argv)
    if args.tiny:
        args.n, args.batch_size, args.epochs, args.rounds = 32, 16, 1, 1
    dev = C.setup(args, "Training loop overhead: harness train() vs a bare PyTorch loop")

    from logitnorm_bench.plugins import get_plugins
    from logitnorm_bench.suite import TrainRecipe, recipe_dict
    from logitnorm_bench.train import train

    recipe = recipe_dict(replace(TrainRecipe(), epochs=args.epochs, batch_size=args.batch_size))
    x = C.images(args.n, 1)
    y = torch.randint(0, 10, (args.n,), generator=torch.Generator().manual_seed(2))
    model0 = C.wrn(args.tiny)
    loss_fn = get_plugins().losses.build("ce")
    steps = args.n // args.batch_size * args.epochs
    print(f"model {C.arch_name(args.tiny)}, {args.n} images/epoch, batch {args.batch_size}, "
          f"{steps} steps per run, {args.rounds} alternating rounds")
    tmp = Path(tempfile.mkdtemp(prefix="train_overhead_"))

    def run_bare():
        torch.manual_seed(0)  # dropout draws
        return bare_loop(copy.deepcopy(model0), x, y, recipe, 0, dev)

    def run_harness(checkpoint=None, events=None):
        torch.manual_seed(0)
        if checkpoint is not None:
            checkpoint.unlink(missing_ok=True)
        return train(copy.deepcopy(model0), loss_fn, x, y, recipe, 0, dev, checkpoint=checkpoint,
                     events=events).model

    variants = {"bare loop": run_bare, "harness train()": run_harness,
                "harness train() + progress": lambda: run_harness(events=progress_events(recipe))}
    if args.checkpoint:
        variants["harness train() + checkpoint every epoch"] = lambda: run_harness(tmp / "ckpt.pt")
    C.timed(lambda: bare_loop(copy.deepcopy(model0), x[:args.batch_size], y[:args.batch_size],
                              dict(recipe, epochs=1), 0, dev), dev)  # warm-up
    times = {k: [] for k in variants}
    models = {}
    try:
        for _ in range(args.rounds):
            for name, fn in variants.items():
                t, models[name] = C.timed(fn, dev)
                times[name].append(t / args.epochs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    bare = times["bare loop"]
    rows = []
    for name, ts in times.items():
        ratios = [t / b for t, b in zip(ts, bare)]
        rows.append([name, statistics.median(ts), min(ts), statistics.median(ratios),
                     min(ts) / min(bare), " ".join(f"{r:.3f}" for r in ratios)])
    print()
    C.table(["loop", "s/epoch (median)", "s/epoch (min)", "ratio to bare (median of rounds)",
             "ratio of minimums", "ratio per round"], rows)
    diff = max(float((a - b).abs().max()) for a, b in
               zip(models["bare loop"].state_dict().values(), models["harness train()"].state_dict().values())
               if a.is_floating_point())
    print(f"\nmax |weight difference| harness vs bare after the same steps: {diff:.3g}")
    med = statistics.median(t / b for t, b in zip(times["harness train()"], bare))
    C.target("harness / bare per epoch (median of rounds)", med, "<=", 1.05, "x")
    med = statistics.median(t / b for t, b in zip(times["harness train() + progress"], bare))
    C.target("harness + progress / bare per epoch (median of rounds)", med, "<=", 1.05, "x")
    C.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
