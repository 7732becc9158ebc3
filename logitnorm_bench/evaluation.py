"""The evaluation engine: one shared pass per evaluation set serves every output-based detector.

For one trained model and the cells it serves:

* the ID test set gets ONE forward pass collecting logits (and penultimate features when a detector
  needs them): accuracy, ECE, temperature-scaled ECE, logit norm and every output-based detector's
  ID scores come from it, once per training run, not once per OOD set;
* each OOD set (a seeded sample) gets one such pass too;
* detectors that need input gradients (ODIN, GODIN) do their own pass, also once per set;
* detectors that fit or tune do so once per run, on ID data only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn
from torch.utils.data import Subset, TensorDataset

from logitnorm_bench import metrics
from logitnorm_bench.components import DataContext, FitData, ModelOutputs
from logitnorm_bench.train import materialize


@torch.no_grad()
def forward_pass(model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device,
                 with_features: bool) -> ModelOutputs:
    logits, feats = [], []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i:i + batch_size].to(device, non_blocking=True)
        f = model.features(xb)
        logits.append(model.head(f).float().cpu())
        if with_features:
            feats.append(f.float().cpu())
    return ModelOutputs(torch.cat(logits), torch.cat(feats) if with_features else None)


def score_set(detector, model: nn.Module, x: torch.Tensor, outputs: ModelOutputs, batch_size: int,
              device: torch.device) -> torch.Tensor:
    """Scores of one detector on one set: from the shared outputs, or with its own input pass."""
    chunks = []
    for i in range(0, x.shape[0], batch_size):
        if detector.needs_input_grad:
            s = detector.score_inputs(model, x[i:i + batch_size].to(device))
        else:
            feats = outputs.features[i:i + batch_size].to(device) if outputs.features is not None else None
            s = detector.score_outputs(ModelOutputs(outputs.logits[i:i + batch_size].to(device), feats), model)
        chunks.append(s.detach().float().cpu().reshape(-1))
    scores = torch.cat(chunks)
    if scores.shape[0] != x.shape[0]:
        raise ValueError(f"detector returned {scores.shape[0]} scores for {x.shape[0]} inputs")
    if not torch.isfinite(scores).all():
        bad = int((~torch.isfinite(scores)).sum())
        raise ValueError(f"detector returned {bad} non-finite scores (NaN or inf) of {scores.shape[0]}")
    return scores


def sample_indices(n: int, k: int | None, seed: int) -> torch.Tensor:
    """A seeded sample of k of n indices (sorted), or all of them."""
    if k is None or k >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].sort().values


def histogram(id_scores: torch.Tensor, ood_scores: torch.Tensor, bins: int) -> dict:
    lo = float(min(id_scores.min(), ood_scores.min()))
    hi = float(max(id_scores.max(), ood_scores.max()))
    if hi <= lo:
        hi = lo + 1e-6
    return {"edges": torch.linspace(lo, hi, bins + 1).tolist(),
            "id": torch.histc(id_scores, bins, lo, hi).int().tolist(),
            "ood": torch.histc(ood_scores, bins, lo, hi).int().tolist()}


@dataclass
class Evaluator:
    """Evaluates one trained model for a list of cells, yielding (cell, result) as each is ready."""

    model: nn.Module
    id_source: Any
    ctx: DataContext
    plugins: Any
    device: torch.device
    protocol: dict
    id_test: tuple[torch.Tensor, torch.Tensor] | None = None  #: the ID test images, if the caller has them
    source_for: Any = None  #: name -> DatasetSource (the runner's, so smoke mode can swap them)
    run_metrics: dict = field(default_factory=dict)

    def evaluate(self, cells: list) -> Iterator[tuple[Any, dict]]:
        model, dev, bs = self.model.eval().to(self.device), self.device, self.protocol["batch_size"]
        t0 = time.perf_counter()
        id_x, id_y = self.id_test or materialize(self.id_source.build("test", self.ctx))
        detectors: dict[str, Any] = {}
        for c in cells:
            key = _det_key(c)
            if key not in detectors:
                detectors[key] = self.plugins.detectors.build(c.detector, **c.detector_params)
        with_features = any(d.needs_features for d in detectors.values())
        id_out = forward_pass(model, id_x, bs, dev, with_features)
        self.run_metrics = self._id_metrics(id_out, id_y)
        fit_info: dict[str, dict] = {}
        id_scores: dict[str, torch.Tensor] = {}
        errors: dict[str, str] = {}
        for key, det in detectors.items():
            try:
                if det.needs_fit:
                    fit_data, origin = self._fit_data()
                    fit_info[key] = dict(det.fit(fit_data), id_val=origin)
                id_scores[key] = score_set(det, model, id_x, id_out, bs, dev)
            except Exception as exc:  # one broken detector must not stop the others
                errors[key] = f"{type(exc).__name__}: {exc}"
        id_seconds = time.perf_counter() - t0

        by_ood: dict[str, list] = {}
        for c in cells:
            by_ood.setdefault(c.ood_dataset, []).append(c)
        for ood_name, ood_cells in by_ood.items():
            t1 = time.perf_counter()
            try:
                ood_x = self._ood_images(ood_name)
                ood_out = forward_pass(model, ood_x, bs, dev, with_features)
            except Exception as exc:
                for c in ood_cells:
                    yield c, {"error": f"OOD set {ood_name}: {type(exc).__name__}: {exc}"}
                continue
            per_set = {m.name: float(m.compute(ood_out.logits)) for m in metrics.metrics_of("ood_set")}
            pass_seconds = time.perf_counter() - t1
            for c in ood_cells:
                key = _det_key(c)
                if key in errors:
                    yield c, {"error": errors[key]}
                    continue
                t2 = time.perf_counter()
                try:
                    ood_scores = score_set(detectors[key], model, ood_x, ood_out, bs, dev)
                    m = metrics.ood_metrics(id_scores[key], ood_scores)
                except Exception as exc:
                    yield c, {"error": f"{type(exc).__name__}: {exc}"}
                    continue
                yield c, {
                    "metrics": m,
                    "run_metrics": dict(self.run_metrics, **per_set),
                    "detector_fit": fit_info.get(key, {}),
                    "score_hist": histogram(id_scores[key], ood_scores, self.protocol["score_hist_bins"]),
                    "n_id": int(id_x.shape[0]), "n_ood": int(ood_x.shape[0]),
                    "eval_seconds": {"id_pass_and_scores": id_seconds, "ood_pass": pass_seconds,
                                     "ood_scores": time.perf_counter() - t2},
                }

    def _id_metrics(self, out: ModelOutputs, labels: torch.Tensor) -> dict:
        result = {}
        for m in metrics.metrics_of("run"):
            value = m.compute(out.logits, labels, self.protocol)
            if isinstance(value, tuple):  # (value, extra facts for the record), e.g. ECE's fitted temperatures
                value, extra = value
                result.update(extra)
            result[m.name] = float(value)
        result["chance_acc"] = 1.0 / out.logits.shape[1]
        return result

    def _ood_images(self, name: str) -> torch.Tensor:
        source = self.source_for(name)
        if tuple(source.input_shape) != tuple(self.id_source.input_shape):
            raise ValueError(f"its images are {tuple(source.input_shape)}, the ID dataset's are "
                             f"{tuple(self.id_source.input_shape)}")
        ds = source.build("test", self.ctx)
        if len(ds) == 0:
            raise ValueError("the dataset has no items")
        idx = sample_indices(len(ds), self.protocol["ood_samples"], self.protocol["sample_seed"])
        x, _ = materialize(Subset(ds, idx.tolist()) if len(idx) < len(ds) else ds)
        return x

    def _fit_data(self) -> tuple[FitData, dict]:
        """ID validation data for detectors that tune, and where it comes from (for the record).

        The dataset's ``val`` split when it has one (its own, or the training images held out of
        training by ``train.holdout``), else a seeded sample of (un-augmented) training images,
        which the model was trained on; never test images and never OOD data.
        """
        k = self.protocol["id_val_samples"]
        if "val" in self.id_source.splits:
            ds, split = self.id_source.build("val", self.ctx), getattr(self.id_source, "val_origin", "val")
        else:
            ds, split = self.id_source.build("train", self.ctx), "train"
        idx = sample_indices(len(ds), k, self.protocol["sample_seed"] + 1)
        x, y = materialize(Subset(ds, idx.tolist()))
        origin = {"split": split, "images": int(x.shape[0]), "seen_in_training": split == "train"}
        return FitData(self.model, None, TensorDataset(x, y), self.device, self.protocol["batch_size"]), origin


def _det_key(cell) -> str:
    return f"{cell.detector}:{sorted(cell.detector_params.items())}"
