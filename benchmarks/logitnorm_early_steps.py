"""Issue 12 item 22: does the paper's LogitNorm recipe blow up the raw logit norm in its first steps?

In smoke mode (4 SGD steps of batch 16 at lr 0.1) LogitNorm's raw logit norms reach 1e5-1e13 in
eval mode and every MSP score is exactly 1.  This script checks whether the paper's recipe does the
same in its first few hundred steps on CIFAR-shaped data, on a CPU: WRN-40-2 (pytorch-ood's, the
official init) with LogitNorm (tau 0.04), SGD lr 0.1, momentum 0.9, weight decay 5e-4, batch 128,
random crop (4 px) + horizontal flip -- the harness's own optimizer, augmentation and loss -- and CE
with the same initial weights and the same batches alongside.

The data is structured and learnable, not noise: class c (10 ID classes) is a smooth random colour
field plus an oriented grating of its own; each image is its class pattern, randomly shifted, mixed
with a random smooth field of its own, scaled in contrast and noised.  OOD images are made the same
way from 10 further classes the training never sees.

At each logged step it prints, per loss: the mean raw logit norm of the training batch (train mode,
before the step), the mean raw logit norm on fixed ID test images in eval mode (what the evaluation
sees; BatchNorm then uses its running statistics), the same in train mode (batch statistics), the
gradient norm, the ID test accuracy, MSP's AUROC (ID test vs OOD, ID positive) and how many distinct
MSP values the ID test images get (1 = saturated: every score the same, AUROC exactly 50).

    python benchmarks/logitnorm_early_steps.py --threads 1 --steps 300
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import _common as C  # noqa: E402


def structured_images(n: int, classes: range, seed: int, pattern_seed: int = 1234) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` CIFAR-shaped images in [0, 1] of the given classes (labels = class - classes.start)."""
    pg = torch.Generator().manual_seed(pattern_seed)  # the class patterns: fixed whatever the split
    k_all = classes.stop
    fields = F.interpolate(torch.rand((k_all, 3, 4, 4), generator=pg), size=(32, 32), mode="bilinear",
                           align_corners=False)
    theta = torch.rand(k_all, generator=pg) * math.pi
    freq = 2 + 4 * torch.rand(k_all, generator=pg)  # cycles per image
    colour = torch.rand((k_all, 3, 1, 1), generator=pg)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    grating = torch.sin(2 * math.pi * freq[:, None, None] * (xx * theta.cos()[:, None, None]
                                                             + yy * theta.sin()[:, None, None]))
    patterns = 0.5 * fields + 0.5 * colour * (0.5 + 0.5 * grating[:, None])

    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % len(classes)
    cls = y + classes.start
    shifts = torch.randint(-4, 5, (n, 2), generator=g)
    base = torch.stack([patterns[c].roll((int(s[0]), int(s[1])), dims=(1, 2)) for c, s in zip(cls, shifts)])
    nuisance = F.interpolate(torch.rand((n, 3, 8, 8), generator=g), size=(32, 32), mode="bilinear",
                             align_corners=False)
    contrast = 0.7 + 0.6 * torch.rand((n, 1, 1, 1), generator=g)
    x = 0.5 + contrast * (0.65 * base + 0.35 * nuisance - 0.5) + 0.05 * torch.randn((n, 3, 32, 32), generator=g)
    return x.clamp(0, 1), y


def auroc(id_scores: torch.Tensor, ood_scores: torch.Tensor) -> float:
    from sklearn.metrics import roc_auc_score

    labels = [1] * len(id_scores) + [0] * len(ood_scores)
    return float(roc_auc_score(labels, torch.cat([id_scores, ood_scores]).double().numpy()))


@torch.no_grad()
def probe(model, x_id, y_id, x_ood, train_mode: bool) -> dict:
    model.train(train_mode)
    f_id, f_ood = model(x_id).double(), model(x_ood).double()  # double: softmax of huge logits stays exact
    msp_id, msp_ood = f_id.softmax(1).amax(1), f_ood.softmax(1).amax(1)
    return {"norm": f_id.norm(dim=1).mean().item(), "acc": (f_id.argmax(1) == y_id).double().mean().item(),
            "auroc": auroc(msp_id.float(), msp_ood.float()), "distinct": msp_id.float().unique().numel()}


def run(loss_name: str, args, data, log_steps: set[int]) -> list[list]:
    from logitnorm_bench.plugins import get_plugins
    from logitnorm_bench.train import augment, make_optimizer

    x_train, y_train, x_id, y_id, x_ood = data
    loss_fn = get_plugins().losses.build(loss_name, **({"tau": args.tau} if loss_name == "logitnorm" else {}))
    model = C.wrn(args.tiny, seed=0)  # the same initial weights for every loss
    opt = make_optimizer(model, loss_fn, {"lr": args.lr, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": False})
    gen = torch.Generator().manual_seed(0)  # the same batches and augmentations for every loss
    rows, n = [], x_train.shape[0]
    perm, pos = torch.randperm(n, generator=gen), 0
    for step in range(1, args.steps + 1):
        if pos + args.batch > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos:pos + args.batch]
        pos += args.batch
        model.train()
        x = augment(x_train[idx], 4, True, gen)
        logits = model(x)
        loss = loss_fn(logits, y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters() if p.grad is not None))
        opt.step()
        if not math.isfinite(loss.item()):
            rows.append([loss_name, step, float("nan")] + ["diverged"] * 9)
            break
        if step in log_steps:
            ev, tr = probe(model, x_id, y_id, x_ood, False), probe(model, x_id, y_id, x_ood, True)
            rows.append([loss_name, step, loss.item(), logits.detach().norm(dim=1).mean().item(), float(grad),
                         ev["norm"], tr["norm"], 100 * ev["acc"], 100 * ev["auroc"], ev["distinct"],
                         float(model.net.fc.weight.detach().norm())])
            print(f"  {loss_name} step {step}: loss {loss.item():.3f}, eval norm {ev['norm']:.3g}, "
                  f"acc {100 * ev['acc']:.1f}%, AUROC {100 * ev['auroc']:.1f}", file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--tau", type=float, default=0.04)
    p.add_argument("--losses", default="ce,logitnorm")
    p.add_argument("--n-train", type=int, default=10000, help="training images (batches cycle through them)")
    p.add_argument("--n-eval", type=int, default=256, help="ID test and OOD images each")
    args = p.parse_args(argv)
    if args.tiny:
        args.steps, args.batch, args.n_train, args.n_eval = 4, 8, 64, 16
    C.setup(args, f"LogitNorm's first {args.steps} steps: {C.arch_name(args.tiny)}, lr {args.lr}, "
                  f"batch {args.batch}, tau {args.tau}, structured synthetic CIFAR-shaped data")
    x_train, y_train = structured_images(args.n_train, range(0, 10), seed=1)
    x_id, y_id = structured_images(args.n_eval, range(0, 10), seed=2)
    x_ood, _ = structured_images(args.n_eval, range(10, 20), seed=3)
    data = (x_train, y_train, x_id, y_id, x_ood)
    log_steps = {s for s in (1, 2, 3, 5, 10, 20, 50, 100, 150, 200, 250, 300, 400, 500) if s <= args.steps}
    log_steps.add(args.steps)
    rows = []
    for name in args.losses.split(","):
        rows += run(name, args, data, log_steps)
    C.table(["loss", "step", "batch loss", "|f| batch (train)", "grad norm", "|f| ID test (eval)",
             "|f| ID test (train mode)", "ID acc %", "MSP AUROC %", "distinct MSP", "‖W_fc‖"], rows)
    C.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
