"""One logging path: stdlib :mod:`logging`, a named logger per module (``logging.getLogger(__name__)``).

Where a record goes:

* **the console** (stderr): set up by the CLI (:func:`configure`): warnings and errors with ``-q``,
  information by default, everything with ``-v``.  While progress bars are on screen a line is
  written above them.  Other libraries' records reach it only from WARNING up.
* **the invocation's log file**, ``RESULTS/logs/<UTC time>-<pid>.log``, at DEBUG level: every epoch,
  every record written, every warning (:func:`run_log`, opened by :func:`logitnorm_bench.api.run`).
* **worker processes** (``--jobs N``, Ray tasks on this machine) send their records and progress
  events back over a local socket (:class:`Channel`); the process running the suite hands them to
  its own handlers, so they reach the same console and the same file.  A worker that cannot reach
  it (a Ray task on another node) logs to its own stderr, which Ray forwards, and appends to the
  log file when it can see it.

Every record carries ``run``: the training run it concerns, as ``3/24 mnist/mlp/cross_entropy/seed0``
(empty outside a run), set by :func:`run_context` in the worker.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

log = logging.getLogger(__name__)

#: The harness's own loggers (and the paper plugin's): DEBUG records from these are kept.
HARNESS_LOGGERS = ("logitnorm_bench", "ood_bench_paper")
QUIET, NORMAL, VERBOSE = logging.WARNING, logging.INFO, logging.DEBUG
FILE_FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)-7s %(process)d %(name)s [%(run)s] %(message)s"

_run = contextvars.ContextVar("ood_bench_run", default="")
_lock = threading.RLock()
_state: dict[str, Any] = {"pid": None, "console": None, "files": [], "levels": {}, "bars": None, "routed": 0}


# ------------------------------------------------------------------------------------------
# Records: the run tag, the console's format and filter
# ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def run_context(tag: str) -> Iterator[None]:
    """Every record logged inside (in this thread) is tagged with the run ``tag``."""
    token = _run.set(tag)
    try:
        yield
    finally:
        _run.reset(token)


def current_run() -> str:
    return _run.get()


class _RunTag(logging.Filter):
    """Adds ``record.run`` (the current run tag) unless the record already has one (from a worker)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "run"):
            record.run = _run.get()
        return True


def _is_harness(name: str) -> bool:
    return any(name == h or name.startswith(h + ".") for h in HARNESS_LOGGERS)


class _ConsoleFilter(logging.Filter):
    """Other libraries' records from WARNING up only; never ``file_only`` records; the periodic
    progress lines only when no bars show the same thing."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "file_only", False):
            return False
        if getattr(record, "progress_line", False) and _state["bars"] is not None:
            return False
        return record.levelno >= logging.WARNING or _is_harness(record.name)


class ConsoleFormatter(logging.Formatter):
    """``[run] message``; warnings and errors say so: ``warning: [run] message``."""

    PREFIX = {logging.WARNING: "warning: ", logging.ERROR: "error: ", logging.CRITICAL: "error: "}

    def format(self, record: logging.LogRecord) -> str:
        run = getattr(record, "run", "")
        text = f"{self.PREFIX.get(record.levelno, '')}{f'[{run}] ' if run else ''}{record.getMessage()}"
        if record.exc_info and record.levelno >= logging.ERROR and logging.getLogger().isEnabledFor(logging.DEBUG):
            text += "\n" + self.formatException(record.exc_info)
        return text


class ConsoleHandler(logging.Handler):
    """Writes to ``sys.stderr`` as it is at each record (so redirections and pytest's capture see it),
    above the progress bars when they are on screen."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            bars = _state["bars"]
            if bars is not None:
                bars.write(text)
            else:
                stream = sys.stderr
                stream.write(text + "\n")
                stream.flush()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging must never take the run down
            self.handleError(record)


class _Fallback(ConsoleHandler):
    """The harness's warnings and errors on stderr when nothing else in this process shows them.

    That is: no console set up by :func:`configure` (the Python API, a test), no worker routing
    (:func:`worker_logging`), and no handler of the root logger writing to stderr or stdout (a user's
    ``logging.basicConfig``).  The standard library's last resort does this only when there is no
    handler at all, and a test runner's capture handler counts as one.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if _state["routed"] or (_state["console"] is not None and _state["pid"] == os.getpid()):
            return False
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler) \
                    and getattr(handler, "stream", None) in (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__):
                return False
        return super().filter(record)


def install_fallback() -> None:
    """Put :class:`_Fallback` on the harness's loggers (once; ``import logitnorm_bench`` does it)."""
    for name in HARNESS_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(h, _Fallback) for h in logger.handlers):
            handler = _Fallback(logging.WARNING)
            handler.setFormatter(ConsoleFormatter())
            handler.addFilter(_RunTag())
            logger.addHandler(handler)


