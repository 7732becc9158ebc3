"""The ``ood-bench`` command.  Exit codes: 0 all good, 1 some cell failed, 2 bad input."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import traceback
from pathlib import Path

from logitnorm_bench import __version__
from logitnorm_bench.errors import ConfigError, OodBenchError, one_line
from logitnorm_bench.plugins import KINDS

# A registered suite name (the bundled suites ship in the package: ``ood-bench list suites``).
DEFAULT_SUITE = "quick"


DESCRIPTION = ("Benchmark OOD detectors: run a suite's grid, rebuild its leaderboard, tables and report. "
               "Exit codes: 0 all good, 1 some cell failed, 2 bad input.")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is the harness's one line (and exit code 2)."""

    def error(self, message: str):
        self.exit(2, f"ood-bench: error: {self.prog}: {message} (see {self.prog} --help)\n")


def _add_suite_args(p: argparse.ArgumentParser, optional: bool = False) -> None:
    p.add_argument("suite", nargs="?" if optional else None, default=DEFAULT_SUITE if optional else None,
                   help="a suite name (see: ood-bench list suites) or a suite YAML file"
                        + (f" (default: {DEFAULT_SUITE})" if optional else ""))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a suite value, e.g. --set train.epochs=1 (repeatable)")
    p.add_argument("--smoke", action="store_true",
                   help="synthetic stand-in data and a few batches of training: proves the grid is wired")


def _add_executor_flags(p: argparse.ArgumentParser) -> None:
    """Options an executor plugin declares (``CLI_OPTIONS`` on its factory) become ``run`` flags.

    The core names no executor: the Ray executor's ``--ray-address`` comes from the Ray plugin.
    """
    from logitnorm_bench.plugins import get_plugins

    plugins = get_plugins()
    for entry in plugins.executors.entries():
        try:
            options = list(getattr(entry.factory, "CLI_OPTIONS", ()))
            for flag, option, help_text in options:
                p.add_argument(flag, dest=f"executor_flag:{entry.name}:{option}:{flag}", default=None,
                               help=f"{help_text} (--executor {entry.name})")
        except (OodBenchError, argparse.ArgumentError, TypeError, ValueError) as exc:  # a plugin's flag taken
            plugins.fail(f"executor '{entry.name}' of plugin '{entry.plugin}' ({entry.distribution}): its "
                          f"CLI_OPTIONS are not added: {exc}", exc)


