"""Issue 5, target 4: checks of the GPU training fast path (channels_last, bf16, gpu_data, compile).

1. Augmentation: ``augment`` equals an independent per-image reference (slice the crop, flip the
   columns) given the same random draws, for the generator state it starts from; on a GPU also for
   data and generator on the GPU (the draws replayed from a copy of the CUDA generator's state), and
   CPU generator + GPU data equals CPU generator + CPU data.
2. Each fast-path flag trains (a few steps) on the device, and how far its weights end from the plain
   path's: on a CPU ``gpu_data`` and ``bf16`` (ignored off CUDA) must be bit-identical, ``channels_last``
   close (a different conv algorithm); ``compile`` only with ``--compile``.
3. Host syncs: training with the loss read every 4 steps (as on a GPU) gives the same history and
   weights as every step, and a diverging run fails naming the same batch.
4. Accuracy: plain vs fast path (all flags the device supports), ``--seeds`` seeds each, test accuracy
   mean and std; "within noise" = the difference is at most max(2 standard errors of the difference,
   ``--tolerance`` points).  Data: CIFAR-10 from ``--data`` when it is there (torchvision layout),
   else a synthetic CIFAR-shaped 10-class task (low-frequency class patterns under heavy noise).

    python benchmarks/fast_path_check.py --threads 2                     # CPU: checks 1-3, small 4
    python benchmarks/fast_path_check.py --device cuda --data ./data     # GPU: all, WRN-40-2 on CIFAR-10
    python benchmarks/fast_path_check.py --tiny                          # CI
"""

from __future__ import annotations

import copy
import math
import statistics
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import _common as C  # noqa: E402


# ------------------------------------------------------------------------------------------
# 1. augmentation
# ------------------------------------------------------------------------------------------

def draws(gen: torch.Generator, b: int, padding: int, hflip: bool):
    """The random numbers ``augment`` draws, in its order."""
    n = 2 * padding + 1
    i = torch.randint(0, n, (b,), generator=gen, device=gen.device).cpu() if padding > 0 else None
    j = torch.randint(0, n, (b,), generator=gen, device=gen.device).cpu() if padding > 0 else None
    flip = (torch.rand(b, generator=gen, device=gen.device) < 0.5).cpu() if hflip else None
    return i, j, flip


def reference_augment(x: torch.Tensor, padding: int, i, j, flip) -> torch.Tensor:
    """Per image: zero-pad, slice the crop at (i, j), reverse the columns if flipped."""
    out = []
    h, w = x.shape[2:]
    for k in range(x.shape[0]):
        img = x[k]
        if padding > 0:
            img = F.pad(img, (padding, padding, padding, padding))[:, int(i[k]):int(i[k]) + h, int(j[k]):int(j[k]) + w]
        if flip is not None and bool(flip[k]):
            img = img[:, :, torch.arange(w - 1, -1, -1)]
        out.append(img)
    return torch.stack(out)


def check_augment(dev: torch.device) -> list[list]:
    from logitnorm_bench.train import augment

    x = C.images(37, 5)
    rows = []
    for padding, hflip in [(4, True), (4, False), (0, True), (1, True), (2, False)]:
        for where in ["cpu"] + (["cuda"] if dev.type == "cuda" else []):
            gen = torch.Generator(device=where).manual_seed(11)
            state = gen.get_state()
            got = augment(x.to(where), padding, hflip, gen).cpu()
            replay = torch.Generator(device=where)
            replay.set_state(state)
            want = reference_augment(x, padding, *draws(replay, x.shape[0], padding, hflip))
            same_state = torch.equal(gen.get_state(), replay.get_state())
            rows.append([f"augment, data+generator on {where}, padding {padding}, hflip {hflip}",
                         torch.equal(got, want) and same_state])
        if dev.type == "cuda":
            g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
            rows.append([f"augment, CPU generator: data on cuda == data on cpu, padding {padding}, hflip {hflip}",
                         torch.equal(augment(x.to(dev), padding, hflip, g1).cpu(), augment(x, padding, hflip, g2))])
    return rows


# ------------------------------------------------------------------------------------------
# 2 and 3. flags and host syncs
# ------------------------------------------------------------------------------------------

def _recipe(**kw):
    from logitnorm_bench.suite import FastPath, TrainRecipe, recipe_dict

    fast = kw.pop("fast", {})
    return recipe_dict(replace(TrainRecipe(), **kw, fast=FastPath(**fast)))