class _UTCFormatter(logging.Formatter):
    converter = time.gmtime


def _file_handler(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(_UTCFormatter(FILE_FORMAT, datefmt="%Y-%m-%dT%H:%M:%S"))
    handler.addFilter(_RunTag())
    return handler


def _harness_levels(level: int) -> None:
    """The harness's loggers create records from ``level`` up (remembering what they had)."""
    for name in HARNESS_LOGGERS:
        logger = logging.getLogger(name)
        _state["levels"].setdefault(name, logger.level)
        logger.setLevel(level)


# ------------------------------------------------------------------------------------------
# Configuration (the CLI) and the invocation's log file (api.run)
# ------------------------------------------------------------------------------------------


def configure(level: int = NORMAL) -> None:
    """The console handler, at ``level`` (``QUIET``, ``NORMAL`` or ``VERBOSE``); idempotent."""
    with _lock:
        root = logging.getLogger()
        if _state["console"] is not None:
            root.removeHandler(_state["console"])
        handler = ConsoleHandler(level)
        handler.setFormatter(ConsoleFormatter())
        handler.addFilter(_RunTag())
        handler.addFilter(_ConsoleFilter())
        root.addHandler(handler)
        _state["console"] = handler
        _state["pid"] = os.getpid()
        _harness_levels(logging.DEBUG)


def console_level() -> int | None:
    """The console's level when :func:`configure` set one up in this process, else None."""
    handler = _state["console"]
    return handler.level if handler is not None and _state["pid"] == os.getpid() else None


def reset() -> None:
    """Undo :func:`configure` and close every log file (the CLI calls it when a command ends)."""
    with _lock:
        root = logging.getLogger()
        for handler in [_state["console"], *_state["files"]]:
            if handler is not None:
                root.removeHandler(handler)
                handler.close()
        for name, level in _state["levels"].items():
            logging.getLogger(name).setLevel(level)
        _state.update(console=None, files=[], levels={}, pid=None, bars=None)


def active_here() -> bool:
    """Whether this process set up the harness's logging (so a worker in it logs straight through)."""
    return _state["pid"] == os.getpid() and (_state["console"] is not None or bool(_state["files"]))


def new_log_path(results: Path) -> Path:
    # Microseconds, because two invocations in one process (the API, the tests) can start within a second,
    # and each must get its own file; the name still sorts by time.
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    path = Path(results) / "logs" / f"{stamp}-{os.getpid()}.log"
    n = 1
    while path.exists():  # a clock that did not move (coarse timers): never append to another invocation's file
        path = path.with_name(f"{stamp}-{os.getpid()}-{n}.log")
        n += 1
    return path


@contextlib.contextmanager
def run_log(results: Path) -> Iterator[Path]:
    """A DEBUG log file for this invocation under ``results/logs/``; yields its path."""
    path = new_log_path(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = _file_handler(path)
    with _lock:
        logging.getLogger().addHandler(handler)
        _state["files"].append(handler)
        if _state["pid"] is None:
            _state["pid"] = os.getpid()
        _harness_levels(logging.DEBUG)
    try:
        yield path.resolve()
    finally:
        with _lock:
            logging.getLogger().removeHandler(handler)
            handler.close()
            if handler in _state["files"]:
                _state["files"].remove(handler)
            if _state["console"] is None and not _state["files"]:
                for name, level in _state["levels"].items():
                    logging.getLogger(name).setLevel(level)
                _state.update(levels={}, pid=None)


def log_files() -> list[Path]:
    """The log files open in this process."""
    return [Path(h.baseFilename) for h in _state["files"]]


def file_only(logger: logging.Logger, message: str) -> None:
    """``message`` at INFO to the log file(s) only (what the CLI prints to stdout itself)."""
    logger.info(message, extra={"file_only": True})


@contextlib.contextmanager
def bars_on_screen(writer) -> Iterator[None]:
    """While inside, console lines go through ``writer.write(text)`` (above the bars)."""
    _state["bars"] = writer
    try:
        yield
    finally:
        _state["bars"] = None


# ------------------------------------------------------------------------------------------
# Worker processes: the channel back to the process running the suite
# ------------------------------------------------------------------------------------------


def _record_to_json(record: logging.LogRecord, run: str) -> dict:
    exc = record.exc_text
    if record.exc_info and not exc:
        exc = logging.Formatter().formatException(record.exc_info)
    return {"name": record.name, "levelno": record.levelno, "levelname": record.levelname,
            "msg": record.getMessage(), "created": record.created, "msecs": record.msecs,
            "process": record.process, "processName": record.processName, "thread": record.thread,
            "threadName": record.threadName, "run": getattr(record, "run", run), "exc_text": exc,
            **{k: True for k in ("file_only", "progress_line") if getattr(record, k, False)}}


class Channel:
    """A local socket (a file in a private temporary folder) that worker processes on this machine
    send their log records and progress events to, one JSON object per line.

    Records are handed to this process's loggers (and so to its console and log file); events to
    ``on_event``.  A worker that cannot connect (another machine) falls back to its own stderr.
    """

    def __init__(self, on_event: Callable[[dict], None] | None = None):
        self.on_event = on_event
        self.folder = tempfile.mkdtemp(prefix="ood-bench-")  # mode 0700: only this user connects
        self.address = os.path.join(self.folder, "channel")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.address)
        self.sock.listen(64)
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, name="ood-bench-channel", daemon=True)
        self._accepter.start()

    @staticmethod
    def available() -> bool:
        return hasattr(socket, "AF_UNIX")

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), name="ood-bench-channel-conn", daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("r", encoding="utf-8", errors="replace") as lines:
            for line in lines:
                try:
                    message = json.loads(line)
                except json.JSONDecodeError:
                    continue
                try:
                    self._dispatch(message)
                except Exception:  # noqa: BLE001 - a bad message must not end the channel
                    log.debug("channel: could not handle a message", exc_info=True)

    def _dispatch(self, message: dict) -> None:
        if "log" in message:
            record = logging.makeLogRecord(message["log"])
            record.args = None
            logging.getLogger(record.name).handle(record)
        elif "event" in message and self.on_event is not None:
            self.on_event(message["event"])

    def close(self) -> None:
        self._closed = True
        try:
            self.sock.close()
        finally:
            for t in self._threads:
                t.join(timeout=2)  # what the workers sent before they finished
            shutil.rmtree(self.folder, ignore_errors=True)


