"""Every registered pytorch-ood detector: the harness's one evaluation vs pytorch-ood called detector by detector.

One model (WRN-40-2, random init; WRN-10-1 with ``--tiny``), N_train training images, N ID test images and
``--ood-sets`` OOD sets of N images (random, CIFAR-shaped), CPU by default.  Measured in one run, side by side:

* the harness: ``Evaluator.evaluate`` with one cell per (detector, OOD set) for all 27 detectors of the
  ``pytorch_ood`` plugin: one forward pass over the training images (the shared ``FitData``), one over the
  validation sample, one per evaluation set, the fits, the scores and every metric;
* pytorch-ood, one detector at a time, as its documentation shows: the detector built on the model,
  ``fit(loader)`` over the training images (validation images for KL matching and temperature scaling: the
  sets the harness fits them on), ``predict`` over every batch of every set, and the same metrics
  (``logitnorm_bench.metrics.ood_metrics``) -- each detector with its own passes.

Both sides use the same settings for the detectors that run the model themselves (MC dropout's ``samples``,
GradUncertainty's parameters: ``--mcd-samples``, the head only), so their extra passes cost the same on both.
Also checks that the two give the same scores (sign flipped).

    python benchmarks/pytorch_ood_detectors.py --threads 2
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import _common as C  # noqa: E402


class Source:
    """A DatasetSource over in-memory tensors: ``train``/``test`` for ID data, ``test`` for an OOD set."""

    def __init__(self, splits: dict[str, tuple[torch.Tensor, torch.Tensor]], num_classes: int):
        self.data, self.num_classes = splits, num_classes
        self.input_shape = tuple(next(iter(splits.values()))[0].shape[1:])
        self.mean, self.std = C.CIFAR_MEAN, C.CIFAR_STD
        self.splits = tuple(splits)

    def build(self, split, ctx):
        return TensorDataset(*self.data[split])


class WithProbe(torch.nn.Module):
    """The model with its penultimate features as a layer of their own (the layer NACUE hooks)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.probe = model, torch.nn.Identity()

    def forward(self, x):
        return self.model.head(self.probe(self.model.features(x)))


def direct_detector(name: str, model, mcd_samples: int, vim_d: int):
    """(pytorch-ood's detector on the whole model, the loader split it is fitted on or None)."""
    from pytorch_ood import detector as pd

    f, head = model.features, model.head
    pooled = (lambda x: f(x)[:, :, None, None]), (lambda maps: head(maps.flatten(1)))
    if name == "nac":
        probed = WithProbe(model)
        return pd.NACUE(probed, layers=[probed.probe]), "train"
    return {
        "max_logit": lambda: (pd.MaxLogit(model), None), "entropy": lambda: (pd.Entropy(model), None),
        "gen": lambda: (pd.GEN(model), None), "weighted_ebo": lambda: (pd.WeightedEBO(model, torch.ones(10)), None),
        "klmatching": lambda: (pd.KLMatching(model), "val"), "openmax": lambda: (pd.OpenMax(model), "train"),
        "temperature": lambda: (pd.TemperatureScaling(model), "val"),
        "mahalanobis": lambda: (pd.Mahalanobis(f), "train"), "rmd": lambda: (pd.RMD(f), "train"),
        "gmm": lambda: (pd.GMM(f), "train"),
        "vim": lambda: (pd.ViM(f, d=vim_d, w=head.weight, b=head.bias), "train"), "knn": lambda: (pd.KNN(f), "train"),
        "she": lambda: (pd.SHE(f, head), "train"),
        "dice": lambda: (pd.DICE(f, w=head.weight, b=head.bias, p=0.9), "train"),
        "fdbd": lambda: (pd.fDBD(f, head), "train"), "nci": lambda: (pd.NCI(f, head), "train"),
        "nnguide": lambda: (pd.NNGuide(f, head), "train"), "pnml": lambda: (pd.PNML(f, head), "train"),
        "lts": lambda: (pd.LTS(f, head), None), "react": lambda: (pd.ReAct(f, head), "train"),
        "vra": lambda: (pd.VRA(f, head), "train"), "ash": lambda: (pd.ASH(*pooled), None),
        "scale": lambda: (pd.SCALE(*pooled), None), "mcd": lambda: (pd.MCD(model, samples=mcd_samples), None),
        "mahalanobis_odin": lambda: (pd.MahalanobisODIN(f), "train"),
        "grad_uncertainty": lambda: (pd.GradUncertainty(model, param_filter=lambda n: n.startswith("net.fc.")),
                                     None),
    }[name]()