def _train(model0, x, y, recipe, dev, **kw):
    from logitnorm_bench.plugins import get_plugins
    from logitnorm_bench.train import train

    torch.manual_seed(0)
    return train(copy.deepcopy(model0), get_plugins().losses.build("ce"), x, y, recipe, 0, dev, **kw)


def _max_diff(a, b) -> float:
    return max(float((p.detach().float().cpu() - q.detach().float().cpu()).abs().max())
               for p, q in zip(a.state_dict().values(), b.state_dict().values()) if p.is_floating_point())


def check_flags(dev: torch.device, tiny: bool, with_compile: bool) -> list[list]:
    x, y = C.images(96, 1), torch.randint(0, 10, (96,), generator=torch.Generator().manual_seed(2))
    # Dropout off: a channels_last tensor gets its dropout mask drawn in memory order, i.e. other
    # masks from the same RNG state (same distribution), which would hide the numerical comparison.
    model0 = C.wrn(True)
    for m in model0.modules():
        if hasattr(m, "droprate"):
            m.droprate = 0.0
    kw = dict(epochs=1, batch_size=16, lr=0.01, max_batches_per_epoch=3 if tiny else 6)
    plain = _train(model0, x, y, _recipe(**kw), dev)
    rows = []
    flags = ["channels_last", "bf16", "gpu_data"] + (["compile"] if with_compile else [])
    for flag in flags:
        res = _train(model0, x, y, _recipe(**kw, fast={flag: True}), dev)
        d = _max_diff(plain.model, res.model)
        exact = dev.type == "cpu" and flag in ("bf16", "gpu_data")
        if exact:
            ok, want = d == 0.0, "must be 0"
        elif flag == "gpu_data":  # a CUDA generator: other crops and flips than the plain path's CPU one
            ok, want = math.isfinite(res.history[-1]["loss"]), "other random crops: only a finite loss checked"
        else:
            bound = 0.05 if flag == "bf16" else 1e-3
            ok, want = math.isfinite(res.history[-1]["loss"]) and d < bound, f"must be finite, < {bound:g}"
        rows.append([f"flag {flag} on {dev.type} (dropout off): trains; "
                     f"max |weight diff| vs plain = {d:.3g} ({want})", ok])
    return rows


def check_host_sync(dev: torch.device) -> list[list]:
    import logitnorm_bench.train as T

    x, y = C.images(32, 1), torch.randint(0, 10, (32,), generator=torch.Generator().manual_seed(2))
    model0 = C.wrn(True)
    rows = []
    saved = T.host_sync_every
    try:
        results, errors = {}, {}
        for every in (1, 4):
            T.host_sync_every = lambda d, every=every: every
            res = _train(model0, x, y, _recipe(epochs=2, batch_size=8, lr=0.01), dev)
            results[every] = res
            try:
                _train(model0, x, y, _recipe(epochs=1, batch_size=8, lr=1e38), dev)
                errors[every] = "no error"
            except T.DivergedError as exc:
                errors[every] = str(exc)
        a, b = results[1], results[4]
        same = [{k: v for k, v in h.items() if k != "seconds"} for h in a.history] == \
               [{k: v for k, v in h.items() if k != "seconds"} for h in b.history]
        rows.append(["host sync every 4 steps: same history and weights as every step",
                     same and _max_diff(a.model, b.model) == 0.0])
        rows.append([f"host sync every 4 steps: divergence reported at the same batch ({errors[1]!r})",
                     errors[1] == errors[4] and errors[1] != "no error"])
    finally:
        T.host_sync_every = saved
    return rows


# ------------------------------------------------------------------------------------------
# 4. accuracy
# ------------------------------------------------------------------------------------------

def synthetic_task(n_train: int, n_test: int, seed: int = 0):
    """10 classes: a low-frequency random pattern per class, random contrast, heavy noise."""
    g = torch.Generator().manual_seed(seed)
    patterns = F.interpolate(torch.rand(10, 3, 4, 4, generator=g), size=32, mode="bilinear", align_corners=False)

    def make(n):
        y = torch.randint(0, 10, (n,), generator=g)
        contrast = torch.rand(n, 1, 1, 1, generator=g) * 0.3 + 0.1
        x = 0.5 + contrast * (patterns[y] - 0.5) + 0.25 * torch.randn(n, 3, 32, 32, generator=g)
        return x.clamp(0, 1), y

    (xt, yt), (xs, ys) = make(n_train), make(n_test)
    return xt, yt, xs, ys, "synthetic 10-class CIFAR-shaped task"


