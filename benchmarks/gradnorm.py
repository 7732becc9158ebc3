"""Issue 5, target 2: the harness's GradNorm from the shared pass vs per-sample gradients.

One shared pass (``forward_pass``, features + logits) over N random CIFAR-shaped images through a
WRN-40-2; then, on those features, in one run:

* harness: ``score_set(gradnorm)`` (closed form for a Linear head: ``||K softmax(z/T) - 1||_1 ||phi||_1 / T``);
* harness fallback (``torch.func`` per-sample gradients, what a non-Linear head such as GODIN's gets);
* OpenOOD's way: a Python loop, one ``backward`` per sample through a copy of the head, L1 of
  ``fc.weight.grad``, uniform targets all ones (the official GradNorm code);
* pytorch-ood's ``GradNorm`` with the head as its model (``param_filter``: ``weight``), i.e. restricted
  to the head; its loss is averaged over classes, so its scores are ours / K (and negated).

    python benchmarks/gradnorm.py --threads 2 --n 1024
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import _common as C  # noqa: E402


def openood_loop(head: torch.nn.Module, feats: torch.Tensor, temperature: float) -> torch.Tensor:
    """OpenOOD's GradNormPostprocessor: one backward per sample."""
    fc = copy.deepcopy(head)
    k = fc.out_features
    logsoftmax = torch.nn.LogSoftmax(dim=-1)
    scores = []
    with torch.enable_grad():
        for phi in feats:
            fc.zero_grad()
            targets = torch.ones((1, k), device=phi.device)
            out = fc(phi[None])
            loss = torch.mean(torch.sum(-targets * logsoftmax(out / temperature), dim=-1))
            loss.backward()
            scores.append(fc.weight.grad.abs().sum())
    return torch.stack(scores).detach()


def best_of(fn, device, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        t, out = C.timed(fn, device)
        best = min(best, t)
    return best, out


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1024, help="images in the shared pass (default 1024)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5, help="timings keep the minimum of this many (default 5)")
    args = p.parse_args(argv)
    if args.tiny:
        args.n, args.batch_size, args.repeats = 32, 16, 2
    dev = C.setup(args, "GradNorm: closed form from the shared pass vs per-sample gradients")

    from pytorch_ood.detector import GradNorm as PoodGradNorm

    from logitnorm_bench.evaluation import forward_pass, score_set
    from logitnorm_bench.plugins import get_plugins

    model = C.wrn(args.tiny).to(dev).eval()
    x = C.images(args.n, 1)
    t_pass, outs = C.timed(lambda: forward_pass(model, x, args.batch_size, dev, True), dev)
    feats, logits = outs.features.to(dev), outs.logits
    k = logits.shape[1]
    det = get_plugins().detectors.build("gradnorm")
    head = model.head
    print(f"model {C.arch_name(args.tiny)}, {args.n} images, features {tuple(feats.shape)}, K={k}; "
          f"the shared pass itself took {t_pass:.3g} s (not counted below); best of {args.repeats}")

    rows = []
    t_h, s_h = best_of(lambda: score_set(det, model, x, outs, args.batch_size, dev), dev, args.repeats)
    t_f, s_f = best_of(lambda: det._per_sample(head, feats), dev, args.repeats)
    t_loop, s_loop = best_of(lambda: openood_loop(head, feats, det.temperature), dev, max(1, args.repeats // 2))
    pood = PoodGradNorm(head, param_filter=lambda name: name == "weight", temperature=det.temperature)
    t_p, s_p = best_of(lambda: pood.predict(feats).detach(), dev, args.repeats)

    def rel(a, b):
        a, b = a.double().cpu(), b.double().cpu()
        return float(((a - b).abs() / b.abs().clamp_min(1e-12)).max())

    s_p_scaled = -k * s_p  # pytorch-ood: -(ours / K)
    rows.append(["harness score_set (closed form)", t_h, t_loop / t_h, 0.0, rel(s_h, s_p_scaled)])
    rows.append(["harness fallback (torch.func per-sample)", t_f, t_loop / t_f, rel(s_f, s_loop), rel(s_f, s_p_scaled)])
    rows.append(["OpenOOD per-sample backward loop", t_loop, 1.0, rel(s_loop, s_h), rel(s_loop, s_p_scaled)])
    rows.append(["pytorch-ood GradNorm(head, weight)", t_p, t_loop / t_p, rel(s_p_scaled, s_h), 0.0])
    rows[0][3] = rel(s_h, s_loop)
    print()
    C.table(["method", "seconds", "speed-up vs the loop", "max rel diff vs OpenOOD loop",
             "max rel diff vs pytorch-ood x K"], rows)
    print()
    C.target("closed form speed-up vs the per-sample loop", t_loop / t_h, ">=", 50, "x")
    print(f"closed form speed-up vs pytorch-ood restricted to the head: {t_p / t_h:.4g}x")
    C.target("max relative difference vs the loop", rel(s_h, s_loop), "<=", 1e-5)
    C.target("max relative difference vs pytorch-ood x K", rel(s_h, s_p_scaled), "<=", 1e-5)
    C.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