def nearest_mean_head(model, x: torch.Tensor, y: torch.Tensor, k: int) -> None:
    """Set the random-init model's head to the nearest-class-mean classifier of its features (so that it
    predicts every class, as a trained model does; its logits have a standard deviation of about 5)."""
    with torch.no_grad():
        f = model.features(x)
        mu = torch.stack([f[y == c].mean(0) for c in range(k)])
        w, b = mu, -0.5 * (mu * mu).sum(1)
        scale = 5.0 / float((f @ w.T + b).std())
        model.head.weight.copy_(scale * w)
        model.head.bias.copy_(scale * b)


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--n-train", type=int, default=256, help="training images the fitted detectors use (default 256)")
    p.add_argument("--n", type=int, default=128, help="ID test images, and as many per OOD set (default 128)")
    p.add_argument("--ood-sets", type=int, default=2, help="OOD sets (default 2)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--mcd-samples", type=int, default=4, help="MC dropout's forward passes, both sides (default 4)")
    args = p.parse_args(argv)
    if args.tiny:
        args.n_train, args.n, args.ood_sets, args.batch_size, args.mcd_samples = 64, 32, 1, 16, 2
    dev = C.setup(args, "pytorch-ood's detectors: the harness's one evaluation vs pytorch-ood detector by detector")

    from logitnorm_bench import metrics
    from logitnorm_bench.components import DataContext
    from logitnorm_bench.evaluation import Evaluator
    from logitnorm_bench.plugins import get_plugins
    from logitnorm_bench.suite import EvalProtocol
    from ood_bench_pytorch_ood.detectors import DETECTORS

    torch.manual_seed(0)
    model = C.wrn(args.tiny).to(dev).eval()
    k, bs = 10, args.batch_size
    protos = C.images(k, 7)  # one random image per class; the images are a prototype plus noise

    def id_images(n, seed):
        y = torch.arange(n) % k
        return 0.5 * protos[y] + 0.5 * C.images(n, seed), y

    train, test = id_images(args.n_train, 1), id_images(args.n, 2)
    n_val = max(k, args.n_train // 4)
    val = id_images(n_val, 5)
    ood = {f"ood{i}": C.images(args.n, 10 + i) * 0.6 + 0.2 for i in range(args.ood_sets)}
    nearest_mean_head(model, train[0].to(dev), train[1].to(dev), k)
    with torch.no_grad():
        acc = float((model(test[0].to(dev)).argmax(1).cpu() == test[1]).float().mean())
        dim = model.features(test[0][:2].to(dev)).shape[1]
    vim_d = min(64, dim // 2)
    print(f"model {C.arch_name(args.tiny)}, {args.n_train} training + {n_val} validation images, {args.n} ID test "
          f"images, {args.ood_sets} OOD set(s) of {args.n}, batch size {bs}, {len(DETECTORS)} detectors; "
          f"MC dropout {args.mcd_samples} samples, GradUncertainty on the head's parameters, ViM d={vim_d} (both "
          f"sides); the random-init model with a nearest-class-mean head: ID test accuracy {acc:.2f}")

    id_source = Source({"train": train, "val": val, "test": test}, k)
    ood_sources = {name: Source({"test": (x, torch.full((x.shape[0],), -1))}, 0) for name, x in ood.items()}
    protocol = asdict(EvalProtocol(ood_samples=None, batch_size=bs, id_val_samples=n_val))
    evaluator = Evaluator(model, id_source, DataContext(root=Path(".")), get_plugins(), dev, protocol,
                          source_for=ood_sources.__getitem__)
    det_params = {name: {} for name in DETECTORS}
    det_params["mcd"] = {"samples": args.mcd_samples}
    det_params["grad_uncertainty"] = {"params": "^net\\.fc\\."}
    det_params["vim"] = {"d": vim_d}
    cells = [SimpleNamespace(detector=d, detector_params=det_params[d], ood_dataset=o) for o in ood for d in DETECTORS]

    def harness():
        results = list(evaluator.evaluate(cells))
        errors = {c.detector: r["error"] for c, r in results if "error" in r}
        if errors:
            raise SystemExit(f"harness evaluation failed: {errors}")
        return results

    loaders = {"train": DataLoader(TensorDataset(*train), batch_size=bs),
               "val": DataLoader(TensorDataset(*val), batch_size=bs)}

    def one(name):
        """One pytorch-ood detector on its own: built, fitted with its own passes, every set scored."""
        def run():
            det, split = direct_detector(name, model, args.mcd_samples, vim_d)
            det.to(dev)
            if split is not None:
                det.fit(loaders[split])
            out = {}
            for set_name, x in (("id", test[0]), *ood.items()):
                chunks = []
                for i in range(0, x.shape[0], bs):
                    if name == "mcd":
                        torch.manual_seed(0)
                    chunks.append(det.predict(x[i:i + bs].to(dev)).detach().float().cpu().reshape(-1))
                out[set_name] = -torch.cat(chunks)
            for set_name in ood:
                if all(torch.isfinite(out[k]).all() for k in ("id", set_name)):  # see the overflow note below
                    metrics.ood_metrics(out["id"], out[set_name])
            return out
        return run

    # warm-up (allocator, oneDNN primitive caches)
    with torch.no_grad():
        model(test[0][:bs].to(dev))

    t_harness, results = C.timed(harness, dev)
    times, scores = {}, {}
    for name in DETECTORS:
        times[name], scores[name] = C.timed(one(name), dev)
    t_direct = sum(times.values())

    rows = [[f"pytorch-ood {name}", times[name]] for name in DETECTORS]
    rows.append(["pytorch-ood, all detectors one by one (sum)", t_direct])
    rows.append(["harness: Evaluator.evaluate, all detectors", t_harness])
    print()
    C.table(["what", "seconds"], rows)

    # The same scores, sign flipped.
    # Compared where pytorch-ood's score is finite: its weighted_ebo computes log(sum(w e^f)), which
    # overflows for logits above ~88; the harness's log-sum-exp does not (those scores are counted apart).
    worst, overflowed = 0.0, {}
    for c, r in results:
        for ours, theirs in ((r["scores"]["id"], scores[c.detector]["id"]),
                             (r["scores"]["ood"][0], scores[c.detector][c.ood_dataset])):
            finite = torch.isfinite(theirs)
            if not finite.all():
                overflowed[c.detector] = overflowed.get(c.detector, 0) + int((~finite).sum())
                assert torch.isfinite(ours).all(), c.detector
            if finite.any():
                scale = float(theirs[finite].abs().max()) or 1.0
                worst = max(worst, float((ours[finite] - theirs[finite]).abs().max()) / scale)
    print()
    print(f"largest score difference, harness vs pytorch-ood, relative to the largest score: {worst:.3g}")
    if overflowed:
        print("scores where pytorch-ood overflowed to inf (the harness's are finite): "
              + ", ".join(f"{k} {v}" for k, v in sorted(overflowed.items())))
    print(f"ratio pytorch-ood one by one / harness: {t_direct / t_harness:.2f}x")
    C.target("one by one / harness", t_direct / t_harness, ">=", 2.0, "x")
    C.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
