"""The report contract: what a plugin implements to add tables and figures, and what it gets.

A plugin registers a :class:`ReportSection` through ``register_reports``.  ``ood-bench tables``
and ``ood-bench report`` build one :class:`Results` view of the results folder, hand it to every
section, and render what they return: :class:`Table` objects (Markdown, CSV and HTML, see
:mod:`logitnorm_bench.tables`) and :class:`Figure` objects (PNG files on the HTML page, see
:mod:`logitnorm_bench.report`).  A section returns nothing when the results it needs are absent,
so it stays off the page.

A table cell compares one key ``(id_dataset, arch, loss, detector, ood_dataset, metric)``: ours
(mean ± std over seeds, from the leaderboard rows) and, optionally, the number a paper printed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from logitnorm_bench.leaderboard import PARAM_COLUMNS, build_rows, params_text
from logitnorm_bench.records import ResultsDir

SMOKE_BANNER = "SMOKE — numbers mean nothing"
KEY_FIELDS = ("id_dataset", "arch", "loss", "detector", "ood_dataset", "metric")


# ------------------------------------------------------------------------------------------
# What a section gets: the results folder, read once
# ------------------------------------------------------------------------------------------

class Results:
    """A read-only view of one results folder, built once and shared by every report section.

    ``records``: every readable record (ok and failed); ``rows``: the leaderboard rows
    (:func:`logitnorm_bench.leaderboard.build_rows`: mean and std over seeds, parameters as
    mappings, metrics in display units); ``runs``: the ``run.json`` of every training run that
    has a per-epoch ``history``.  Sections must not modify them.
    """

    def __init__(self, root: str | Path, records, runs=()):
        self.root = Path(root)
        self.records: tuple[dict, ...] = tuple(records)
        self.runs: tuple[dict, ...] = tuple(runs)

    @classmethod
    def load(cls, root: str | Path) -> Results:
        folder = ResultsDir(root)
        runs_dir = folder.root / "runs"
        run_ids = sorted(p.name for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []
        runs = []
        for run_id in run_ids:
            info = folder.read_run(run_id)  # None when unreadable: a report never fails on one bad file
            if info and isinstance(info.get("run"), dict) and isinstance(info.get("history"), list):
                runs.append(info)
        return cls(folder.root, folder.records(), runs)

    @cached_property
    def rows(self) -> tuple[dict, ...]:
        return tuple(build_rows(list(self.records)))

    @property
    def smoke(self) -> bool:
        return any(r.get("smoke") for r in self.records) or any(r["run"].get("smoke") for r in self.runs)

    def find(self, **key) -> list[dict]:
        """The leaderboard rows whose fields equal ``key`` (e.g. ``id_dataset="mnist"``); ``None`` matches any."""
        return [r for r in self.rows if all(v is None or r.get(k) == v for k, v in key.items())]

    def value(self, *, metric: str, **key) -> Value:
        """Ours for one key: of the matching rows that measured ``metric``, real before smoke, then
        the one with the most seeds; when parameter variants compete, the chosen one's parameters
        are shown."""
        rows = self.find(**key)
        measured = [r for r in rows if r["n_seeds"] > 0 and r.get(metric) is not None]
        if not measured:
            failed = sum(r["n_failed"] for r in rows)
            return Value(note=f"{failed} failed" if failed else "")
        best = max(measured, key=lambda r: (not r["smoke"], r["n_seeds"]))
        return dataclasses.replace(row_value(best, metric),
                                   variant=variant_label(best, measured, dict.fromkeys(PARAM_COLUMNS, {})))

    def cell(self, column: str, *, paper: float | None = None, **key) -> Cell:
        """A table cell for ``key`` (every field of :data:`KEY_FIELDS`; ``None`` matches any)."""
        return Cell(tuple(key[f] for f in KEY_FIELDS), column, self.value(**key), paper)


def variant_key(row: dict) -> tuple:
    """What tells two leaderboard variants apart (parameters as canonical JSON, smoke or real)."""
    return (row["id_dataset"], row["arch"], params_text(row["arch_params"]), row["loss"],
            params_text(row["loss_params"]), row["detector"], params_text(row["detector_params"]), row["smoke"],
            params_text(row.get("id_dataset_params") or {}))  # last: callers index the fields before it


def ood_label(row: dict) -> str:
    """The OOD set of a row or record with its dataset params (``image_folder(root=/x)``): two folders
    read through one dataset are two sets in every view, never one."""
    return variant_name(row["ood_dataset"], row.get("ood_dataset_params") or {})


# ------------------------------------------------------------------------------------------
# What a section returns: tables and figures
# ------------------------------------------------------------------------------------------

@dataclass
class Value:
    """Ours: mean ± std over ``n_seeds`` seeds; ``mean`` None when not measured (``note`` says why)."""
    mean: float | None = None
    std: float | None = None
    n_seeds: int = 0
    smoke: bool = False
    variant: str = ""  #: parameters worth showing beside the number, e.g. "tau=0.1"
    note: str = ""


def row_value(row: dict, metric: str) -> Value:
    """``metric`` of one leaderboard row (its mean and std over seeds)."""
    if row["n_seeds"] == 0 or row.get(metric) is None:
        return Value(note=f"{row['n_failed']} failed" if row["n_failed"] else "")
    return Value(row[metric], row[f"{metric}_std"], row["n_seeds"], bool(row["smoke"]))


@dataclass
class Cell:
    key: tuple  #: (id_dataset, arch, loss, detector, ood_dataset, metric); None where it does not apply
    column: str
    ours: Value = field(default_factory=Value)
    paper: float | None = None  #: the published number this cell is compared with, if any

    @property
    def diff(self) -> float | None:
        if self.ours.mean is None or self.paper is None:
            return None
        return self.ours.mean - self.paper


@dataclass
class Section:
    """One block of a table: a caption, column labels and labelled rows of cells."""
    heading: str
    columns: list[str]
    rows: list[tuple[str, list[Cell]]]


@dataclass
class Table:
    name: str  #: unique across sections: the CSV's ``table`` column and the page's anchor
    title: str  #: the heading, e.g. "Table 1: OOD detection, ..."
    sections: list[Section]
    notes: list[str] = field(default_factory=list)
    label: str = ""  #: short text for the page's contents, e.g. "Table 1" (default: the title)

    def cells(self):
        for s in self.sections:
            for row_label, cells in s.rows:
                for c in cells:
                    yield s, row_label, c

    @property
    def compares(self) -> bool:
        """Whether the table shows published numbers beside ours."""
        return any(c.paper is not None for _, _, c in self.cells())


@dataclass
class Figure:
    name: str  #: "Figure 4"
    file: str | None  #: path of the PNG relative to the report folder; None when skipped
    caption: str  #: for a skipped figure: why
    smoke: bool = False


class ReportSection:
    """A part of the report: a title, a description, tables and figures.

    Subclass it and override what you contribute; both methods return an empty list when the
    results they need are absent.  ``figures`` writes its PNG files into ``out_dir`` (use
    :mod:`logitnorm_bench.figures`) under names no other section uses, e.g. with a prefix of its
    own.
    """

    title: str = ""
    description: str = ""  #: shown under the title: how to read the section's tables

    def tables(self, results: Results) -> list[Table]:
        return []

    def figures(self, results: Results, out_dir: Path) -> list[Figure]:
        return []


@dataclass
class SectionOutput:
    """What one registered section contributed to a report."""
    name: str  #: its name in the ``reports`` registry
    section: ReportSection
    tables: list[Table]
    figures: list[Figure] = field(default_factory=list)


def report_sections(plugins=None) -> list[tuple[str, ReportSection]]:
    """Every registered section (in registry order), then the core's overview of any suite."""
    from logitnorm_bench.overview import Overview  # here: the overview is built on this module
    from logitnorm_bench.plugins import get_plugins

    plugins = plugins or get_plugins()
    return [(e.name, e.factory()) for e in plugins.reports.entries()] + [("overview", Overview())]


