"""``ood-bench report``: every report section's figures (PNG) and tables on one HTML page.

``write_report(results_dir, out_dir=None)`` writes into ``out_dir`` (default ``RESULTS/report``):

* the sections' figures, as PNG files (see :mod:`logitnorm_bench.overview` and the plugins);
* ``tables.md``, ``tables.csv``: what ``ood-bench tables`` prints (:mod:`logitnorm_bench.tables`);
* ``index.html``: a self-contained page (images by relative path): per section, its
  description, figures (a skipped one says why) and tables.

Sections come from the ``reports`` registry (:func:`logitnorm_bench.reporting.report_sections`);
one without results for it stays off the page.  Smoke results put a banner on the page.
"""

from __future__ import annotations

import html
from pathlib import Path

from logitnorm_bench.records import atomic_write_bytes
from logitnorm_bench.reporting import SMOKE_BANNER, Results, SectionOutput, collect
from logitnorm_bench.tables import any_smoke, render_csv, render_md, tables_html

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
.banner { background: #c62828; color: white; font-size: 1.6em; font-weight: bold; padding: 0.6em;
          text-align: center; margin-bottom: 1em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.85em; }
caption { text-align: left; font-weight: bold; padding: 0.2em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; vertical-align: top; }
th { background: #f3f3f3; }
td.smoke { background: #fff0f0; }
.paper { color: #666; font-size: 0.9em; }
.better { color: #2e7d32; } .worse { color: #c62828; }
.note, .legend, .skipped { color: #555; font-size: 0.9em; max-width: 70em; }
figure { margin: 1em 0; } figcaption { color: #444; font-size: 0.9em; max-width: 60em; }
img { max-width: 100%; border: 1px solid #ddd; }
"""


def _section_html(o: SectionOutput) -> list[str]:
    e = html.escape
    parts = [f"<h2 id='{e(o.name)}'>{e(o.section.title)}</h2>"]
    legend = o.section.description
    if any(t.compares for t in o.tables):
        legend += " Diff colour: green = better than the paper, red = worse."
    if legend.strip():
        parts.append(f"<p class='legend'>{e(legend.strip())}</p>")
    for f in o.figures:
        if f.file is None:
            parts.append(f"<p class='skipped'><b>{e(f.name)}</b>: {e(f.caption)}.</p>")
        else:
            parts.append(f"<figure><img src='{e(f.file)}' alt='{e(f.name)}'><figcaption><b>{e(f.name)}</b>"
                         f"{' (SMOKE)' if f.smoke else ''}: {e(f.caption)}</figcaption></figure>")
    if o.tables:
        parts.append(tables_html(o.tables))
    return parts


def write_report(results_dir, out_dir=None, plugins=None) -> Path:
    """Figures (PNG), tables (md, csv) and ``index.html`` for ``results_dir``; returns the page's path."""
    results = Results.load(results_dir)
    out = Path(out_dir) if out_dir is not None else results.root / "report"
    out.mkdir(parents=True, exist_ok=True)
    outputs = collect(results, out, plugins)
    atomic_write_bytes(out / "tables.md", render_md(outputs).encode())
    atomic_write_bytes(out / "tables.csv", render_csv(outputs).encode())

    smoke = (results.smoke or any(any_smoke(o.tables) for o in outputs)
             or any(f.smoke for o in outputs for f in o.figures))
    e = html.escape
    n_ok = sum(1 for r in results.records if r.get("status") == "ok")
    n_failed = len(results.records) - n_ok
    suites = sorted({str(r["suite"]) for r in results.records if r.get("suite")})
    title = "ood-bench report" + (f": {', '.join(suites)}" if suites else "")
    parts = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
             f"<title>{e(title)}</title>", f"<style>{CSS}</style></head><body>"]
    if smoke:
        parts.append(f"<div class='banner'>{e(SMOKE_BANNER)}<br><small>these results come (at least partly) from "
                     "smoke runs: synthetic stand-in data and a few batches of training</small></div>")
    parts.append(f"<h1>{e(title)}</h1>")
    parts.append(f"<p>Results folder: <code>{e(str(results.root.resolve()))}</code>; {n_ok} record(s) ok, "
                 f"{n_failed} failed; {len(results.runs)} training run(s). Tables also as "
                 "<a href='tables.md'>Markdown</a> and <a href='tables.csv'>CSV</a>.</p>")
    if not outputs:
        parts.append("<p>Nothing to show: no report section found results it can use in this folder.</p>")
    else:
        parts.append("<p>Contents: " + " · ".join(
            f"<a href='#{e(o.name)}'>{e(o.section.title)}</a>"
            + "".join(f" · <a href='#{e(t.name)}'>{e(t.label or t.title)}</a>" for t in o.tables)
            for o in outputs) + "</p>")
    for o in outputs:
        parts += _section_html(o)
    parts.append("</body></html>")
    page = out / "index.html"
    atomic_write_bytes(page, "\n".join(parts).encode("utf-8"))
    return page
