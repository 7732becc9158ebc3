"""The ``ood-bench`` command.  Exit codes: 0 all good, 1 some cell failed, 2 bad input."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from logitnorm_bench import __version__
from logitnorm_bench.errors import ConfigError, OodBenchError
from logitnorm_bench.plugins import KINDS

REPO_ROOT = Path(__file__).resolve().parent.parent
# The bundled suites live in the repository's suites/ (an editable install, as the README's commands do).
QUICK_SUITE = REPO_ROOT / "suites" / "quick.yaml"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is the harness's one line (and exit code 2)."""

    def error(self, message: str):
        self.exit(2, f"ood-bench: error: {self.prog}: {message} (see {self.prog} --help)\n")


def _add_suite_args(p: argparse.ArgumentParser, optional: bool = False) -> None:
    p.add_argument("suite", nargs="?" if optional else None, default=None if not optional else str(QUICK_SUITE),
                   help="suite YAML file" + (f" (default: the bundled quick suite, {QUICK_SUITE.name})" if optional else ""))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a suite value, e.g. --set train.epochs=1 (repeatable)")
    p.add_argument("--smoke", action="store_true",
                   help="synthetic stand-in data and a few batches of training: proves the grid is wired")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ood-bench", description=__doc__)
    parser.add_argument("--version", action="version", version=f"ood-bench {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("list", help="list registered components and the distributions providing them")
    p.add_argument("kind", nargs="?", choices=list(KINDS))

    p = sub.add_parser("plan", help="expand a suite: unique training runs and evaluation cells")
    _add_suite_args(p)
    p.add_argument("--format", choices=["table", "json"], default="table")

    p = sub.add_parser("run", help="run a suite (default: the bundled quick suite); reruns do only what is missing")
    _add_suite_args(p, optional=True)
    p.add_argument("--results", type=Path, default=None,
                   help="results folder (default: results, or results-smoke with --smoke)")
    p.add_argument("--data", type=Path, default=None, help="data root (default: $OOD_BENCH_DATA or ./data)")
    p.add_argument("--no-download", action="store_true", help="never download datasets")
    p.add_argument("--overwrite", choices=["only-missing", "always", "never"], default="only-missing",
                   help="only-missing (default): compute absent or failed cells; always: recompute and "
                        "retrain everything; never: compute only absent cells")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--executor", default="local", help="executor plugin (see: ood-bench list executors)")
    p.add_argument("--jobs", type=int, default=None,
                   help="concurrent worker processes (local, default 1); with ray: a cap on tasks at once")
    p.add_argument("--devices", default=None,
                   help="comma-separated devices handed to workers in turn, e.g. cuda:0,cuda:1")
    p.add_argument("--ray-address", default=None, help="address of an existing Ray cluster (ray executor)")
    p.add_argument("--executor-option", dest="executor_options", action="append", default=[],
                   metavar="KEY=VALUE", help="an executor option, e.g. num_gpus=0.5 or max_retries=5 "
                   "(value read as YAML; repeatable)")
    p.add_argument("--wait", type=float, default=0,
                   help="seconds to wait for another run holding the results folder (default: refuse)")

    p = sub.add_parser("leaderboard", help="rebuild RESULTS/leaderboard.csv from the records")
    p.add_argument("results", type=Path)

    p = sub.add_parser("tables", help="every report section's tables from RESULTS: the leaderboard by ID dataset, "
                                      "and plugins' tables, e.g. a paper's beside its numbers")
    p.add_argument("results", type=Path)
    p.add_argument("--format", choices=["md", "csv"], default="md")

    p = sub.add_parser("report", help="every report section's figures (PNG) and tables on one HTML page")
    p.add_argument("results", type=Path)
    p.add_argument("--out", type=Path, default=None, help="output folder (default: RESULTS/report)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, OodBenchError) as exc:
        if args.debug:
            raise
        print(f"ood-bench: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `ood-bench plan ... | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("ood-bench: interrupted; finished records are kept, rerun to resume", file=sys.stderr)
        return 130


def cmd_list(args) -> int:
    from logitnorm_bench.plugins import KINDS, get_plugins

    plugins = get_plugins()
    for kind in [args.kind] if args.kind else KINDS:
        print(f"{kind}:")
        for e in plugins.registry(kind).entries():
            desc = f"  {e.description}" if e.description else ""
            print(f"  {e.name:<16} {e.distribution:<20}{desc}")
    return 0


def _load(args):
    from logitnorm_bench.plan import make_plan
    from logitnorm_bench.plugins import get_plugins
    from logitnorm_bench.suite import load_suite

    plugins = get_plugins()
    suite = load_suite(args.suite, args.overrides, plugins)
    if args.smoke:
        from logitnorm_bench.smoke import smoke_suite

        suite = smoke_suite(suite)
    return plugins, suite, make_plan(suite, plugins, smoke=args.smoke)


def cmd_plan(args) -> int:
    _, suite, plan = _load(args)
    if args.format == "json":
        json.dump(plan.to_json(), sys.stdout, indent=1, default=str)
        print()
        return 0
    print(f"suite {suite.name}: {len(plan.runs)} unique training runs, {len(plan.cells)} evaluation cells")
    print(f"{'run_id':<17} {'id_dataset':<12} {'arch':<12} {'loss':<26} {'seed':>4} {'cells':>5}  experiments")
    for run in plan.runs:
        params = ",".join(f"{k}={v}" for k, v in run.loss_params.items())
        loss = f"{run.loss}({params})" if params else run.loss
        print(f"{run.run_id:<17} {run.id_dataset:<12} {run.arch:<12} {loss:<26} {run.seed:>4} "
              f"{len(plan.cells_of(run.run_id)):>5}  {','.join(run.experiments)}")
    return 0


def cmd_run(args) -> int:
    from logitnorm_bench.leaderboard import write_leaderboard
    from logitnorm_bench.runner import ResultsLock, default_data_root, resolve_device, run_plan
    from logitnorm_bench.params import resolve_params
    from logitnorm_bench.suite import parse_override

    plugins, suite, plan = _load(args)
    if args.executor == "local":
        resolve_device(args.device)  # bad --device is bad input: fail before anything runs
    elif args.device not in ("auto", "cpu", "cuda") and not args.device.startswith("cuda:"):
        raise ConfigError(f"--device {args.device!r}: expected auto, cpu, cuda or cuda:N")  # workers resolve it
    results = args.results or Path("results-smoke" if args.smoke else "results")
    options: dict = {}
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs}: expected a positive integer")
    if args.jobs is not None:
        options["jobs"] = args.jobs
    if args.devices:
        options["devices"] = [d.strip() for d in args.devices.split(",") if d.strip()]
    if args.ray_address:
        if args.executor != "ray":
            raise ConfigError("--ray-address needs --executor ray")
        options["address"] = args.ray_address
    for item in args.executor_options:
        key, value = parse_override(item)
        options[key] = value
    # Checked now (name, option names), built later: building the ray executor starts Ray.
    resolve_params(plugins.executors.get(args.executor), options, key="--executor-option")
    try:
        results.mkdir(parents=True, exist_ok=True)
        probe = results / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"--results {results}: not writable ({exc.strerror})") from None
    with ResultsLock(results, wait=args.wait):
        try:
            counts = run_plan(plan, results, args.data or default_data_root(), args.device, args.overwrite,
                              executor=args.executor, executor_options=options,
                              download=not args.no_download)
        finally:
            board = write_leaderboard(results)  # also after an interrupt: nothing computed is lost
    print(f"{suite.name}: trained {counts['trained']} run(s); {counts['records_ok']} record(s) ok, "
          f"{counts['records_failed']} failed"
          + (f" in {counts['seconds']:.1f}s" if "seconds" in counts else "") + f"; leaderboard: {board}")
    if args.smoke:
        print("SMOKE MODE: synthetic stand-in data; these numbers mean nothing.")
    return 1 if counts["records_failed"] else 0


def cmd_leaderboard(args) -> int:
    from logitnorm_bench.leaderboard import write_leaderboard

    if not args.results.is_dir():
        raise ConfigError(f"results folder not found: {args.results}")
    print(write_leaderboard(args.results))
    return 0


def cmd_tables(args) -> int:
    from logitnorm_bench.tables import render_tables

    if not args.results.is_dir():
        raise ConfigError(f"results folder not found: {args.results}")
    print(render_tables(args.results, fmt=args.format))
    return 0


def cmd_report(args) -> int:
    from logitnorm_bench.report import write_report

    if not args.results.is_dir():
        raise ConfigError(f"results folder not found: {args.results}")
    print(write_report(args.results, args.out))
    return 0


COMMANDS = {"list": cmd_list, "plan": cmd_plan, "run": cmd_run, "leaderboard": cmd_leaderboard,
            "tables": cmd_tables, "report": cmd_report}

if __name__ == "__main__":
    sys.exit(main())
