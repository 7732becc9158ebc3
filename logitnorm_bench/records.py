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

import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

import logitnorm_bench

RECORD_SCHEMA = 1


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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


def load_state_or_set_aside(path: Path, warn: Callable[[str], None], map_location="cpu") -> dict | None:
    """A saved state dict, or None; an unreadable file is renamed ``*.corrupt`` and reported.

    ``weights_only=True``: a results folder is never trusted to unpickle arbitrary objects.
    """
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        bad = path.with_name(path.name + ".corrupt")
        os.replace(path, bad)
        warn(f"warning: {path.name} is unreadable ({type(exc).__name__}); moved to {bad.name}, "
            "starting that step again")
        return None


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

    def read_record(self, cell_id: str) -> dict | None:
        return read_json(self.record_path(cell_id))

    def write_record(self, record: dict) -> None:
        atomic_write_json(self.record_path(record["cell_id"]), record)

    def records(self) -> Iterator[dict]:
        """Every readable record; corrupt ones are skipped (and redone by the next run)."""
        if not self.records_dir.is_dir():
            return
        for path in sorted(self.records_dir.glob("*.json")):
            rec = read_json(path)
            if rec is not None and rec.get("cell_id") == path.stem:
                yield rec

    def read_run(self, run_id: str) -> dict | None:
        return read_json(self.run_dir(run_id) / "run.json")

    def write_run(self, run_id: str, info: dict) -> None:
        atomic_write_json(self.run_dir(run_id) / "run.json", info)


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
