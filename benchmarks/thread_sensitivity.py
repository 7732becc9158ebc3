"""Issue 12 item 20: how much every leaderboard number moves with the torch thread count.

Runs a suite (default: the bundled quick suite) twice in this process, with the same seeds, at
``--threads-a`` (1) and ``--threads-b`` (2) torch threads, into two results folders (a folder that
already holds the records is reused: a rerun only computes what is missing, and every record must say
it was made at that thread count), then compares the two leaderboards.  On a CPU, another thread
count sums floats in another order, so every training ends in other weights.  The question is
whether the numbers move by more than the seed-to-seed spread that the leaderboard reports.

Tables (all metrics as in the leaderboard: percent, logit norms raw):

1. per metric, over every leaderboard row (each OOD set and the ``average`` rows): the median and
   largest |mean at A - mean at B|, the median seed std (pooled over A and B), how many rows move by
   more than one std, and the median of |diff| / (std * sqrt(2 / n_seeds)) -- about 0.67 (the median
   of |N(0, 1)|) if the thread count acts like drawing fresh seeds;
2. per metric, per cell and seed (same seed, same cell): the median |diff|, against the median
   between-seed std: the same comparison without averaging over seeds;
3. the rows that move most, in units of their std;
4. the epsilon that each GODIN training chose at A and at B, and the margin of its selection
   (mean validation score of the best candidate minus the runner-up, relative to the best).

    python benchmarks/thread_sensitivity.py --out-a /tmp/quick-t1 --out-b /tmp/quick-t2
"""

from __future__ import annotations

import math
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


import _common as C  # noqa: E402

METRICS = ("fpr95", "auroc", "aupr_in", "aupr_out", "id_acc", "ece", "ece_ts", "logit_norm_id", "logit_norm_ood")
KEY = ("id_dataset", "arch", "loss", "loss_params", "detector", "detector_params", "ood_dataset")

TINY_SUITE = {  # seconds: two trainings per thread count, GODIN's epsilon selection included
    "suite": "tiny-threads", "version": 1,
    "defaults": {"train": {"epochs": 3, "batch_size": 64, "lr": 0.05, "schedule": "cosine", "crop_padding": 1,
                           "hflip": False},
                 "evaluation": {"ood_samples": 200, "batch_size": 512, "id_val_samples": 50}},
    "experiments": {"e": {"matrix": {"id_dataset": ["digits"], "arch": ["digits_mlp"], "arch_params": [{"width": 16}],
                                     "loss": ["godin"], "detector": ["msp", "godin"],
                                     "ood_dataset": ["uniform_noise", "photo_patches"], "seed": [0, 1]}}},
}


def run_at(threads: int, suite, results: Path) -> list[dict]:
    """The records of ``suite`` in ``results``, computing what is missing at ``threads`` torch threads."""
    from logitnorm_bench.api import run
    from logitnorm_bench.records import ResultsDir

    outcome = run(suite, results, device="cpu", threads=threads, progress="off", log_file=False)
    if not outcome.ok:
        raise SystemExit(f"{results}: {outcome.records_failed} record(s) failed")
    records = [r for r in ResultsDir(results).records() if r.get("split", "test") == "test"]
    counts = {r["provenance"]["torch_threads"] for r in records}
    if counts != {threads}:
        raise SystemExit(f"{results}: records made at {sorted(counts)} torch threads, not {threads}; use another folder")
    return records


def _key(row: dict) -> tuple:
    from logitnorm_bench.leaderboard import params_text

    return tuple(params_text(row[k]) if k.endswith("_params") else row[k] for k in KEY)


def label(key: tuple) -> str:
    id_ds, _, loss, loss_p, det, det_p, ood = key
    det_p = "" if det_p in ("{}",) or det == "godin" else det_p.replace('"', "")
    return f"{id_ds} {loss} {det}{det_p} {ood}"


def compare_rows(rows_a: list[dict], rows_b: list[dict]) -> list[dict]:
    b = {_key(r): r for r in rows_b}
    out = []
    for ra in rows_a:
        rb = b.get(_key(ra))
        if rb is None:
            continue
        for m in METRICS:
            if ra.get(m) is None or rb.get(m) is None:
                continue
            std = math.sqrt((ra[f"{m}_std"] ** 2 + rb[f"{m}_std"] ** 2) / 2)
            n = min(ra["n_seeds"], rb["n_seeds"])
            out.append({"key": _key(ra), "metric": m, "a": ra[m], "b": rb[m], "diff": abs(ra[m] - rb[m]),
                        "std": std, "z": abs(ra[m] - rb[m]) / (std * math.sqrt(2 / n)) if std > 0 and n > 1 else None})
    return out