class _ChannelClient:
    def __init__(self, address: str, timeout: float = 5.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(address)
        self.lock = threading.Lock()
        self.broken = False

    def send(self, message: dict) -> None:
        if self.broken:
            return
        data = (json.dumps(message, default=str) + "\n").encode()
        try:
            with self.lock:
                self.sock.sendall(data)
        except OSError:
            self.broken = True  # the suite's process is gone: nothing left to tell

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class _ChannelHandler(logging.Handler):
    def __init__(self, client: _ChannelClient):
        super().__init__(logging.DEBUG)
        self.client = client

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.client.send({"log": _record_to_json(record, _run.get())})
        except Exception:  # noqa: BLE001
            self.handleError(record)


@contextlib.contextmanager
def worker_logging(observe: dict | None) -> Iterator[Callable[[dict], None] | None]:
    """Inside a worker (a work item's run): route this process's records to the suite's process.

    Yields the progress-event sink: the channel (another process), ``None`` when this process runs
    the suite itself (the caller then uses :func:`logitnorm_bench.progress.current`) or when the
    channel is out of reach (then the worker's own stderr gets the lines).
    """
    if active_here() or not observe:
        yield None
        return
    client = None
    if observe.get("channel") and Channel.available():
        try:
            client = _ChannelClient(observe["channel"])
        except OSError:
            client = None
    root = logging.getLogger()
    handlers: list[logging.Handler] = []
    if client is not None:
        handlers.append(_ChannelHandler(client))
    else:  # another machine: this worker's stderr (Ray forwards it) and the log file if it is there
        console = ConsoleHandler(int(observe.get("console_level", NORMAL)))
        console.setFormatter(ConsoleFormatter())
        console.addFilter(_RunTag())
        console.addFilter(_ConsoleFilter())
        handlers.append(console)
        path = observe.get("log_file")
        if path and Path(path).parent.is_dir():
            with contextlib.suppress(OSError):
                handlers.append(_file_handler(Path(path)))
    saved = {name: logging.getLogger(name).level for name in HARNESS_LOGGERS}
    for name in HARNESS_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    for h in handlers:
        root.addHandler(h)
    _state["routed"] += 1
    try:
        yield (lambda event: client.send({"event": event})) if client is not None else None
    finally:
        _state["routed"] -= 1
        for h in handlers:
            root.removeHandler(h)
            h.close()
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
        if client is not None:
            client.close()
