"""The results folder: atomic files, records, provenance.

Layout (one folder per results directory, shared by every suite run into it)::

    records/<cell_id>.json      one record per evaluation cell (status ok or failed)
    runs/<run_id>/run.json      the training run: identity, status, history, timings
    runs/<run_id>/checkpoint.pt resumable state (model, optimizer, scheduler, RNG, epoch)
    runs/<run_id>/model.pt      final weights (state dict, loaded with weights_only=True)
    leaderboard.csv             rebuilt from the records

Every file is written to a temporary file in the same folder and renamed over the target, so a
kill at any point leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import math
import os
import platform
import logging
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

import logitnorm_bench
from logitnorm_bench.errors import ConfigError

RECORD_SCHEMA = 2  #: 2 added per-sample scores (``scores``) and OOD draws (``draws``); 1 still loads
LOCK_NAME = ".ood-bench.lock"


def _current_umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


# Files are created with the process's umask, as open() would: mkstemp's 0600 would make a shared
# results folder unreadable to the group.
_FILE_MODE = 0o666 & ~_current_umask()


log = logging.getLogger(__name__)


def _warn(message: str) -> None:
    log.warning(message)


class RecordError(ValueError):
    """A record file that parses but is not a record this harness can trust."""


@dataclass
class Record:
    """The result of one evaluation cell, as written to ``records/<cell_id>.json``.

    Inside a process it is this typed object; :meth:`to_json` / :meth:`from_json` are the only
    conversions, used at the disk edge.  ``schema`` is written into every record; records of any
    schema up to :data:`RECORD_SCHEMA` load.  The optional result fields are absent from the file
    when they are ``None`` (a failed cell has ``error`` and no ``metrics``).
    """

    cell_id: str
    run_id: str
    status: str  #: "ok" or "failed"
    id_dataset: str
    arch: str
    loss: str
    detector: str
    ood_dataset: str
    seed: int
    arch_params: dict = field(default_factory=dict)
    loss_params: dict = field(default_factory=dict)
    detector_params: dict = field(default_factory=dict)
    error: str | None = None
    smoke: bool = False
    suite: str = ""
    experiments: list = field(default_factory=list)
    weights: str | None = None
    ood_group: str | None = None  #: the suite's near/far (or other) label of this OOD set, if any
    split: str = "test"
    selection: dict | None = None
    train: dict = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    train_seconds: float = 0.0
    created: str = ""
    schema: int = RECORD_SCHEMA
    # Results (absent on a failed cell):
    metrics: dict | None = None
    run_metrics: dict | None = None
    detector_fit: dict | None = None
    score_hist: dict | None = None
    n_id: int | None = None
    n_ood: int | None = None
    eval_seconds: dict | None = None
    at_chance: bool | None = None
    note: str | None = None
    scores: dict | None = None  #: {"file": NAME.scores.npz beside the record, "sha256": ..., "draws": N}
    draws: list | None = None  #: the metrics of each OOD draw, when evaluation.ood_draws > 1
    #: the suite's dataset params (what differs from the factory's defaults); absent when none
    id_dataset_params: dict | None = None
    ood_dataset_params: dict | None = None

    OPTIONAL = ("metrics", "run_metrics", "detector_fit", "score_hist", "n_id", "n_ood", "eval_seconds",
                "at_chance", "note", "scores", "draws", "ood_group", "id_dataset_params", "ood_dataset_params")

    def to_json(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: v for k, v in out.items() if not (k in self.OPTIONAL and v is None)}

    @classmethod
    def from_json(cls, data: Any, *, current_only: bool = False) -> "Record":
        """Check and type a record read from disk; :class:`RecordError` says what is wrong.

        ``current_only``: a record of an older schema is refused too (a run then recomputes it, so
        that it gains what the current schema holds, e.g. per-sample scores).
        """
        if not isinstance(data, dict):
            raise RecordError(f"expected a JSON object, got {type(data).__name__}")
        schema = data.get("schema")
        if isinstance(schema, bool) or not isinstance(schema, int) or not 1 <= schema <= RECORD_SCHEMA:
            raise RecordError(f"schema {schema!r}: expected an integer from 1 to {RECORD_SCHEMA}")
        if current_only and schema != RECORD_SCHEMA:
            raise RecordError(f"schema {schema} is older than this harness's {RECORD_SCHEMA}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise RecordError(f"unknown field(s) {', '.join(map(repr, unknown))}")
        for name, f in known.items():
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required and name not in data:
                raise RecordError(f"missing field '{name}'")
        for name in ("cell_id", "run_id", "id_dataset", "arch", "loss", "detector", "ood_dataset"):
            if not isinstance(data[name], str):
                raise RecordError(f"field '{name}': expected a string, got {data[name]!r}")
        if data["status"] not in ("ok", "failed"):
            raise RecordError(f"field 'status': expected ok or failed, got {data['status']!r}")
        for name in ("arch_params", "loss_params", "detector_params", "id_dataset_params", "ood_dataset_params"):
            if not isinstance(data.get(name) or {}, dict):
                raise RecordError(f"field '{name}': expected a mapping")
        if data["status"] == "ok":
            _check_metric_values(data)
        return cls(**data)


TMP_SUFFIX = ".tmp"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n").encode())


def atomic_torch_save(path: Path, obj: Any) -> None:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def read_json(path: Path) -> dict | None:
    """A JSON file, or None when it is absent or unreadable (a corrupt file counts as missing)."""
    try:
        with open(path) as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else None
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None


def load_state_or_set_aside(path: Path, map_location="cpu") -> dict | None:
    """A saved state dict, or None; an unreadable file is renamed ``*.corrupt`` and reported (a warning).

    ``weights_only=True``: a results folder is never trusted to unpickle arbitrary objects.
    """
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        bad = path.with_name(path.name + ".corrupt")
        os.replace(path, bad)
        log.warning("%s is unreadable (%s); moved to %s, starting that step again", path.name,
                    type(exc).__name__, bad.name)
        return None


def _check_metric_values(data: dict) -> None:
    """An ok record's metrics: a file that parses but lies (a string, NaN, FPR95 = 7) is not a result."""
    from logitnorm_bench.metrics import METRICS

    for where in ("metrics", "run_metrics"):
        if not isinstance(data.get(where), dict):
            raise RecordError(f"an ok record without '{where}'")
    if not all(name in data["metrics"] for name, m in METRICS.items() if m.scope == "cell"
               and name in ("fpr95", "auroc")):
        raise RecordError("an ok record without fpr95 and auroc")
    for name, m in METRICS.items():
        value = data[m.record_key].get(name)
        if value is None:
            continue  # a metric added to the catalogue after the record was written
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise RecordError(f"{m.record_key}.{name} = {value!r}: expected a finite number")
        if m.percent and not 0.0 <= value <= 1.0:
            raise RecordError(f"{m.record_key}.{name} = {value!r}: expected a fraction in [0, 1]")


class ResultsDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def records_dir(self) -> Path:
        return self.root / "records"

    def record_path(self, cell_id: str) -> Path:
        return self.records_dir / f"{cell_id}.json"

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def read_record(self, cell_id: str, *, run_id: str | None = None,
                    warn: Callable[[str], None] = _warn) -> dict | None:
        """The trusted record of ``cell_id``, or None (absent, or set aside: then it is recomputed).

        Trusted means: valid JSON, a record of the current schema with the right fields and values
        (:meth:`Record.from_json`), filed under its own cell id, and (``run_id`` given, as the plan
        has it) made by that training run.  Anything else is renamed ``<cell_id>.json.invalid`` with
        one warning line, so the cell is computed again instead of silently missing.  Call it only
        while holding the results folder's lock.
        """
        path = self.record_path(cell_id)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            return self._set_aside(path, f"unreadable ({type(exc).__name__})", warn)
        try:
            data = json.loads(text)
            Record.from_json(data, current_only=True)
        except json.JSONDecodeError as exc:
            return self._set_aside(path, f"not valid JSON ({exc.msg} at line {exc.lineno})", warn)
        except RecordError as exc:
            return self._set_aside(path, f"not a valid record ({exc})", warn)
        if data["cell_id"] != cell_id:
            return self._set_aside(path, f"holds the record of another cell ({data['cell_id']})", warn)
        prov = data.get("provenance") or {}
        if run_id is not None and (data["run_id"] != run_id or prov.get("config_hash", run_id) != run_id
                                   or prov.get("cell_hash", cell_id) != cell_id):
            return self._set_aside(path, f"was made by another training run ({data['run_id']}, not {run_id})",
                                   warn)
        return data

    @staticmethod
    def _set_aside(path: Path, why: str, warn: Callable[[str], None]) -> None:
        bad = path.with_name(path.name + ".invalid")
        try:
            os.replace(path, bad)
        except OSError:
            pass  # a read-only folder: the record is still ignored
        warn(f"record {path.name} {why}; moved to {bad.name}, computing that cell again")
        return None

    def remove_temp_files(self) -> int:
        """Remove what a killed atomic write left (``.NAME.*.tmp``); only while holding the lock."""
        n = 0
        for tmp in self.root.rglob(f".*{TMP_SUFFIX}"):
            try:
                tmp.unlink()
                n += 1
            except OSError:
                pass
        return n

    def write_record(self, record: Record) -> None:
        atomic_write_json(self.record_path(record.cell_id), record.to_json())

    def write_scores(self, cell_id: str, id_scores, ood_scores: list) -> dict:
        """Per-sample scores beside the record (float32, compressed, atomic); the record's reference.

        Written before the record, so a record never points to a file that is not there yet.
        """
        import io

        import numpy as np

        arrays = {"id": np.asarray(id_scores, dtype=np.float32)}
        arrays.update({f"ood_{d}": np.asarray(s, dtype=np.float32) for d, s in enumerate(ood_scores)})
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        data = buf.getvalue()
        name = f"{cell_id}.scores.npz"
        atomic_write_bytes(self.records_dir / name, data)
        return {"file": name, "sha256": hashlib.sha256(data).hexdigest(), "draws": len(ood_scores)}

    def read_scores(self, record: dict):
        """(ID scores, [OOD scores per draw]) of a record, checked against its SHA-256; None if it has none."""
        import io

        import numpy as np

        ref = record.get("scores")
        if not ref:
            return None
        data = (self.records_dir / ref["file"]).read_bytes()
        if hashlib.sha256(data).hexdigest() != ref["sha256"]:
            raise RecordError(f"{ref['file']} does not match the SHA-256 its record gives")
        with np.load(io.BytesIO(data)) as z:
            return z["id"], [z[f"ood_{d}"] for d in range(ref["draws"])]

    def records(self, warn: Callable[[str], None] = _warn) -> Iterator[dict]:
        """Every trusted record, as its JSON mapping.  An untrusted file (see :meth:`read_record`) is
        skipped with one warning line; the next ``run`` sets it aside and recomputes the cell."""
        if not self.records_dir.is_dir():
            return
        for path in sorted(self.records_dir.glob("*.json")):
            rec = read_json(path)
            try:
                Record.from_json(rec)
            except RecordError as exc:
                warn(f"record {path.name} is not a valid record ({exc}); left out (the next run recomputes it)")
                continue
            if rec["cell_id"] != path.stem:
                warn(f"record {path.name} holds the record of another cell; left out (the next run "
                     "recomputes it)")
                continue
            yield rec

    def read_run(self, run_id: str) -> dict | None:
        return read_json(self.run_dir(run_id) / "run.json")

    def write_run(self, run_id: str, info: dict) -> None:
        atomic_write_json(self.run_dir(run_id) / "run.json", info)


