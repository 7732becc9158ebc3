"""Issue 5, target 5: peak memory of one evaluation, 10,000 ID images + six 2,000-image OOD sets.

``Evaluator.evaluate`` (the runner's engine) on a WRN-40-2 (random init) with random CIFAR-shaped
tensors as the ID test set and six OOD sets, detectors msp, energy, odin, gradnorm (one cell per
detector and OOD set), CPU.  Prints the peak resident set size from ``resource.getrusage``
(``ru_maxrss``) before and after, and the time.  The full size takes a while on a CPU (about
25 WRN-40-2 forward passes' worth of 10,000 images, since ODIN does three); run it once, not in CI.

    python benchmarks/memory_eval.py --threads 2
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import _common as C  # noqa: E402
from eval_detectors import DETECTORS, cells, make_evaluator  # noqa: E402


class LazyImages(dict):
    """OOD sets made when the Evaluator asks for one (as a dataset loads from disk), not all up front."""

    def __init__(self, names, n):
        super().__init__()
        self.names, self.n = list(names), n

    def __missing__(self, name):
        return C.images(self.n, 100 + self.names.index(name)) * 0.6 + 0.2


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--n-id", type=int, default=10_000)
    p.add_argument("--n-ood", type=int, default=2_000)
    p.add_argument("--ood-sets", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=256, help="the evaluation protocol's (default 256)")
    p.add_argument("--detectors", default=",".join(DETECTORS))
    p.add_argument("--limit-gib", type=float, default=4.0)
    args = p.parse_args(argv)
    if args.tiny:
        args.n_id, args.n_ood, args.ood_sets, args.batch_size = 24, 8, 2, 8
    dev = C.setup(args, "Memory: one evaluation, peak RSS")

    from ood_bench_paper import architectures  # noqa: F401  (imports done before the baseline)

    from logitnorm_bench.evaluation import Evaluator  # noqa: F401

    model = C.wrn(args.tiny).to(dev).eval()
    dets = args.detectors.split(",")
    names = [f"ood{i}" for i in range(args.ood_sets)]
    id_x = C.images(args.n_id, 1)
    id_y = torch.randint(0, 10, (args.n_id,), generator=torch.Generator().manual_seed(3))
    ev = make_evaluator(model, id_x, id_y, LazyImages(names, args.n_ood), args.batch_size, dev)
    ev.protocol["ood_samples"] = args.n_ood  # as the paper's protocol: 2,000 per OOD set
    rss_before = C.peak_rss_gib()
    print(f"model {C.arch_name(args.tiny)}, {args.n_id} ID images + {args.ood_sets} x {args.n_ood} OOD images "
          f"(random), detectors {','.join(dets)}, batch size {args.batch_size}; data held: ID "
          f"{id_x.numel() * 4 / 2**20:.0f} MiB, one OOD set at a time "
          f"{args.n_ood * id_x[0].numel() * 4 / 2**20:.0f} MiB")
    t0 = time.perf_counter()
    n_ok, n_cells = 0, 0
    for _, result in ev.evaluate(cells(dets, names)):
        n_cells += 1
        if "error" in result:
            raise SystemExit(f"evaluation failed: {result['error']}")
        n_ok += 1
    seconds = time.perf_counter() - t0
    peak = C.peak_rss_gib()
    print()
    C.table(["what", "value"], [
        ["cells evaluated", f"{n_ok}/{n_cells}"],
        ["seconds", seconds],
        ["peak RSS before evaluating (imports, model, ID images), GiB", rss_before],
        ["peak RSS after evaluating (ru_maxrss), GiB", peak],
    ])
    print()
    C.target("peak RSS", peak, "<=", args.limit_gib, " GiB")
    C.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