def _executor_flags(args) -> dict[str, str]:
    """{option: value} of the executor flags given; a flag of another executor is bad input."""
    options = {}
    for dest, value in vars(args).items():
        if not dest.startswith("executor_flag:") or value is None:
            continue
        _, executor, option, flag = dest.split(":", 3)
        if executor != args.executor:
            raise ConfigError(f"{flag} needs --executor {executor}")
        options[option] = value
    return options


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="ood-bench", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"ood-bench {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the summary, warnings and errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every message (each epoch, each record)")
    # --debug also after the subcommand (`ood-bench run SUITE --debug`); SUPPRESS keeps the top level's value.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks for errors (the exit code stays the same)")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="print only the summary, warnings and errors")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="print every message (each epoch, each record written)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("list", parents=[common], help="list registered components and the distributions providing them")
    p.add_argument("kind", nargs="?", choices=list(KINDS), help="one kind of component (default: all)")

    p = sub.add_parser("plan", parents=[common], help="expand a suite: unique training runs and evaluation cells")
    _add_suite_args(p)
    p.add_argument("--format", choices=["table", "json"], default="table")

    p = sub.add_parser("run", parents=[common], help="run a suite (default: the bundled quick suite); reruns do only what is missing")
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
    p.add_argument("--executor-option", dest="executor_options", action="append", default=[],
                   metavar="KEY=VALUE", help="an executor option, e.g. num_gpus=0.5 or max_retries=5 "
                   "(value read as YAML; repeatable)")
    p.add_argument("--wait", type=float, default=0,
                   help="seconds to wait for another run holding the results folder (default: refuse)")
    p.add_argument("--threads", default="auto", metavar="N|auto",
                   help="torch threads per training run (default auto: 1 for a small model, else the cores "
                        "available to each worker); recorded in every record")
    p.add_argument("--stream-above-mb", type=float, default=None, metavar="MB",
                   help="stream a set through a DataLoader when its float32 tensor would exceed MB MiB "
                        "(default: the suite's defaults.loading, else 1024; 0 streams every set; same results)")
    p.add_argument("--loader-workers", type=int, default=None, metavar="N",
                   help="DataLoader worker processes of a streamed set (default: the suite's, else 2)")
    p.add_argument("--tracker", dest="trackers", action="append", default=[], metavar="NAME",
                   help="an experiment tracker told about every training run, e.g. tensorboard or mlflow "
                        "(repeatable; added to the suite's trackers; see: ood-bench list trackers)")
    p.add_argument("--progress", choices=["auto", "bars", "lines", "off"], default="auto",
                   help="auto (default): progress bars on a terminal, periodic lines otherwise "
                        "($OOD_BENCH_PROGRESS_INTERVAL seconds apart, default 30)")
    if _command_of(argv) == "run":  # loading the plugins costs time: only when `run` needs their flags
        _add_executor_flags(p)

    p = sub.add_parser("data", parents=[common],
                       help="the datasets a suite needs: status, size and source; --download fetches them all")
    _add_suite_args(p, optional=True)
    p.add_argument("--data", type=Path, default=None, help="data root (default: $OOD_BENCH_DATA or ./data)")
    p.add_argument("--download", action="store_true",
                   help="download every dataset that is not ready (checksums verified), then list them again")

    p = sub.add_parser("leaderboard", parents=[common], help="rebuild RESULTS/leaderboard.csv from the records")
    p.add_argument("results", type=Path, help="the results folder of an ood-bench run")
    p.add_argument("--wait", type=float, default=0,
                   help="seconds to wait for a run holding the results folder (default: refuse)")
    p.add_argument("--recompute", action="store_true",
                   help="first recompute every per-cell metric from the stored per-sample scores")

    p = sub.add_parser("tables", parents=[common],
                       help="every report section's tables from RESULTS: the leaderboard by ID dataset, and "
                            "plugins' tables, e.g. a paper's beside its numbers")
    p.add_argument("results", type=Path, help="the results folder of an ood-bench run")
    p.add_argument("--format", choices=["md", "csv"], default="md")

    p = sub.add_parser("report", parents=[common],
                       help="every report section's figures (PNG) and tables on one HTML page")
    p.add_argument("results", type=Path, help="the results folder of an ood-bench run")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: RESULTS/report)")
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so every cleanup path runs the same way."""


def _terminate(signum, frame):
    raise Terminated()


def _command_of(argv: list[str] | None) -> str | None:
    argv = sys.argv[1:] if argv is None else argv
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser(argv)
    except OodBenchError as exc:  # strict plugins (OOD_BENCH_STRICT_PLUGINS=1): a broken one, even for --help
        print(f"ood-bench: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.quiet and args.verbose:
        parser.error("-q/--quiet and -v/--verbose exclude each other")
    from logitnorm_bench import logs

    logs.configure(logs.QUIET if args.quiet else logs.VERBOSE if args.verbose else logs.NORMAL)
    try:
        return _main(args)
    finally:
        logs.reset()


def _main(args) -> int:
    # SIGTERM (kill, SLURM, Kubernetes) takes the Ctrl-C path: workers stopped, leaderboard refreshed.
    previous = (signal.signal(signal.SIGTERM, _terminate)
                if threading.current_thread() is threading.main_thread() else None)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, OodBenchError) as exc:
        if args.debug:
            traceback.print_exc()  # the traceback, but still bad input's exit code
        print(f"ood-bench: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `ood-bench plan ... | head`
        sys.stderr.close()
        return 0
    except OSError as exc:  # a read-only or full results folder, an --out under a file: one line
        if args.debug:
            traceback.print_exc()
        where = f"{exc.filename}: " if exc.filename else ""
        print(one_line(f"ood-bench: error: {where}{exc.strerror or exc}; finished records are kept"),
              file=sys.stderr)
        return 2
    except Terminated:
        print("ood-bench: terminated (SIGTERM); finished records are kept, rerun to resume", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("ood-bench: interrupted; finished records are kept, rerun to resume", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def cmd_list(args) -> int:
    from logitnorm_bench.plugins import KINDS, get_plugins

    plugins = get_plugins()
    for kind in [args.kind] if args.kind else KINDS:
        print(f"{kind}:")
        registry = plugins.registry(kind)
        rows = [(registry.canonical(e.qualified_name), e) for e in registry.all_entries()]
        width = max([16, *(len(name) for name, _ in rows)])  # a bare name's row is what it means
        for name, e in rows:
            desc = f"  {e.description}" if e.description else ""
            print(f"  {name:<{width}} {e.distribution:<20}{desc}")
    return 0


def cmd_plan(args) -> int:
    from logitnorm_bench.plan import load_plan

    suite, plan = load_plan(args.suite, overrides=args.overrides, smoke=args.smoke)
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
    from logitnorm_bench import api
    from logitnorm_bench.suite import parse_override

    options: dict = _executor_flags(args)
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs}: expected a positive integer")
    if args.jobs is not None:
        options["jobs"] = args.jobs
    if args.devices:
        options["devices"] = [d.strip() for d in args.devices.split(",") if d.strip()]
    for item in args.executor_options:
        key, value = parse_override(item)
        options[key] = value
    threads = None
    if args.threads != "auto":
        try:
            threads = int(args.threads)
        except ValueError:
            raise ConfigError(f"--threads {args.threads!r}: expected a positive integer or auto") from None
    from logitnorm_bench.progress import resolve_mode

    progress = "off" if args.quiet else resolve_mode(args.progress)
    outcome = api.run(args.suite, args.results, overrides=args.overrides, smoke=args.smoke, data=args.data,
                      device=args.device, overwrite=args.overwrite, executor=args.executor,
                      executor_options=options, download=not args.no_download, wait=args.wait, threads=threads,
                      trackers=args.trackers, progress=progress, stream_above_mb=args.stream_above_mb,
                      loader_workers=args.loader_workers)
    print(outcome.headline())
    print(outcome.summary.render())
    print(f"next: ood-bench tables {outcome.results}   ood-bench report {outcome.results}")
    if args.smoke:
        print("SMOKE MODE: synthetic stand-in data; these numbers mean nothing.")
    return 1 if outcome.records_failed else 0


def cmd_data(args) -> int:
    from logitnorm_bench.plan import load_plan
    from logitnorm_bench.datacheck import check_data, download_data, render
    from logitnorm_bench.driver import default_data_root

    suite, plan = load_plan(args.suite, overrides=args.overrides, smoke=args.smoke)
    root = args.data if args.data is not None else default_data_root()
    rows = check_data(plan, root)
    if args.download and any(r.status.state != "present" for r in rows):
        print(render(suite.name, rows, root, args.suite))
        rows = download_data(plan, root, rows)
    print(render(suite.name, rows, root, args.suite))
    return 0 if all(r.status.state == "present" for r in rows) else 1


def _results_folder(path: Path) -> Path:
    """A results folder to read: it exists and holds records/ (never an empty leaderboard over a full one)."""
    if not path.is_dir():
        raise ConfigError(f"results folder not found: {path}")
    if not (path / "records").is_dir():
        raise ConfigError(f"{path}: not a results folder (no records/ in it); expected the --results folder "
                          "of an ood-bench run")
    return path


def cmd_leaderboard(args) -> int:
    from logitnorm_bench.leaderboard import recompute_from_scores, write_leaderboard
    from logitnorm_bench.records import ResultsLock

    with ResultsLock(_results_folder(args.results), wait=args.wait):  # never over a run's newer one
        if args.recompute:
            checked, rewritten = recompute_from_scores(args.results, log=lambda m: print(m, file=sys.stderr))
            print(f"recomputed the metrics of {checked} record(s) from their scores; {rewritten} changed",
                  file=sys.stderr)
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


COMMANDS = {"list": cmd_list, "plan": cmd_plan, "run": cmd_run, "data": cmd_data, "leaderboard": cmd_leaderboard,
            "tables": cmd_tables, "report": cmd_report}

if __name__ == "__main__":
    sys.exit(main())
