"""Wall time of a whole ``ood-bench run`` idle and beside busy processes, per thread policy.

Shared machines are the norm for CPU runs: torch's default of one thread per core collapses when
other processes compete (OpenMP barriers wait for descheduled threads).  This runs the same suite
(default: the bundled quick suite) with ``--threads auto`` and with ``--threads <cores>`` (torch's
default, the harness's behaviour before ``auto``), first on an idle machine, then beside ``--busy``
busy-loop processes, each into a fresh results folder, and prints the wall times and ratios.

    python benchmarks/thread_contention.py                   # the quick suite, about 10 minutes idle
    python benchmarks/thread_contention.py --tiny            # seconds: one small digits training, for CI

Target (issue 14): under contention, ``auto`` takes at most 3x its idle time; idle, ``auto`` is no
slower than the old default.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as C

TINY_SUITE = """suite: contention-tiny
defaults:
  train: {epochs: 3, batch_size: 64, lr: 0.05, schedule: cosine, crop_padding: 1, hflip: false}
  evaluation: {ood_samples: 300}
experiments:
  e:
    matrix: {id_dataset: [digits], arch: [digits_mlp], loss: [ce], detector: [msp], ood_dataset: [uniform_noise],
             seed: [0]}
"""


def _spin() -> None:
    while True:
        pass


def timed_run(suite: str, threads: str, cap: float | None = None) -> float:
    """Wall seconds of one whole run; ``inf`` if it was stopped at ``cap`` seconds."""
    with tempfile.TemporaryDirectory(prefix="ood-bench-contention-") as tmp:
        cmd = [sys.executable, "-m", "logitnorm_bench.cli", "run", suite, "--results", str(Path(tmp) / "r"),
               "--device", "cpu", "--threads", threads]
        t0 = time.perf_counter()
        try:
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=cap)
        except subprocess.TimeoutExpired:
            return float("inf")
        return time.perf_counter() - t0


def _seconds(t: float, cap: float | None) -> str:
    return f"> {cap:.0f} s (stopped)" if t == float("inf") else f"{t:.1f} s"


def main(argv: list[str] | None = None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--suite", default=str(Path(__file__).resolve().parents[1] / "suites" / "quick.yaml"))
    p.add_argument("--busy", type=int, default=2, help="busy-loop processes beside the run (default 2)")
    p.add_argument("--cap", type=float, default=None,
                   help="stop the old default's run under contention after this many seconds (it can take 20x idle)")
    args = p.parse_args(argv)
    C.setup(args, "thread policy under contention: whole `ood-bench run` wall time")
    cores = str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    suite = args.suite
    if args.tiny:
        suite = os.path.join(tempfile.mkdtemp(prefix="ood-bench-contention-"), "tiny.yaml")
        Path(suite).write_text(TINY_SUITE)
    policies = ["auto", cores]
    times: dict[tuple[str, str], float] = {}
    for policy in policies:
        times[("idle", policy)] = timed_run(suite, policy)
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    for s in spinners:
        s.start()
    try:
        for policy in policies:
            times[(f"{args.busy} busy", policy)] = timed_run(suite, policy, args.cap if policy == cores else None)
    finally:
        for s in spinners:
            s.terminate()
    print(f"\n| machine state | --threads auto | --threads {cores} (old default) | auto / old |")
    print("|---|---|---|---|")
    for state in ("idle", f"{args.busy} busy"):
        a, o = times[(state, "auto")], times[(state, cores)]
        ratio = f"{a / o:.2f}" if o != float("inf") else f"< {a / args.cap:.2f}"
        print(f"| {state} | {_seconds(a, args.cap)} | {_seconds(o, args.cap)} | {ratio} |")
    contention = times[(f"{args.busy} busy", "auto")] / times[("idle", "auto")]
    idle_ratio = times[("idle", "auto")] / times[("idle", cores)]
    print()
    print(f"target auto busy / auto idle: {contention:.2f}x (want <= 3) -> {'MET' if contention <= 3 else 'MISSED'}")
    print(f"target auto idle / old default idle: {idle_ratio:.2f}x (want <= 1.05) -> "
          f"{'MET' if idle_ratio <= 1.05 else 'MISSED'}")
    C.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