def cifar10(root: Path):
    from torchvision.datasets import CIFAR10

    def load(train):
        ds = CIFAR10(root=str(root), train=train, download=False)
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).float().div(255), torch.tensor(ds.targets)

    (xt, yt), (xs, ys) = load(True), load(False)
    return xt, yt, xs, ys, f"CIFAR-10 from {root}"


def check_accuracy(dev, args) -> tuple[list[list], list[list]]:
    from logitnorm_bench.evaluation import forward_pass

    data = None
    if args.data:
        try:
            data = cifar10(Path(args.data))
        except Exception as exc:  # noqa: BLE001 -- say why, use the synthetic task
            print(f"CIFAR-10 not loaded from {args.data} ({type(exc).__name__}: {exc}); using the synthetic task")
    if data is None:
        data = synthetic_task(args.n_train, args.n_test)
    xt, yt, xs, ys, what = data
    small = args.arch == "wrn10_1"
    fast = {"channels_last": True, "gpu_data": True, "bf16": dev.type == "cuda",
            "compile": dev.type == "cuda" and not args.no_compile}
    print(f"accuracy: {what}, {xt.shape[0]} train / {xs.shape[0]} test images, {C.arch_name(small)}, "
          f"{args.epochs} epochs, seeds {list(range(args.seeds))}; fast path = {fast}")
    accs = {"plain": [], "fast": []}
    for seed in range(args.seeds):
        for name, flags in (("plain", {}), ("fast", fast)):
            model = C.wrn(small, seed=seed)
            recipe = _recipe(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, schedule="cosine",
                             fast=flags)
            from logitnorm_bench.plugins import get_plugins
            from logitnorm_bench.train import train

            torch.manual_seed(seed)
            res = train(model, get_plugins().losses.build("ce"), xt, yt, recipe, seed, dev)
            logits = forward_pass(res.model.eval(), xs, 500, dev, False).logits
            acc = float((logits.argmax(1) == ys).float().mean()) * 100
            accs[name].append(acc)
            print(f"  seed {seed} {name}: test accuracy {acc:.2f}% ({res.seconds:.1f} s)")
    mp, mf = statistics.mean(accs["plain"]), statistics.mean(accs["fast"])
    sp = statistics.stdev(accs["plain"]) if args.seeds > 1 else float("nan")
    sf = statistics.stdev(accs["fast"]) if args.seeds > 1 else float("nan")
    se = math.sqrt((sp ** 2 + sf ** 2) / args.seeds) if args.seeds > 1 else 0.0
    allowed = max(2 * se, args.tolerance)
    rows = [["plain", mp, sp, " ".join(f"{a:.2f}" for a in accs["plain"])],
            ["fast", mf, sf, " ".join(f"{a:.2f}" for a in accs["fast"])]]
    checks = [[f"accuracy: |fast - plain| = {abs(mf - mp):.2f} points <= {allowed:.2f} "
               f"(max(2 standard errors, {args.tolerance}))", abs(mf - mp) <= allowed]]
    return rows, checks


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="folder holding cifar-10-batches-py (else: synthetic task)")
    p.add_argument("--arch", choices=["wrn40_2", "wrn10_1"], default="wrn40_2",
                   help="accuracy check's model (wrn10_1: WRN-10-1, for a CPU)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--n-train", type=int, default=2048, help="synthetic task: training images (default 2048)")
    p.add_argument("--n-test", type=int, default=2000, help="synthetic task: test images (default 2000)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--tolerance", type=float, default=1.0, help="accuracy points always allowed (default 1)")
    p.add_argument("--compile", action="store_true", help="on a CPU, also check the compile flag (slow)")
    p.add_argument("--no-compile", action="store_true", help="on a GPU, leave compile out of the accuracy run")
    p.add_argument("--skip-accuracy", action="store_true")
    args = p.parse_args(argv)
    if args.tiny:
        args.epochs, args.seeds, args.n_train, args.n_test, args.batch_size, args.arch = 1, 1, 64, 64, 16, "wrn10_1"
    dev = C.setup(args, "GPU fast path checks")
    checks = check_augment(dev) + check_flags(dev, args.tiny, args.compile or dev.type == "cuda") + \
        check_host_sync(torch.device("cpu"))
    acc_rows = []
    if not args.skip_accuracy:
        acc_rows, acc_checks = check_accuracy(dev, args)
        checks += acc_checks
    print()
    C.table(["check", "passed"], checks)
    if acc_rows:
        print()
        C.table(["path", "test accuracy % (mean)", "std", "per seed"], acc_rows)
    n_ok = sum(bool(ok) for _, ok in checks)
    print(f"\nchecks passed: {n_ok}/{len(checks)}")
    C.finish()
    return 0 if n_ok == len(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
