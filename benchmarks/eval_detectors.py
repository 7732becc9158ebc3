"""Issue 5, target 1: the four detectors through the harness vs pytorch-ood's, each called separately.

N ID + N OOD random CIFAR-shaped images, WRN-40-2 (random init), CPU.  Measured in one run, side by
side, in units of one plain forward pass over the same 2N images (``model(x)`` under ``no_grad``,
same batch size):

* separately: pytorch-ood's ``MaxSoftmax``, ``EnergyBased`` (under ``no_grad``), ``ODIN`` (eps 0.0014,
  T 1000, ``norm_std``) and ``GradNorm`` (``param_filter``: the head's weight only), each called on
  every batch of both sets, on the un-wrapped network with normalised inputs (the official setup);
* the floor: one shared forward + pytorch-ood's ODIN pass;
* the harness: ``Evaluator.evaluate`` (the runner's engine: shared pass, scores, ID metrics, OOD
  metrics, histograms) with cells msp, energy, odin, gradnorm; and its pieces (``forward_pass`` +
  ``score_set`` per detector) for the breakdown.

Also checks that the harness's scores equal pytorch-ood's (sign flipped; GradNorm times K).

    python benchmarks/eval_detectors.py --threads 2 --n 256
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

import _common as C  # noqa: E402

DETECTORS = ("msp", "energy", "odin", "gradnorm")


class ArraySource:
    """A DatasetSource over in-memory tensors."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, num_classes: int):
        self.x, self.y, self.num_classes = x, y, num_classes
        self.input_shape = tuple(x.shape[1:])
        self.mean, self.std = C.CIFAR_MEAN, C.CIFAR_STD
        self.splits = ("test",)

    def build(self, split, ctx):
        return TensorDataset(self.x, self.y)


def make_evaluator(model, id_x, id_y, ood_sets: dict, batch_size: int, device):
    from logitnorm_bench.components import DataContext
    from logitnorm_bench.evaluation import Evaluator
    from logitnorm_bench.plugins import get_plugins
    from logitnorm_bench.suite import EvalProtocol

    def source_for(name):  # looked up when the Evaluator asks for the set
        x = ood_sets[name]
        return ArraySource(x, torch.full((x.shape[0],), -1), 0)

    protocol = asdict(EvalProtocol(ood_samples=None, batch_size=batch_size))
    return Evaluator(model, ArraySource(id_x, id_y, 10), DataContext(root=Path(".")), get_plugins(), device,
                     protocol, source_for=source_for)


def cells(detectors, ood_names):
    return [SimpleNamespace(detector=d, detector_params={}, ood_dataset=o) for o in ood_names for d in detectors]


