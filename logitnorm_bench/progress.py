"""Live progress of a suite: bars on a terminal, periodic plain lines elsewhere.

The worker reports what its run does through a :class:`RunReporter`: one DEBUG log line per epoch
(the log file keeps every epoch) and small events (run started, epoch ended, batch, evaluation
step, record written, run finished).  The process running the suite feeds them, with the
executor's summaries, to a :class:`Monitor`, which shows

* on a terminal, progress bars: the suite (runs done / total, cells done / total, an ETA from the
  measured epoch times) and one bar per run in progress (epoch, loss, accuracy, lr; then the
  evaluation's cells);
* elsewhere (a pipe, CI, a log file, a Ray task on another node), the same information as plain
  lines, at most one per run every ``interval`` seconds (``$OOD_BENCH_PROGRESS_INTERVAL``, default
  30), plus the first and last epoch of each run: never one per batch.

The bars are tqdm's.  tqdm rather than rich: it is one small pure-Python package without
dependencies, imports in milliseconds, and its ``tqdm.write`` prints log lines above the bars;
rich's live tables would need two more packages for a display this simple.

Events are throttled where they start (a batch event at most every ``BATCH_EVENT_SECONDS``), so a
training step pays one clock read: ``benchmarks/train_overhead.py`` measures it.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

log = logging.getLogger(__name__)

INTERVAL_ENV = "OOD_BENCH_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 30.0
BATCH_EVENT_SECONDS = 0.5
MODES = ("auto", "bars", "lines", "off")

_current: "Monitor | None" = None


def interval_from_env() -> float:
    try:
        return max(0.0, float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


def current() -> "Monitor | None":
    """The monitor of the suite this process is running, if any (an in-process worker reports to it)."""
    return _current


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(max(0, seconds))
    d, rem = divmod(seconds, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    if d:
        return f"{d}d{h:02d}h"
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def resolve_mode(mode: str, stream=None) -> str:
    """``auto``: bars on a terminal (not ``TERM=dumb``), lines elsewhere."""
    if mode != "auto":
        return mode
    stream = stream or sys.stderr
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    if not tty or os.environ.get("TERM") == "dumb":
        return "lines"
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return "lines"
    return "bars"


# ------------------------------------------------------------------------------------------
# The worker's side
# ------------------------------------------------------------------------------------------


class RunReporter:
    """What one training run reports, from wherever it runs.

    ``sink(event)`` receives the events (the suite's :class:`Monitor`, directly or through the
    worker's channel); without one, a private monitor turns them into periodic lines in this
    process's log.
    """

    def __init__(self, tag: str, run_id: str, sink: Callable[[dict], None] | None = None,
                 interval: float | None = None):
        self.tag, self.run_id = tag, run_id
        if sink is None:
            sink = Monitor([], mode="lines", interval=interval).handle
        self.sink = sink
        self._next_batch = 0.0
        self._start = 0
        self._t0 = time.perf_counter()

    def _send(self, kind: str, **event) -> None:
        try:
            self.sink(dict(event, e=kind, run_id=self.run_id, tag=self.tag))
        except Exception:  # noqa: BLE001 - progress is a nicety: never fail a run for it
            log.debug("progress event %s not delivered", kind, exc_info=True)

    def started(self, mode: str, epochs: int = 0, start_epoch: int = 0, cells: int = 0,
                key: str = "") -> None:
        """``mode``: ``train``, ``reuse`` (trained weights found) or ``weights`` (given weights)."""
        self._start, self._t0 = start_epoch, time.perf_counter()
        self._send("start", mode=mode, epochs=epochs, start_epoch=start_epoch, cells=cells, key=key)

    def epoch(self, entry: dict, epochs: int) -> None:
        """An epoch ended: ``entry`` is its history entry (epoch, loss, train_acc, lr, seconds, ...)."""
        epoch = int(entry["epoch"])
        eta = (time.perf_counter() - self._t0) / max(epoch - self._start, 1) * (epochs - epoch)
        log.debug("epoch %d/%d loss %.4f acc %.3f lr %.4g (%.1fs/epoch, ETA %s)", epoch, epochs, entry["loss"],
                  entry["train_acc"], entry["lr"], entry["seconds"], fmt_time(eta))
        self._send("epoch", epoch=epoch, epochs=epochs, loss=float(entry["loss"]),
                   acc=float(entry["train_acc"]), lr=float(entry["lr"]), seconds=float(entry["seconds"]))

    def batch(self, done: int, total: int) -> None:
        """Called after every training step: one clock read, an event at most every half second."""
        now = time.monotonic()
        if now < self._next_batch:
            return
        self._next_batch = now + BATCH_EVENT_SECONDS
        self._send("batch", batch=done, batches=total)

    def evaluating(self, done: int, total: int) -> None:
        self._send("eval", done=done, total=total)

    def record(self, ok: bool) -> None:
        self._send("record", ok=bool(ok))

    def finished(self, status: str, error: str | None = None, id_acc: float | None = None) -> None:
        self._send("end", status=status, error=error, id_acc=id_acc)


# ------------------------------------------------------------------------------------------
# The suite's side
# ------------------------------------------------------------------------------------------


@dataclass
class _Run:
    run_id: str
    tag: str = ""
    epochs: int = 0  #: epochs of the recipe (0: given weights)
    cells: int = 0
    key: str = ""  #: runs of one key (ID dataset and architecture) take about as long per epoch
    epoch: int = 0  #: epochs done
    started: bool = False
    done: bool = False
    cells_done: int = 0
    t_start: float = 0.0
    t_eval: float | None = None
    last_line: float = -1.0  #: when this run's last progress line was written (or it started)
    epoch_shown: bool = False
    last: dict = field(default_factory=dict)
    slot: int | None = None


class Monitor:
    """The progress of one ``run_plan``: runs and cells done, an ETA, and the display.

    ``runs``: ``(run_id, tag, epochs, cells, key)`` per training run to do (more may be added with
    :meth:`add_runs`, e.g. a selection's test runs).  ``mode``: ``bars``, ``lines`` or ``off``.
    ``jobs``: runs at once (for the ETA; None: as many as are seen running at once).
    """

    def __init__(self, runs: Iterable[tuple], *, mode: str = "lines", interval: float | None = None,
                 jobs: int | None = None, stream=None):
        self.mode = mode
        self.interval = interval_from_env() if interval is None else interval
        self.jobs = jobs
        self.stream = stream
        self.runs: dict[str, _Run] = {}
        self.epoch_seconds: dict[str, list[float]] = {}
        self.eval_seconds: list[float] = []
        self.max_parallel = 1
        self.lock = threading.RLock()
        self.t0 = time.monotonic()
        self._suite_done = 0
        self._bars = None
        self.add_runs(runs)

    # -- bookkeeping ---------------------------------------------------------------------------
    def add_runs(self, runs: Iterable[tuple]) -> None:
        with self.lock:
            for run_id, tag, epochs, cells, key in runs:
                self.runs[run_id] = _Run(run_id, tag, int(epochs), int(cells), key)
            if self._bars is not None:
                self._bars.suite.total = len(self.runs)
                self._bars.refresh_suite(self)

    @property
    def runs_done(self) -> int:
        return sum(r.done for r in self.runs.values())

    @property
    def cells_done(self) -> int:
        return sum(r.cells_done for r in self.runs.values())

    @property
    def cells_total(self) -> int:
        return sum(r.cells for r in self.runs.values())

    def _per_epoch(self, key: str) -> float | None:
        own = self.epoch_seconds.get(key)
        if own:
            return sum(own[-20:]) / len(own[-20:])
        every = [s for v in self.epoch_seconds.values() for s in v[-20:]]
        return sum(every) / len(every) if every else None

    def eta(self) -> float | None:
        """Seconds left: the epochs left of every run times its measured seconds per epoch, plus a
        measured evaluation per run left, over the runs that go at once."""
        left = [r for r in self.runs.values() if not r.done]
        if not left:
            return 0.0
        total = 0.0
        per_eval = sum(self.eval_seconds) / len(self.eval_seconds) if self.eval_seconds else 0.0
        for r in left:
            epochs_left = max(0, r.epochs - r.epoch)
            if epochs_left:
                per = self._per_epoch(r.key)
                if per is None:
                    return None
                total += epochs_left * per
            if r.t_eval is None:
                total += per_eval
        parallel = max(1, min(self.jobs or self.max_parallel, len(left)))
        return total / parallel

    def suite_text(self) -> str:
        return (f"{self.runs_done}/{len(self.runs)} run(s), {self.cells_done}/{self.cells_total} cell(s), "
                f"ETA {fmt_time(self.eta())}")

    # -- events ----------------------------------------------------------------------------------
    def handle(self, event: dict) -> None:
        """An event from a :class:`RunReporter` (any thread)."""
        with self.lock:
            run = self.runs.get(event.get("run_id"))
            if run is None:  # a run this monitor was not told about (a direct call): track it anyway
                run = self.runs[event.get("run_id")] = _Run(event.get("run_id"), event.get("tag", ""))
            run.tag = event.get("tag") or run.tag
            kind = event.get("e")
            now = time.monotonic()
            if kind == "start":
                run.started, run.t_start, run.t_eval = True, now, None
                run.epochs = int(event.get("epochs") or 0) if event.get("mode") == "train" else 0
                run.epoch = int(event.get("start_epoch") or 0)
                run.cells = int(event.get("cells") or run.cells)
                run.key = event.get("key") or run.key
                self.max_parallel = max(self.max_parallel,
                                        sum(r.started and not r.done for r in self.runs.values()))
            elif kind == "epoch":
                run.epoch = int(event["epoch"])
                run.epochs = int(event.get("epochs") or run.epochs)
                run.last = event
                self.epoch_seconds.setdefault(run.key, []).append(float(event.get("seconds") or 0.0))
            elif kind == "batch":
                run.last = dict(run.last, batch=event["batch"], batches=event["batches"])
            elif kind == "eval":
                if run.t_eval is None:
                    run.t_eval = now
                run.last = dict(run.last, eval_done=event["done"], eval_total=event["total"])
            elif kind == "record":
                run.cells_done += 1
            elif kind == "end":
                self._end(run, now)
            self._show(run, kind, event, now)

    def summary(self, summary: dict) -> None:
        """An executor's summary of a finished run (the definitive count, also for runs that could not
        report, such as a Ray task on another node or a worker that died)."""
        with self.lock:
            run = self.runs.get(summary.get("run_id"))
            if run is None:
                return
            run.cells_done = max(run.cells_done, int(summary.get("records_ok", 0)) + int(summary.get("records_failed", 0)))
            if not run.done:
                self._end(run, time.monotonic())
            self._show(run, "summary", summary, time.monotonic())

    def _end(self, run: _Run, now: float) -> None:
        if run.t_eval is not None:
            self.eval_seconds.append(now - run.t_eval)
        run.done, run.epoch = True, max(run.epoch, run.epochs)

    # -- display ---------------------------------------------------------------------------------
    def _show(self, run: _Run, kind: str, event: dict, now: float) -> None:
        if self.mode == "bars" and self._bars is not None:
            self._bars.update(self, run, kind)
        elif self.mode == "lines":
            self._line(run, kind, event, now)

    def _line(self, run: _Run, kind: str, event: dict, now: float) -> None:
        extra = {"run": run.tag, "progress_line": True}
        if kind == "start":
            run.last_line = now  # the clock of this run's periodic lines starts now
        elif kind == "epoch":
            first, last = not run.epoch_shown, run.epoch >= run.epochs
            run.epoch_shown = True
            if first or last or now - run.last_line >= self.interval:
                run.last_line = now
                e = event
                log.info("epoch %d/%d loss %.4f acc %.3f lr %.4g (%.1fs/epoch) | suite: %s", e["epoch"], e["epochs"],
                         e["loss"], e["acc"], e["lr"], e["seconds"], self.suite_text(), extra=extra)
        elif kind == "batch" and run.last_line >= 0 and now - run.last_line >= self.interval:
            run.last_line = now
            log.info("epoch %d/%d: batch %d/%d | suite: %s", run.epoch + 1, run.epochs, event["batch"],
                     event["batches"], self.suite_text(), extra=extra)
        elif kind == "eval" and (now - run.last_line >= self.interval or event["done"] == event["total"]):
            run.last_line = now
            log.info("evaluated %d/%d cell(s) | suite: %s", event["done"], event["total"], self.suite_text(),
                     extra=extra)
        elif kind in ("end", "summary") and self.runs_done != self._suite_done:
            self._suite_done = self.runs_done  # one suite line per finished run
            log.info("suite: %s", self.suite_text(), extra={"run": "", "progress_line": True})

    # -- bars ------------------------------------------------------------------------------------
    def __enter__(self) -> "Monitor":
        global _current
        _current = self
        if self.mode == "bars":
            from logitnorm_bench import logs

            self._bars = _Bars(self, self.stream or sys.stderr)
            self._bars_ctx = logs.bars_on_screen(self._bars)
            self._bars_ctx.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        global _current
        _current = None
        if self._bars is not None:
            try:
                self._bars.close()
            finally:
                self._bars_ctx.__exit__(None, None, None)
                self._bars = None


def _width(stream) -> dict:
    """tqdm's size options: follow the terminal, or 100 x 40 where it reports none (a bare pty, on
    which tqdm would draw nothing)."""
    try:
        size = os.get_terminal_size(stream.fileno())
        if size.columns > 0 and size.lines > 0:
            return {"dynamic_ncols": True}
    except (AttributeError, OSError, ValueError):
        pass
    return {"ncols": 100, "nrows": 40}


class _Bars:
    """The tqdm bars: the suite on top, one slot per run in progress below (reused, never moved)."""

    REFRESH = 0.2

    def __init__(self, monitor: Monitor, stream):
        from tqdm import tqdm

        self.tqdm, self.stream = tqdm, stream
        self.size = _width(stream)
        self.suite = tqdm(total=len(monitor.runs), desc="suite", unit="run", position=0, leave=False,
                          file=stream, **self.size,
                          bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} runs [{elapsed}]{postfix}")
        self.slots: list = []
        self.free: list[int] = []
        self._last = 0.0
        self.refresh_suite(monitor)
        # The elapsed time and the ETA move on between events too (workers starting, a long epoch).
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, args=(monitor,), name="ood-bench-bars", daemon=True)
        self._ticker.start()

    def _tick(self, monitor: Monitor) -> None:
        while not self._stop.wait(1.0):
            with monitor.lock:
                self.refresh_suite(monitor)

    def write(self, text: str) -> None:
        self.tqdm.write(text, file=self.stream)

    def refresh_suite(self, monitor: Monitor) -> None:
        self.suite.n = monitor.runs_done
        self.suite.set_postfix_str(f"{monitor.cells_done}/{monitor.cells_total} cells, ETA {fmt_time(monitor.eta())}",
                                   refresh=False)
        self.suite.refresh()

    def _slot(self, run: _Run):
        if run.slot is None:
            if self.free:
                run.slot = self.free.pop(0)
            else:
                run.slot = len(self.slots)
                self.slots.append(self.tqdm(total=1, position=len(self.slots) + 1, leave=False, file=self.stream,
                                            **self.size, bar_format="{desc} {bar} {n_fmt}/{total_fmt}{postfix}"))
        return self.slots[run.slot]

    def update(self, monitor: Monitor, run: _Run, kind: str) -> None:
        now = time.monotonic()
        bar = self._slot(run) if not run.done or run.slot is not None else None
        if kind == "start" and bar is not None:
            bar.reset(total=max(run.epochs, 1))
            bar.n = min(run.epoch, run.epochs)
            bar.set_description_str(f"[{run.tag}] {'train' if run.epochs else 'load'}", refresh=False)
            bar.set_postfix_str("", refresh=False)
        elif kind in ("epoch", "batch") and bar is not None:
            last = run.last
            bar.n = run.epoch
            text = ""
            if "loss" in last:
                text = f"loss {last['loss']:.4f} acc {last['acc']:.3f} lr {last['lr']:.3g}"
            if kind == "batch" and "batches" in last:
                text += f" · batch {last['batch']}/{last['batches']}"
            bar.set_postfix_str(text, refresh=False)
        elif kind == "eval" and bar is not None:
            total = int(run.last.get("eval_total") or 1)
            if bar.total != total or not bar.desc.endswith("eval"):
                bar.reset(total=total)
                bar.set_description_str(f"[{run.tag}] eval", refresh=False)
            bar.n = int(run.last.get("eval_done") or 0)
            bar.set_postfix_str("cells", refresh=False)
        if run.done and run.slot is not None:
            done = self.slots[run.slot]
            done.set_description_str("(idle)", refresh=False)
            done.set_postfix_str("", refresh=False)
            done.reset(total=1)
            self.free.append(run.slot)
            run.slot = None
            self.free.sort()
        if kind in ("start", "end", "summary", "record") or now - self._last >= self.REFRESH:
            self._last = now
            for b in self.slots:
                b.refresh()
            self.refresh_suite(monitor)

    def close(self) -> None:
        self._stop.set()
        self._ticker.join(timeout=2)
        for b in reversed(self.slots):
            b.close()
        self.suite.close()


class ByteMeter:
    """A download's progress: a tqdm bar on a terminal (when the CLI shows progress), else a line
    every ``interval`` seconds in the log."""

    def __init__(self, name: str, total: int | None, interval: float | None = None):
        from logitnorm_bench import logs

        self.name, self.total, self.done = name, total, 0
        self.interval = interval_from_env() if interval is None else interval
        self._next = time.monotonic() + self.interval
        level = logs.console_level()
        self.bar = None
        if level is not None and level <= logging.INFO and resolve_mode("auto") == "bars":
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=name, unit="B", unit_scale=True, unit_divisor=1024, leave=False,
                            file=sys.stderr, **_width(sys.stderr))

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.interval
            log.info("downloading %s: %s", self.name, self._text())

    def _text(self) -> str:
        mib = self.done / 2 ** 20
        if self.total:
            return f"{mib:.1f} of {self.total / 2 ** 20:.1f} MiB ({100 * self.done / self.total:.0f}%)"
        return f"{mib:.1f} MiB"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        log.debug("downloaded %s: %s", self.name, self._text())