def per_seed(records_a: list[dict], records_b: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """metric -> (per-cell-and-seed |diff| list, per-cell between-seed std list), from the records."""
    from logitnorm_bench.metrics import METRICS as CATALOGUE

    def value(rec, m):
        spec = CATALOGUE[m]
        return spec.display((rec.get(spec.record_key) or {}).get(m))

    b = {r["cell_id"]: r for r in records_b}
    diffs: dict[str, list[float]] = {m: [] for m in METRICS}
    by_cell: dict[tuple, dict[str, list[float]]] = {}
    for ra in records_a:
        rb = b.get(ra["cell_id"])
        if rb is None:
            continue
        cell = (ra["id_dataset"], ra["loss"], str(ra["loss_params"]), ra["detector"], str(ra["detector_params"]),
                ra["ood_dataset"])
        for m in METRICS:
            va, vb = value(ra, m), value(rb, m)
            if va is None or vb is None:
                continue
            diffs[m].append(abs(va - vb))
            by_cell.setdefault(cell, {}).setdefault(m, []).append(va)
    stds = {m: [statistics.stdev(v[m]) for v in by_cell.values() if len(v.get(m, [])) > 1] for m in METRICS}
    return {m: (diffs[m], stds[m]) for m in METRICS}


def godin_choices(records_a: list[dict], records_b: list[dict]) -> list[list]:
    def choices(records):
        out = {}
        for r in records:
            fit = r.get("detector_fit") or {}
            if r["detector"] == "godin" and fit.get("candidates"):
                means = sorted(fit["candidates"].values(), reverse=True)
                out[(r["id_dataset"], r["loss"], r["seed"])] = (float(fit["epsilon"]), means[0] - means[1], means[0])
        return out

    a, b = choices(records_a), choices(records_b)
    rows = []
    for k in sorted(set(a) & set(b)):
        (ea, ma, ba), (eb, mb, _) = a[k], b[k]
        rows.append([f"{k[0]} {k[1]} seed {k[2]}", ea, eb, "yes" if ea == eb else "NO", ma, mb, ma / ba])
    return rows


def _median(values) -> float:
    return statistics.median(values) if values else float("nan")


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--suite", default="quick", help="a bundled suite's name or a suite file (default: quick)")
    p.add_argument("--threads-a", type=int, default=1)
    p.add_argument("--threads-b", type=int, default=2)
    p.add_argument("--out-a", help="results folder for --threads-a (default: a temporary folder)")
    p.add_argument("--out-b", help="results folder for --threads-b (default: a temporary folder)")
    p.add_argument("--top", type=int, default=12, help="rows in the table of largest moves")
    args = p.parse_args(argv)
    from logitnorm_bench.leaderboard import build_rows

    suite = TINY_SUITE if args.tiny else args.suite
    C.setup(args, f"Thread-count sensitivity: suite {args.suite if not args.tiny else TINY_SUITE['suite']}, "
                  f"{args.threads_a} vs {args.threads_b} torch threads, same seeds")
    print(f"cpu model {C.cpu_model()}")
    with tempfile.TemporaryDirectory() as tmp:
        out_a = Path(args.out_a or Path(tmp) / "a")
        out_b = Path(args.out_b or Path(tmp) / "b")
        recs_a, recs_b = run_at(args.threads_a, suite, out_a), run_at(args.threads_b, suite, out_b)
    rows = compare_rows(build_rows(recs_a), build_rows(recs_b))
    seeds = per_seed(recs_a, recs_b)
    print(f"\nresults: {out_a} ({args.threads_a} thread(s)) vs {out_b} ({args.threads_b} thread(s)); "
          f"{len(recs_a)} records each\n")
    summary = []
    for m in METRICS:
        rs = [r for r in rows if r["metric"] == m]
        if not rs:
            continue
        top = max(rs, key=lambda r: r["diff"])
        zs = [r["z"] for r in rs if r["z"] is not None]
        summary.append([m, len(rs), _median([r["diff"] for r in rs]), top["diff"], label(top["key"]),
                        _median([r["std"] for r in rs]), sum(r["diff"] > r["std"] for r in rs), _median(zs)])
    C.table(["metric", "rows", "median |diff|", "max |diff|", "max at", "median seed std", "rows |diff| > std",
             "median |diff|/(std·√(2/n))"], summary)
    print()
    C.table(["metric", "cells x seeds", "median |diff| per seed", "median between-seed std", "ratio"],
            [[m, len(d), _median(d), _median(s), _median(d) / _median(s) if s and _median(s) else float("nan")]
             for m, (d, s) in seeds.items() if d])
    print()
    moved = sorted((r for r in rows if r["std"] > 0), key=lambda r: -r["diff"] / r["std"])[:args.top]
    C.table(["row", "metric", f"{args.threads_a} thread(s)", f"{args.threads_b} thread(s)", "|diff|", "seed std",
             "|diff| / std"], [[label(r["key"]), r["metric"], r["a"], r["b"], r["diff"], r["std"], r["diff"] / r["std"]]
                               for r in moved])
    godin = godin_choices(recs_a, recs_b)
    if godin:
        print()
        C.table(["GODIN training", f"epsilon ({args.threads_a})", f"epsilon ({args.threads_b})", "same",
                 f"margin ({args.threads_a})", f"margin ({args.threads_b})", "relative margin"], godin)
    C.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