def batches(x: torch.Tensor, bs: int):
    for i in range(0, x.shape[0], bs):
        yield x[i:i + bs]


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=256, help="ID images, and as many OOD images (default 256)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=1, help="run everything this many times; keep each minimum")
    args = p.parse_args(argv)
    if args.tiny:
        args.n, args.batch_size = 16, 8
    dev = C.setup(args, "Evaluation: four detectors, harness vs pytorch-ood called separately")

    from pytorch_ood.detector import ODIN, EnergyBased, GradNorm, MaxSoftmax

    from logitnorm_bench.evaluation import forward_pass, score_set
    from logitnorm_bench.plugins import get_plugins

    model = C.wrn(args.tiny).to(dev).eval()
    net, k = model.net, 10
    mean, std = model.mean, model.std
    id_x, ood_x = C.images(args.n, 1), C.images(args.n, 2) * 0.6 + 0.2
    id_y = torch.randint(0, k, (args.n,), generator=torch.Generator().manual_seed(3))
    sets = (id_x, ood_x)
    bs = args.batch_size
    print(f"model {C.arch_name(args.tiny)}, {args.n} ID + {args.n} OOD images (random), batch size {bs}, "
          f"repeats {args.repeats} (minimum kept)")

    def plain():
        with torch.no_grad():
            return [model(xb.to(dev)) for x in sets for xb in batches(x, bs)]

    pood = {
        "msp": (MaxSoftmax(net), True),
        "energy": (EnergyBased(net), True),
        "odin": (ODIN(net, eps=0.0014, temperature=1000.0, norm_std=list(C.CIFAR_STD)), False),
        "gradnorm": (GradNorm(net, param_filter=lambda name: name == "fc.weight"), False),
    }

    def separately(name):
        det, no_grad = pood[name]

        def run():
            out = []
            for x in sets:
                for xb in batches(x, bs):
                    xn = (xb.to(dev) - mean) / std
                    if no_grad:
                        with torch.no_grad():
                            out.append(det.predict(xn))
                    else:
                        out.append(det.predict(xn).detach())
            return torch.cat(out)
        return run

    ev = make_evaluator(model, id_x, id_y, {"ood": ood_x}, bs, dev)

    def harness():
        return list(ev.evaluate(cells(DETECTORS, ["ood"])))

    plugins = get_plugins()
    dets = {name: plugins.detectors.build(name) for name in DETECTORS}

    def shared_pass():
        return [forward_pass(model, x, bs, dev, True) for x in sets]

    # warm-up (allocator, oneDNN primitive caches, autograd): one forward, one input-gradient pass
    with torch.no_grad():
        model(id_x[:bs].to(dev))
    score_set(dets["odin"], model, id_x[:bs], None, bs, dev)

    times: dict[str, float] = {}
    scores: dict[str, torch.Tensor] = {}
    harness_scores: dict[str, torch.Tensor] = {}
    for _ in range(args.repeats):
        rec = {}
        rec["plain forward"], _ = C.timed(plain, dev)
        for name in DETECTORS:
            rec[f"pytorch-ood {name}"], scores[name] = C.timed(separately(name), dev)
        rec["harness Evaluator.evaluate"], results = C.timed(harness, dev)
        rec["harness shared pass (forward_pass)"], outs = C.timed(shared_pass, dev)
        for name in DETECTORS:
            rec[f"harness score_set {name}"], s = C.timed(
                lambda name=name, outs=outs: torch.cat([score_set(dets[name], model, x, o, bs, dev)
                                                        for x, o in zip(sets, outs)]), dev)
            harness_scores[name] = s
        for key, v in rec.items():
            times[key] = min(v, times.get(key, float("inf")))
        errors = [r["error"] for _, r in results if "error" in r]
        if errors:
            raise SystemExit(f"harness evaluation failed: {errors}")

    unit = times["plain forward"]
    sep_total = sum(times[f"pytorch-ood {n}"] for n in DETECTORS)
    floor = unit + times["pytorch-ood odin"]
    h_total = times["harness Evaluator.evaluate"]
    pieces = times["harness shared pass (forward_pass)"] + sum(times[f"harness score_set {n}"] for n in DETECTORS)
    rows = [[key, v, v / unit] for key, v in times.items()]
    rows.insert(1 + len(DETECTORS), ["pytorch-ood, four called separately (sum)", sep_total, sep_total / unit])
    rows.insert(2 + len(DETECTORS), ["floor: one forward + pytorch-ood ODIN", floor, floor / unit])
    rows.append(["harness pieces (sum)", pieces, pieces / unit])
    print()
    C.table(["what", "seconds", "units of one plain forward"], rows)

    # The same scores: ours are higher = more ID (pytorch-ood's are the opposite); gradnorm is K x.
    print()
    factor = {"msp": -1.0, "energy": -1.0, "odin": -1.0, "gradnorm": -float(k)}
    agree = []
    for name in DETECTORS:
        ref = scores[name].double().cpu() * factor[name]
        ours = harness_scores[name].double()
        rel = float(((ours - ref).abs() / ref.abs().clamp_min(1e-12)).max())
        agree.append([name, rel])
    C.table(["detector", "max relative difference, harness vs pytorch-ood"], agree)
    print()
    C.target("harness / floor", h_total / floor, "<=", 1.1, "x")
    C.target("separately / harness", sep_total / h_total, ">=", 1.5, "x")
    C.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
