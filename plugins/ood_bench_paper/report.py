"""The paper's report section: Tables 1-9 beside the printed numbers, and Figures 1 to 5.

Tables and Figures 1, 4, 5 come only when the results hold records or training runs on the paper's
ID datasets (CIFAR-10 / CIFAR-100); then it lays out all nine tables, ``—`` where a cell is not run
yet.  Figures 2 and 3 come for any ID dataset with a trained CE and LogitNorm pair (the quick
suite's digits too); outside the paper's datasets the section shows only when one of them is drawn,
not for notes alone.
"""

from __future__ import annotations

from pathlib import Path

from logitnorm_bench import hookimpl
from logitnorm_bench.reporting import Figure, ReportSection, Results, Table

from ood_bench_paper.figures import model_figures, paper_figures
from ood_bench_paper.tables import PAPER_ID_DATASETS, build_tables


def _has_paper_results(results: Results) -> bool:
    return (any(r.get("id_dataset") in PAPER_ID_DATASETS for r in results.records)
            or any(r["run"].get("id_dataset") in PAPER_ID_DATASETS for r in results.runs))


class LogitNormPaper(ReportSection):
    title = "LogitNorm (ICML 2022): our results vs the paper"
    description = ("Each cell: ours mean±std [number of seeds] · paper · ours − paper. Metrics in percent "
                   "(L2 norms raw). “—” = not run yet. Parameter variants other than the paper's are shown in "
                   "{braces}.")

    def tables(self, results: Results) -> list[Table]:
        return build_tables(results) if _has_paper_results(results) else []

    def figures(self, results: Results, out_dir: Path) -> list[Figure]:
        model_figs = model_figures(results, out_dir)
        if _has_paper_results(results):
            return paper_figures(results, out_dir, model_figs)
        return model_figs if any(f.file for f in model_figs) else []


@hookimpl
def register_reports(register):
    register("logitnorm_paper", LogitNormPaper,
             description="Wei et al. (ICML 2022): Tables 1-9 beside the paper's numbers; Figures 1-5.")
