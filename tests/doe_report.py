"""A report-section plugin for another paper: its Table 2 beside our results (docs/plugins.md shows this file)."""

from logitnorm_bench import hookimpl
from logitnorm_bench.reporting import ReportSection, Section, Table

PAPER_FPR95 = {"msp": 21.0, "energy": 15.0}  # "Doe et al. (2024)", Table 2 (made-up numbers)


class DoeTable2(ReportSection):
    title = "Doe et al. (2024): our results vs the paper"
    description = "Each cell: ours mean±std [number of seeds] · paper · ours − paper."

    def tables(self, results):
        where = dict(id_dataset="digits", arch="digits_mlp", loss="ce", ood_dataset="uniform_noise")
        if not results.find(**where):
            return []  # none of its results in this folder: the section stays off the page
        rows = [(det, [results.cell("FPR95↓", paper=fpr95, detector=det, metric="fpr95", **where)])
                for det, fpr95 in PAPER_FPR95.items()]
        return [Table("doe_table2", "Table 2: FPR95 of CE on digits vs uniform noise",
                      [Section("digits (ID), digits_mlp", ["FPR95↓"], rows)])]


@hookimpl
def register_reports(register):
    register("doe2024", DoeTable2, description="Doe et al. (2024): Table 2 beside the paper's numbers.")