def collect(results: Results, out_dir: Path | None = None, plugins=None) -> list[SectionOutput]:
    """The sections that contribute something; figures only when ``out_dir`` is given."""
    outputs = []
    for name, section in report_sections(plugins):
        out = SectionOutput(name, section, section.tables(results),
                            section.figures(results, out_dir) if out_dir is not None else [])
        if out.tables or out.figures:
            outputs.append(out)
    return outputs


# ------------------------------------------------------------------------------------------
# Parameters as text
# ------------------------------------------------------------------------------------------

def fmt_param(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list):
        return "[" + ",".join(fmt_param(x) for x in v) + "]"
    return str(v)


def same(a, b) -> bool:
    """Equal parameter values; numbers compare with a relative tolerance (0.1 == 0.1000000001)."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-12)
    return a == b


def variant_label(best: dict, candidates: list[dict], expected: dict[str, dict]) -> str:
    """The parameters of the chosen leaderboard row worth showing beside its number.

    ``expected`` maps a parameter field (``loss_params``, ...) to the values the reader expects;
    fields not in it are not shown.  Shown: a parameter that differs from the expected value, and
    one the reader does not expect a value for that varies among the candidate rows.
    """
    parts = []
    for fld, spec in expected.items():
        others = [c[fld] for c in candidates if c is not best]
        for k, v in sorted(best[fld].items()):
            conflict = k in spec and not same(v, spec[k])
            varies = k not in spec and any(k in o and not same(o[k], v) for o in others)
            if conflict or varies:
                parts.append(f"{k}={fmt_param(v)}")
    return ", ".join(parts)


def params_label(params: dict) -> str:
    """``tau=0.04, temperature=1``: the set parameters, sorted by name."""
    return ", ".join(f"{k}={fmt_param(v)}" for k, v in sorted(params.items()) if v is not None)


def variant_name(name: str, params: dict) -> str:
    """``focal(gamma=2)``, or the bare name when there are no parameters."""
    text = params_label(params)
    return f"{name}({text})" if text else name
