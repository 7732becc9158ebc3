"""``ood-bench tables``: every report section's tables as Markdown or CSV (and as HTML for the page).

A cell shows ours as ``mean±std [number of seeds]``, then ``{parameters}`` when a variant's
parameters are worth showing and ``(smoke)`` for smoke results; ``—`` when not measured (never 0),
with the reason in brackets when there is one.  In a table that compares with a paper, the cell
goes on ``· paper · ours − paper``.

When any cell of a section comes from smoke results, every table heading of that section says
``SMOKE — numbers mean nothing``.
"""

from __future__ import annotations

import csv
import html
import io

from logitnorm_bench.metrics import METRICS
from logitnorm_bench.reporting import SMOKE_BANNER, Cell, Results, SectionOutput, Table, Value, collect

MISSING = "—"
SMOKE_NOTE = (f"**{SMOKE_BANNER}**: some cells come from smoke runs (synthetic stand-in data, a few batches of "
              "training); they are marked (smoke).")
NO_TABLES = "No tables: no report section found results it can use in this folder."
CSV_COLUMNS = ("table", "row", "column", "id_dataset", "arch", "loss", "detector", "ood_dataset", "metric",
               "ours_mean", "ours_std", "n_seeds", "paper", "diff", "smoke", "variant", "note")


def any_smoke(tables: list[Table]) -> bool:
    return any(c.ours.smoke for t in tables for _, _, c in t.cells())


def _num(v: float | None, signed: bool = False) -> str:
    if v is None:
        return MISSING
    return f"{v:+.2f}" if signed else f"{v:.2f}"


def ours_text(v: Value) -> str:
    if v.mean is None:
        return MISSING + (f" ({v.note})" if v.note else "")
    s = f"{v.mean:.2f}±{v.std:.2f}" if v.n_seeds > 1 and v.std is not None else f"{v.mean:.2f}"
    s += f" [{v.n_seeds}]"
    if v.variant:
        s += f" {{{v.variant}}}"
    if v.smoke:
        s += " (smoke)"
    return s


def cell_text(c: Cell) -> str:
    s = f"{ours_text(c.ours)} · {_num(c.paper)}"
    if c.diff is not None:
        s += f" · {_num(c.diff, signed=True)}"
    return s


def heading(t: Table, smoke: bool) -> str:
    return t.title + (f" — {SMOKE_BANNER}" if smoke else "")


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def render_md(outputs: list[SectionOutput]) -> str:
    out = []
    for o in (o for o in outputs if o.tables):
        smoke = any_smoke(o.tables)
        out += [f"# {o.section.title}", ""]
        if smoke:
            out += [SMOKE_NOTE, ""]
        if o.section.description:
            out += [o.section.description, ""]
        for t in o.tables:
            text = cell_text if t.compares else lambda c: ours_text(c.ours)
            out += [f"## {heading(t, smoke)}", ""]
            for s in t.sections:
                out += [f"**{s.heading}**", ""]
                out.append("| | " + " | ".join(_md_escape(c) for c in s.columns) + " |")
                out.append("|---" * (len(s.columns) + 1) + "|")
                for row_label, cells in s.rows:
                    out.append(f"| {_md_escape(row_label)} | " + " | ".join(_md_escape(text(c)) for c in cells) + " |")
                out.append("")
            for n in t.notes:
                out += [f"Note: {n}", ""]
    return "\n".join(out).rstrip() + "\n" if out else NO_TABLES + "\n"


def render_csv(outputs: list[SectionOutput]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    w.writeheader()

    def f(v):
        return "" if v is None else f"{v:.4f}"

    for t in (t for o in outputs for t in o.tables):
        for s, row_label, c in t.cells():
            id_ds, arch, loss, det, ood, metric = c.key
            w.writerow({"table": t.name, "row": f"{s.heading} / {row_label}", "column": c.column,
                        "id_dataset": id_ds, "arch": arch, "loss": loss, "detector": det or "",
                        "ood_dataset": ood or "", "metric": metric,
                        "ours_mean": f(c.ours.mean), "ours_std": f(c.ours.std) if c.ours.mean is not None else "",
                        "n_seeds": c.ours.n_seeds, "paper": f(c.paper), "diff": f(c.diff),
                        "smoke": "true" if c.ours.smoke else "false", "variant": c.ours.variant,
                        "note": c.ours.note})
    return buf.getvalue()


def _td(c: Cell, compares: bool) -> str:
    """Ours bold; in a comparing table the paper and the difference beneath, coloured by the metric's direction."""
    e = html.escape
    cls = " class='smoke'" if c.ours.smoke else ""
    if not compares:
        return f"<td{cls}>{e(ours_text(c.ours))}</td>"
    sub = f"paper {_num(c.paper)}"
    metric = METRICS.get(c.key[5])
    if c.diff is not None:
        better = "" if metric is None else "better" if metric.better(c.ours.mean, c.paper) else "worse"
        sub += f" · <span class='{better}'>Δ {_num(c.diff, True)}</span>"
    return f"<td{cls}><b>{e(ours_text(c.ours))}</b><br><span class='paper'>{sub}</span></td>"


def tables_html(tables: list[Table]) -> str:
    """One section's tables as HTML fragments for the report page."""
    e = html.escape
    smoke = any_smoke(tables)
    out = []
    for t in tables:
        out.append(f"<h3 id='{e(t.name)}'>{e(heading(t, smoke))}</h3>")
        for s in t.sections:
            out.append(f"<table><caption>{e(s.heading)}</caption><tr><th></th>"
                       + "".join(f"<th>{e(c)}</th>" for c in s.columns) + "</tr>")
            for row_label, cells in s.rows:
                out.append(f"<tr><th>{e(row_label)}</th>" + "".join(_td(c, t.compares) for c in cells) + "</tr>")
            out.append("</table>")
        for n in t.notes:
            out.append(f"<p class='note'>Note: {e(n)}</p>")
    return "\n".join(out) + "\n"


def render_tables(results_dir, fmt: str = "md", plugins=None) -> str:
    """Every report section's tables for the records in ``results_dir``: ``md`` or ``csv``."""
    renderers = {"md": render_md, "csv": render_csv}
    if fmt not in renderers:
        raise ValueError(f"unknown table format {fmt!r} (md or csv)")
    return renderers[fmt](collect(Results.load(results_dir), plugins=plugins))
