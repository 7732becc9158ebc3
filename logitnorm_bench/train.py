"""Training: the recipe of a suite applied to one TrainingRun, resumable from its last checkpoint.

The training set is held as one tensor and augmented per batch with tensor ops (random crop with
zero padding + horizontal flip, like torchvision's ``RandomCrop(32, padding=4)`` and
``RandomHorizontalFlip``).  That is the same code on CPU and GPU, needs no DataLoader workers for
CIFAR-sized data, and makes every random draw come from one seeded generator that a checkpoint
saves, so a resumed run gives the same weights as an uninterrupted one.

A training set too large to hold in memory is streamed (:mod:`logitnorm_bench.loading`): each
epoch's batches are still cut from the generator's permutation and augmented here, in the same
order; a DataLoader only fetches each batch's un-augmented images by index, so the weights are
bitwise those of the in-memory path.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from logitnorm_bench.components import Normalized
from logitnorm_bench.loading import InMemory, as_image_set
from logitnorm_bench.records import atomic_torch_save, load_state_or_set_aside


class DivergedError(RuntimeError):
    """The loss became NaN or infinite."""


def materialize(ds: Dataset, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """A dataset as two tensors (images, labels), loaded once."""
    if isinstance(ds, TensorDataset) and len(ds.tensors) >= 2:
        return ds.tensors[0].float(), ds.tensors[1].long()
    if len(ds) == 0:
        raise ValueError("the dataset has no items")
    xs, ys = [], []
    for x, y in DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0):
        xs.append(x.float())
        ys.append(torch.as_tensor(y).long())
    return torch.cat(xs), torch.cat(ys)


def augment(x: torch.Tensor, padding: int, hflip: bool, gen: torch.Generator) -> torch.Tensor:
    """Random crop (zero padding) and horizontal flip of a batch, one draw per image.

    Draws, in this order and from ``gen`` only: the crops' row offsets, their column offsets (when
    ``padding > 0``), then the flips (when ``hflip``).  Crop and flip are then one gather from the
    padded batch (a flipped crop reads its columns right to left), the same pixels as slicing each
    crop and reversing its columns, about 3x faster on a CPU than indexing then flipping.
    """
    b, c, h, w = x.shape
    if padding <= 0 and not hflip:
        return x
    dev = x.device
    if padding > 0:
        i = torch.randint(0, 2 * padding + 1, (b,), generator=gen, device=gen.device).to(dev)
        j = torch.randint(0, 2 * padding + 1, (b,), generator=gen, device=gen.device).to(dev)
    cols = torch.arange(w, device=dev).expand(b, w)
    if hflip:
        flip = (torch.rand(b, generator=gen, device=gen.device) < 0.5).to(dev)
        cols = torch.where(flip[:, None], w - 1 - cols, cols)
    if padding <= 0:
        return x.gather(3, cols[:, None, None, :].expand(b, c, h, w))
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = i[:, None] + torch.arange(h, device=dev)  # (b, h) rows of the padded image
    flat = rows[:, :, None] * (w + 2 * padding) + (j[:, None] + cols)[:, None, :]  # (b, h, w)
    return padded.flatten(2).gather(2, flat.flatten(1)[:, None, :].expand(b, c, h * w)).view(b, c, h, w)


def make_optimizer(model: nn.Module, loss: nn.Module, recipe: dict) -> torch.optim.Optimizer:
    no_wd = {id(p) for p in loss.no_weight_decay(model)}
    decay = [p for p in model.parameters() if p.requires_grad and id(p) not in no_wd]
    plain = [p for p in model.parameters() if p.requires_grad and id(p) in no_wd]
    groups = [{"params": decay, "weight_decay": recipe["weight_decay"]}]
    if plain:
        groups.append({"params": plain, "weight_decay": 0.0})
    return torch.optim.SGD(groups, lr=recipe["lr"], momentum=recipe["momentum"],
                           nesterov=recipe["nesterov"])


def make_scheduler(opt: torch.optim.Optimizer, recipe: dict):
    if recipe["schedule"] == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=recipe["milestones"], gamma=recipe["gamma"])
    if recipe["schedule"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=recipe["epochs"])
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0)


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict]
    seconds: float
    resumed_from: int


def rng_state(gen: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "generator": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(gen: torch.Generator, state: dict) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train(model: nn.Module, loss_fn: nn.Module, train_x, train_y: torch.Tensor | None,
          recipe: dict, seed: int, device: torch.device, checkpoint: Path | None = None,
          monitor: Callable[[nn.Module], dict] | None = None, events=None,
          outliers=None) -> TrainResult:
    """Train ``model`` in place with ``recipe``; resume from ``checkpoint`` when it exists.

    ``train_x``: the training images as a tensor (with ``train_y`` its labels), or an
    :class:`~logitnorm_bench.loading.ImageSet` (``train_y`` None), which may be streamed.

    ``events`` (optional) is told ``started(start_epoch, epochs)`` once the checkpoint is loaded,
    ``batch(done, n_batches)`` after every step (it must be cheap: the worker's reporter reads the
    clock and returns) and ``epoch(entry, epochs)`` after every epoch, before its checkpoint is saved.

    ``outliers`` (``train.outliers``): images appended to every batch with target -1, as Outlier
    Exposure's code does: ``round(ratio * batch_size)`` of them, read in their given (random) order from
    a random offset each epoch, augmented like the ID images.  Only a loss with ``uses_outliers`` takes them.
    """
    if outliers is not None and not getattr(loss_fn, "uses_outliers", False):
        raise ValueError(f"{type(loss_fn).__name__} does not take outliers (uses_outliers is not set)")
    fast = recipe.get("fast") or {}
    model.to(device)
    if fast.get("channels_last"):
        model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, loss_fn, recipe)
    sched = make_scheduler(opt, recipe)
    gen_device = device if fast.get("gpu_data") and device.type == "cuda" else torch.device("cpu")
    gen = torch.Generator(device=gen_device).manual_seed(seed)
    history: list[dict] = []
    start_epoch = 0
    state = load_state_or_set_aside(checkpoint, device) if checkpoint is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        set_rng_state(gen, {k: (v.cpu() if isinstance(v, torch.Tensor) else [t.cpu() for t in v])
                            for k, v in state["rng"].items()})
        history = state["history"]
        start_epoch = int(state["epoch"])

    data = as_image_set(train_x, train_y)
    out_set = as_image_set(outliers) if outliers is not None else None
    if fast.get("gpu_data"):  # held on the device; a streamed set's batches go there as they come
        data = data.to(device) if isinstance(data, InMemory) else data
        out_set = out_set.to(device) if isinstance(out_set, InMemory) else out_set
    step_fn = _train_step(model, loss_fn, opt, device, fast)
    epochs, bs = recipe["epochs"], recipe["batch_size"]
    n = len(data)
    n_batches = n // bs if recipe["drop_last"] and n >= bs else math.ceil(n / bs)
    if recipe.get("max_batches_per_epoch"):
        n_batches = min(n_batches, recipe["max_batches_per_epoch"])
    sync_every = host_sync_every(device)
    batch_done = getattr(events, "batch", None)
    if events is not None:
        events.started(start_epoch, epochs)
    t0 = time.perf_counter()
    try:
        for epoch in range(start_epoch, epochs):
            model.train()
            te = time.perf_counter()
            perm = torch.randperm(n, generator=gen, device=gen.device)
            batches = data.fetch([perm[b * bs:(b + 1) * bs] for b in range(n_batches)])
            if out_set is not None:  # drawn only with outliers, so that runs without keep their random stream
                n_out = max(1, round(recipe["outliers"]["ratio"] * bs))
                offset = int(torch.randint(len(out_set), (1,), generator=gen, device=gen.device))
                out_batches = out_set.fetch([(offset + b * n_out + torch.arange(n_out)) % len(out_set)
                                             for b in range(n_batches)])
            tally = _Tally(epoch)
            for b, (xb, yb) in enumerate(batches):
                # A streamed batch goes to the device before its augmentation (pinned, so the copy overlaps):
                # cropping and flipping only move pixels, so the result is the same wherever it is done.
                xb = xb if isinstance(data, InMemory) else xb.to(device, non_blocking=True)
                x = augment(xb, recipe["crop_padding"], recipe["hflip"], gen)
                y = targets = yb.to(device, non_blocking=True)
                if out_set is not None:
                    xo, _ = next(out_batches)
                    xo = xo if isinstance(out_set, InMemory) else xo.to(device, non_blocking=True)
                    x_out = augment(xo, recipe["crop_padding"], recipe["hflip"], gen)
                    x = torch.cat([x, x_out.to(x.device)])
                    targets = torch.cat([y, torch.full((n_out,), -1, dtype=y.dtype, device=y.device)])
                loss, logits = step_fn(x.to(device, non_blocking=True), targets)
                tally.add(b, yb.shape[0], loss, (logits[:yb.shape[0]].argmax(1) == y).sum())
                if len(tally.pending) >= sync_every:
                    tally.flush()  # raises DivergedError naming the first non-finite batch
                if batch_done is not None:
                    batch_done(b + 1, n_batches)
            tally.flush()
            total, correct, seen = tally.total, tally.correct, tally.seen
            lr = opt.param_groups[0]["lr"]
            sched.step()
            entry = {"epoch": epoch + 1, "loss": total / max(seen, 1), "train_acc": correct / max(seen, 1),
                     "lr": lr, "seconds": time.perf_counter() - te}
            if monitor is not None:
                entry.update(monitor(model))
            history.append(entry)
            if events is not None:
                events.epoch(entry, epochs)
            if checkpoint is not None and ((epoch + 1) % recipe["checkpoint_every"] == 0 or epoch + 1 == epochs):
                atomic_torch_save(checkpoint, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                               "scheduler": sched.state_dict(), "rng": rng_state(gen),
                                               "history": history, "epoch": epoch + 1})
    finally:
        data.close()
        if out_set is not None:
            out_set.close()
    if fast.get("channels_last"):
        model.to(memory_format=torch.contiguous_format)
    return TrainResult(model, history, time.perf_counter() - t0, start_epoch)


#: Training steps between host syncs on an accelerator.  Reading the loss (to check it is finite)
#: and the correct count waits for the device to finish the step, which leaves the GPU idle while
#: Python queues the next one; on an accelerator they are read every this many steps instead
#: (still naming the first bad batch, at most this many steps late).  A CPU never waits: every step.
HOST_SYNC_EVERY = 32


def host_sync_every(device: torch.device) -> int:
    return 1 if device.type == "cpu" else HOST_SYNC_EVERY


class _Tally:
    """Per-step loss and correct counts, kept on the device until :meth:`flush` reads them at once.

    The epoch's totals are summed on the host in batch order from the same float32 values as a
    per-step ``float(loss)`` would give, so the history is the same whatever the sync interval.
    """

    def __init__(self, epoch: int):
        self.epoch = epoch
        self.pending: list[tuple[int, int, torch.Tensor, torch.Tensor]] = []
        self.total, self.correct, self.seen = 0.0, 0, 0

    def add(self, batch: int, size: int, loss: torch.Tensor, correct: torch.Tensor) -> None:
        self.pending.append((batch, size, loss, correct))

    def flush(self) -> None:
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        if len(pending) == 1:
            losses, corrects = [float(pending[0][2])], [int(pending[0][3])]
        else:  # one host sync for the lot
            losses = torch.stack([p[2] for p in pending]).tolist()
            corrects = torch.stack([p[3] for p in pending]).tolist()
        for (b, size, _, _), lv, c in zip(pending, losses, corrects):
            if not math.isfinite(lv):
                raise DivergedError(f"loss became {lv} at epoch {self.epoch + 1}, batch {b + 1}")
            self.total += lv * size
            self.correct += int(c)
            self.seen += size


def _train_step(model, loss_fn, opt, device, fast):
    bf16 = bool(fast.get("bf16")) and device.type == "cuda"
    channels_last = bool(fast.get("channels_last"))
    forward = torch.compile(model) if fast.get("compile") else model

    def step(x, y):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else nullcontext():
            logits = forward(x)
            loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach(), logits.detach()

    return step


def build_model(plugins, arch: str, arch_params: dict, loss_fn, source, seed: int) -> nn.Module:
    """Architecture (seeded init) + the loss's head changes, wrapped with the ID normalisation."""
    torch.manual_seed(seed)
    net = plugins.architectures.build(arch, num_classes=source.num_classes,
                                      input_shape=tuple(source.input_shape), **arch_params)
    model = Normalized(net, source.mean, source.std)
    return loss_fn.prepare_model(model, source.num_classes)
