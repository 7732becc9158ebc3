"""The evaluation engine: one shared pass per evaluation set serves every output-based detector.

For one trained model and the cells it serves:

* the ID test set gets ONE forward pass collecting logits (and penultimate features when a detector
  needs them): accuracy, ECE, temperature-scaled ECE, logit norm and every output-based detector's
  ID scores come from it, once per training run, not once per OOD set;
* each OOD set (a seeded sample) gets one such pass too;
* detectors that need input gradients (ODIN, GODIN) do their own pass, also once per set;
* detectors that fit or tune do so once per run, on ID data only: the outputs on the ID training
  images are computed once per trained model, cached beside the run, and shared by every fitted
  detector (:class:`~logitnorm_bench.components.FitData`);
* a detector gets penultimate features only if it declared ``needs_features``;
* every cell's raw scores are returned for the record (``scores``), so any metric can be recomputed.

A set larger than ``stream_above_mb`` (:class:`~logitnorm_bench.suite.Loading`) is streamed
(:mod:`logitnorm_bench.loading`): every pass above reads it batch by batch, and only the per-image
outputs (logits, features when asked for, labels, scores) are kept; the results are bitwise those
of the in-memory path.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from logitnorm_bench import metrics
from logitnorm_bench.components import DataContext, FitData, FitOutputs, ModelOutputs
from logitnorm_bench.plan import source_key
from logitnorm_bench.loading import ImageSet, InMemory, batches_of, image_set, subset
from logitnorm_bench.suite import Loading


@torch.no_grad()
def forward_pass(model: nn.Module, x, batch_size: int, device: torch.device,
                 with_features: bool) -> ModelOutputs:
    """Logits (and features) of ``x``: a tensor of images or an :class:`~logitnorm_bench.loading.ImageSet`."""
    logits, feats = [], []
    for xb in batches_of(x, batch_size):
        xb = xb.to(device, non_blocking=True)
        f = model.features(xb)
        logits.append(model.head(f).float().cpu())
        if with_features:
            feats.append(f.float().cpu())
    return ModelOutputs(torch.cat(logits), torch.cat(feats) if with_features else None)


SCORES_CONTRACT = "a detector returns a 1-D float tensor, one score per input, higher = more in-distribution"


def score_set(detector, model: nn.Module, x, outputs: ModelOutputs, batch_size: int,
              device: torch.device) -> torch.Tensor:
    """Scores of one detector on one set: from the shared outputs, or with its own input pass over ``x``
    (a tensor of images or an :class:`~logitnorm_bench.loading.ImageSet`, read again only then)."""
    chunks = []
    method = f"{type(detector).__name__}.{'score_inputs' if detector.needs_input_grad else 'score_outputs'}"
    if detector.needs_input_grad:
        for xb in batches_of(x, batch_size):
            chunks.append(as_scores(detector.score_inputs(model, xb.to(device)), xb.shape[0], method))
    else:
        # Features only for a detector that asked for them (another one's request must not leak to it).
        with_features = bool(detector.needs_features) and outputs.features is not None
        n = outputs.logits.shape[0]
        for i in range(0, n, batch_size):
            feats = outputs.features[i:i + batch_size].to(device) if with_features else None
            s = detector.score_outputs(ModelOutputs(outputs.logits[i:i + batch_size].to(device), feats), model)
            chunks.append(as_scores(s, min(batch_size, n - i), method))
    scores = torch.cat(chunks)
    if not torch.isfinite(scores).all():
        bad = int((~torch.isfinite(scores)).sum())
        raise ValueError(f"detector returned {bad} non-finite scores (NaN or inf) of {scores.shape[0]}")
    return scores


def as_scores(s, n: int, method: str) -> torch.Tensor:
    """A detector's scores for a batch of ``n`` as a 1-D float tensor on the CPU.

    A numpy array or a list of numbers is accepted and converted; anything else, or a count other
    than ``n`` (a ``(n, 1)`` column is fine), is refused with what the contract wants.
    """
    if not isinstance(s, torch.Tensor):
        what = type(s).__name__
        if not (isinstance(s, (list, tuple)) or type(s).__module__ == "numpy"):
            raise TypeError(f"{method} returned a {what}; {SCORES_CONTRACT}")
        try:
            s = torch.as_tensor(s)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"{method} returned a {what} that is not numbers ({exc}); {SCORES_CONTRACT}") from None
    if s.is_complex():
        raise TypeError(f"{method} returned {s.dtype} scores; {SCORES_CONTRACT}")
    if s.numel() != n or (s.ndim > 1 and tuple(s.shape) != (n, 1)):
        raise ValueError(f"{method} returned {s.numel()} scores for {n} inputs (shape {tuple(s.shape)}); "
                         f"{SCORES_CONTRACT}")
    return s.detach().float().cpu().reshape(-1)


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


def model_digest(model: nn.Module) -> str:
    """A hash of the model's weights and buffers: the key of the outputs cached for it."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class Evaluator:
    """Evaluates one trained model for a list of cells, yielding (cell, result) as each is ready."""

    model: nn.Module
    id_source: Any
    ctx: DataContext
    plugins: Any
    device: torch.device
    protocol: dict
    #: the ID test images, if the caller has them: (images, labels) or an ImageSet
    id_test: tuple[torch.Tensor, torch.Tensor] | ImageSet | None = None
    source_for: Any = None  #: (name[, params]) -> DatasetSource (the runner's, so smoke mode can swap them)
    cache_dir: Path | None = None  #: where the ID training outputs are cached (the run's folder)
    run_metrics: dict = field(default_factory=dict)
    loading: Loading | None = None  #: which sets are streamed (None: the defaults)

    def _images(self, ds) -> ImageSet:
        """A dataset as this evaluation reads it: in memory, or streamed when large."""
        return image_set(ds, self.id_source.input_shape, self.loading, self.device)

    def evaluate(self, cells: list) -> Iterator[tuple[Any, dict]]:
        model, dev, bs = self.model.eval().to(self.device), self.device, self.protocol["batch_size"]
        t0 = time.perf_counter()
        if self.id_test is None:
            id_x = self._images(self.id_source.build("test", self.ctx))
        else:
            id_x = self.id_test if isinstance(self.id_test, ImageSet) else InMemory(*self.id_test)
        detectors: dict[str, Any] = {}
        names: dict[str, str] = {}
        for c in cells:
            key = _det_key(c)
            if key not in detectors:
                names[key] = c.detector
                detectors[key] = self.plugins.detectors.build(c.detector, **c.detector_params)
        with_features = any(d.needs_features for d in detectors.values())
        id_out = forward_pass(model, id_x, bs, dev, with_features)
        self.run_metrics = self._id_metrics(id_out, id_x.labels())
        fit_info: dict[str, dict] = {}
        id_scores: dict[str, torch.Tensor] = {}
        errors: dict[str, str] = {}
        fit_data: FitData | None = None
        for key, det in detectors.items():
            try:
                if det.needs_fit:
                    if fit_data is None:
                        fit_data, origin = self._fit_data(
                            any(d.needs_features for d in detectors.values() if d.needs_fit))
                    fit_info[key] = dict(det.fit(_for_detector(fit_data, det)) or {},
                                         fit_data=_fit_data_facts(fit_data), id_val=origin)
                id_scores[key] = score_set(det, model, id_x, id_out, bs, dev)
            except Exception as exc:  # one broken detector must not stop the others
                errors[key] = self._describe(exc, "detectors", names[key])
        id_seconds = time.perf_counter() - t0

        by_ood: dict[tuple, list] = {}  # one OOD set = its name and its params (two image folders)
        for c in cells:
            by_ood.setdefault(source_key(c.ood_dataset, _ood_params(c)), []).append(c)
        draws = self.protocol.get("ood_draws", 1)
        for (ood_name, _), ood_cells in by_ood.items():
            t1 = time.perf_counter()
            ood_params = _ood_params(ood_cells[0])
            try:
                samples = [self._ood_images(ood_name, d, ood_params) for d in range(draws)]
                outs = [forward_pass(model, x, bs, dev, with_features) for x in samples]
            except Exception as exc:
                for c in ood_cells:
                    yield c, {"error": f"OOD set {ood_name}: {self._describe(exc, 'datasets', ood_name)}"}
                continue
            per_set = {m.name: float(sum(m.compute(o.logits) for o in outs) / draws)
                       for m in metrics.metrics_of("ood_set")}
            pass_seconds = time.perf_counter() - t1
            for c in ood_cells:
                key = _det_key(c)
                if key in errors:
                    yield c, {"error": errors[key]}
                    continue
                t2 = time.perf_counter()
                try:
                    ood_scores = [score_set(detectors[key], model, x, o, bs, dev) for x, o in zip(samples, outs)]
                    per_draw = [metrics.ood_metrics(id_scores[key], s) for s in ood_scores]
                except Exception as exc:
                    yield c, {"error": self._describe(exc, "detectors", c.detector)}
                    continue
                result = {
                    "metrics": {k: sum(m[k] for m in per_draw) / draws for k in per_draw[0]},
                    "run_metrics": dict(self.run_metrics, **per_set),
                    "detector_fit": fit_info.get(key, {}),
                    "score_hist": histogram(id_scores[key], torch.cat(ood_scores), self.protocol["score_hist_bins"]),
                    "n_id": len(id_x), "n_ood": len(samples[0]),
                    "eval_seconds": {"id_pass_and_scores": id_seconds, "ood_pass": pass_seconds,
                                     "ood_scores": time.perf_counter() - t2},
                    "scores": {"id": id_scores[key], "ood": ood_scores},
                }
                if draws > 1:
                    result["draws"] = per_draw
                yield c, result

    def _describe(self, exc: Exception, kind: str, name: str) -> str:
        """The error in one line, naming the plugin and the file:line it was raised at."""
        describe = getattr(self.plugins, "describe_error", None)
        if describe is None:
            return f"{type(exc).__name__}: {exc}"
        try:
            entry = self.plugins.registry(kind).get(name)
        except Exception:
            entry = None
        return describe(exc, entry)

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

    def _ood_images(self, name: str, draw: int = 0, params: dict | None = None) -> ImageSet:
        # Asked for params only when there are any: a source_for written before dataset params (one argument) still works.
        source = self.source_for(name, params) if params else self.source_for(name)
        if tuple(source.input_shape) != tuple(self.id_source.input_shape):
            raise ValueError(f"its images are {tuple(source.input_shape)}, the ID dataset's are "
                             f"{tuple(self.id_source.input_shape)}")
        ds = source.build("test", self.ctx)
        if len(ds) == 0:
            raise ValueError("the dataset has no items")
        idx = sample_indices(len(ds), self.protocol["ood_samples"], self.protocol["sample_seed"] + draw)
        return self._images(subset(ds, idx))

    def _fit_data(self, with_features: bool) -> tuple[FitData, dict]:
        """The ID data every fitted detector of this model shares (see :class:`FitData`), and where its
        validation images come from (for the record).

        ID validation data: the dataset's ``val`` split when it has one (its own, or the training images
        held out of training by ``train.holdout``), else a seeded sample of (un-augmented) training
        images, which the model was trained on; never test images and never OOD data.
        """
        bs = self.protocol["batch_size"]
        k = self.protocol["id_val_samples"]
        if "val" in self.id_source.splits:
            ds, split = self.id_source.build("val", self.ctx), getattr(self.id_source, "val_origin", "val")
        else:
            ds, split = self.id_source.build("train", self.ctx), "train"
        idx = sample_indices(len(ds), k, self.protocol["sample_seed"] + 1)
        val = self._images(subset(ds, idx))
        origin = {"split": split, "images": len(val), "seen_in_training": split == "train"}
        val_out = forward_pass(self.model, val, bs, self.device, with_features)
        return FitData(self.model, self.device, id_train=self._train_outputs(with_features),
                       id_val=val.dataset(),  # a streamed one is read from disk again by a detector that tunes
                       id_val_outputs=FitOutputs(val_out.logits, val.labels(), val_out.features, len(ds)),
                       batch_size=bs), origin

    def _train_outputs(self, with_features: bool) -> FitOutputs:
        """Outputs on (a seeded subsample of) the ID training images, computed once per model: cached
        in the run's folder under a key of the weights and the sample, so a rerun reads them back."""
        from logitnorm_bench.records import atomic_torch_save, load_state_or_set_aside

        k, seed = self.protocol.get("fit_train_samples"), self.protocol["sample_seed"] + 2
        path = None
        if self.cache_dir is not None:
            key = hashlib.sha256(f"{model_digest(self.model)}/{k}/{seed}".encode()).hexdigest()[:16]
            path = Path(self.cache_dir) / f"fit-outputs-{key}.pt"
            cached = load_state_or_set_aside(path)
            if cached is not None and (cached["features"] is not None or not with_features):
                return FitOutputs(cached["logits"], cached["labels"], cached["features"], int(cached["total"]))
        ds = self.id_source.build("train", self.ctx)
        idx = sample_indices(len(ds), k, seed)
        x = self._images(subset(ds, idx))
        out = forward_pass(self.model, x, self.protocol["batch_size"], self.device, with_features)
        fit = FitOutputs(out.logits, x.labels(), out.features, len(ds))
        del x
        if path is not None:
            atomic_torch_save(path, {"logits": fit.logits, "labels": fit.labels, "features": fit.features,
                                     "total": fit.total})
        return fit


def _for_detector(data: FitData, det) -> FitData:
    """The shared FitData as one detector may see it: features only if it declared ``needs_features``."""
    if det.needs_features:
        return data
    return FitData(data.model, data.device,
                   id_train=data.id_train.without_features() if data.id_train is not None else None,
                   id_val=data.id_val,
                   id_val_outputs=data.id_val_outputs.without_features() if data.id_val_outputs else None,
                   batch_size=data.batch_size, extra=data.extra)


def _fit_data_facts(data: FitData) -> dict:
    """What a fitted detector was given, for its record: sizes, never silently a sample."""
    return {"id_train_samples": int(data.id_train.labels.shape[0]) if data.id_train is not None else 0,
            "id_train_total": data.id_train.total if data.id_train is not None else 0,
            "id_val_samples": len(data.id_val) if data.id_val is not None else 0}


def _ood_params(cell) -> dict:
    """A cell's OOD dataset params; a cell made by hand (benchmarks, the API) may not have the field."""
    return getattr(cell, "ood_dataset_params", None) or {}


def _det_key(cell) -> str:
    return f"{cell.detector}:{sorted(cell.detector_params.items())}"