class ResultsLock:
    """The results folder's lock (``.ood-bench.lock``): exclusive for a run and for commands that
    write into the folder (``leaderboard``, ``report``), shared for readers (``tables``).

    A second holder is refused with one line (exit 2) unless ``wait`` seconds are given to wait.
    The lock file is never followed through a symbolic link.
    """

    def __init__(self, root: str | Path, wait: float = 0, shared: bool = False):
        if not (math.isfinite(wait) and wait >= 0):
            raise ConfigError(f"--wait {wait:g}: expected a non-negative, finite number of seconds")
        self.root, self.wait, self.shared = Path(root), wait, shared
        self.path = self.root / LOCK_NAME
        self.fd: int | None = None

    def __enter__(self) -> "ResultsLock":
        import fcntl

        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), _FILE_MODE)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ConfigError(f"{self.path} is a symbolic link; expected the results folder's own lock "
                                  "file (remove the link)") from None
            raise ConfigError(f"results folder {self.root}: cannot open its lock file ({exc.strerror})") from None
        mode = fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX
        deadline = time.monotonic() + max(0.0, self.wait)
        while True:
            try:
                fcntl.flock(self.fd, mode | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(self.fd)
                    self.fd = None
                    raise ConfigError(f"results folder {self.root} is in use by another ood-bench run (lock "
                                      f"{self.path}); wait for it to finish, pass --wait SECONDS, or use another "
                                      "--results") from None
                time.sleep(0.1)

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the flock
            self.fd = None


_GIT: str | None | bool = False


def git_commit() -> str | None:
    global _GIT
    if _GIT is False:
        try:
            here = Path(logitnorm_bench.__file__).resolve().parent
            out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                                 text=True, timeout=5)
            _GIT = out.stdout.strip() if out.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            _GIT = None
    return _GIT  # type: ignore[return-value]


def provenance(plugins, device: torch.device | str) -> dict:
    return {
        "harness_version": logitnorm_bench.__version__,
        "git_commit": git_commit(),
        "plugins": plugins.versions(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "device": str(device),
        # CPU results depend on the thread count (float reductions in another order): recorded.
        "torch_threads": torch.get_num_threads(),
    }
