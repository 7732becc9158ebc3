"""Helpers shared by the benchmark scripts (not a public API).

Every script prints a header (date, torch, device, threads, load average), markdown tables, and
``target ...`` summary lines; ``--tiny`` runs a seconds-long version for CI (tests/test_benchmarks.py),
whose numbers mean nothing.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import sys
import time
from typing import Callable, Sequence

import torch
from ood_bench_paper.datasets import CIFAR_MEAN, CIFAR_STD  # the statistics the harness trains with


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--tiny", action="store_true",
                   help="a seconds-long run for CI (WRN-10-1, a few images); its numbers mean nothing")
    p.add_argument("--threads", type=int, default=0,
                   help="torch.set_num_threads (0 = leave torch's default)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    return p


def setup(args: argparse.Namespace, title: str) -> torch.device:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"# {title}")
    print(f"date {datetime.date.today().isoformat()} | torch {torch.__version__} | device {describe(device)} | "
          f"torch threads {torch.get_num_threads()} | cpu cores {os.cpu_count()} | "
          f"load average at start {load_average()}" + (" | TINY (numbers mean nothing)" if args.tiny else ""))
    return device


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()})"


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def finish() -> None:
    print(f"load average at end {load_average()}")


def wrn(tiny: bool, num_classes: int = 10, seed: int = 0) -> torch.nn.Module:
    """WRN-40-2 (WRN-10-1 when tiny) with the harness's normalisation wrapper, seeded init."""
    from ood_bench_paper.architectures import WRN

    from logitnorm_bench.components import Normalized

    torch.manual_seed(seed)
    net = WRN(num_classes, depth=10, widen_factor=1) if tiny else WRN(num_classes, depth=40, widen_factor=2)
    return Normalized(net, CIFAR_MEAN, CIFAR_STD)


def arch_name(tiny: bool) -> str:
    return "WRN-10-1" if tiny else "WRN-40-2"


def images(n: int, seed: int, shape=(3, 32, 32)) -> torch.Tensor:
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable, device: torch.device):
    """(seconds, result) of ``fn()``, synchronising an accelerator before and after."""
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


def peak_rss_gib() -> float:
    """Peak resident set size of this process so far (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**30 if sys.platform == "darwin" else r / 2**20


def table(headers: Sequence[str], rows: Sequence[Sequence]) -> None:
    """A markdown table (what docs/performance.md quotes)."""
    cells = [[_fmt(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |")


def target(name: str, value: float, op: str, bound: float, unit: str = "") -> bool:
    ok = value <= bound if op == "<=" else value >= bound
    print(f"target {name}: {value:.4g}{unit} (want {op} {bound:g}{unit}) -> {'MET' if ok else 'MISSED'}")
    return ok


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)
