"""``ood-bench data SUITE``: every dataset a suite needs, its status, size and source; ``--download``
fetches all of them before a long run.

A dataset says what it knows through :meth:`DatasetSource.status
<logitnorm_bench.components.DatasetSource.status>` (the default builds each split with downloading
off: present or missing); ``--download`` builds each split with downloading on, so every dataset
downloads (and verifies) the way ``ood-bench run`` would, one after the other, and a failure of one
does not stop the others.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from logitnorm_bench.components import DataContext, DataStatus
from logitnorm_bench.data_views import DataSources
from logitnorm_bench.reporting import variant_name
from logitnorm_bench.driver import id_first, data_command, needed_data
from logitnorm_bench.errors import one_line
from logitnorm_bench.plugins import get_plugins

log = logging.getLogger(__name__)


@dataclass
class DataRow:
    name: str  #: the dataset as shown: its name, with its params when the suite sets any
    splits: tuple[str, ...]
    status: DataStatus
    key: tuple[str, str] = ("", "{}")  #: (name, params JSON): what it is built from


def _splits(source, wanted: set[str]) -> tuple[str, ...]:
    # A selection's "val" of a dataset without a val split reads its training images instead.
    out = {s if s in source.splits else "train" for s in wanted if s in source.splits or s == "val"}
    return tuple(sorted(s for s in out if s in source.splits))


def check_data(plan, root: Path) -> list[DataRow]:
    """The status of every dataset the plan's runs need (all of them, done or not)."""
    sources = DataSources(get_plugins(), smoke=False)
    ctx = DataContext(root=Path(root), download=False)
    rows = []
    needed = needed_data(plan)
    for key in id_first(plan, needed):
        name, params = key[0], json.loads(key[1])
        source = sources(name, params)
        splits = _splits(source, needed[key])
        try:
            status = source.status(splits, ctx)
        except Exception as exc:  # noqa: BLE001 - a plugin's status must not hide the others
            status = DataStatus("missing", detail=f"its status check failed: {one_line(type(exc).__name__)}: "
                                                  f"{one_line(exc)}")
        rows.append(DataRow(variant_name(name, params), splits, status, key))
    return rows


def download_data(plan, root: Path, rows: list[DataRow]) -> list[DataRow]:
    """Download every dataset that is not present (each verifies its checksums); the statuses after."""
    sources = DataSources(get_plugins(), smoke=False)
    for name, params in id_first(plan, needed_data(plan)):
        sources(name, json.loads(params))  # the same shapes as check_data
    ctx = DataContext(root=Path(root), download=True)
    for row in rows:
        if row.status.state == "present":
            continue
        log.info("%s: downloading%s", row.name, f" from {row.status.source}" if row.status.source else "")
        for split in row.splits:
            try:
                sources(row.key[0], json.loads(row.key[1])).build(split, ctx)
            except Exception as exc:  # noqa: BLE001 - go on with the other datasets
                log.error("%s: %s", row.name, one_line(exc))
                break
    return check_data(plan, root)


def human_size(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def render(suite: str, rows: list[DataRow], root: Path, suite_ref) -> str:
    """The table ``ood-bench data`` prints, with what to do next."""
    heads = ("dataset", "splits", "status", "size", "source")
    table = []
    for r in rows:
        st = r.status
        size = human_size(st.size)
        if st.state == "missing" and st.size is not None:
            size += " to fetch"
        table.append((r.name, ",".join(r.splits), st.state, size, st.source or "-"))
    widths = [max(len(h), *(len(t[i]) for t in table)) if table else len(h) for i, h in enumerate(heads)]
    lines = [f"suite {suite}: {len(rows)} dataset(s) under {root}"]
    lines.append("  ".join(h.ljust(w) for h, w in zip(heads, widths)).rstrip())
    for t in table:
        lines.append("  ".join(c.ljust(w) for c, w in zip(t, widths)).rstrip())
    for r in rows:
        if r.status.state != "present" and r.status.detail:
            lines.append(f"  {r.name}: {one_line(r.status.detail)}")
    not_ready = [r.name for r in rows if r.status.state != "present"]
    if not_ready:
        lines.append(f"{len(not_ready)} of {len(rows)} not ready ({', '.join(not_ready)}); fetch them with: "
                     f"{data_command(suite_ref)} --download")
    else:
        lines.append("every dataset is ready")
    return "\n".join(lines)
