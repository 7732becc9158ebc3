"""OpenOOD v1.5's reference numbers beside ours: one table per benchmark (``openood_cifar10``,
``openood_cifar100``, ``openood_imagenet1k``) with results, a row per detector of :file:`reference.yaml`,
columns near-OOD AUROC, far-OOD AUROC (our ``average:near`` / ``average:far`` leaderboard rows) and ID
accuracy, for CE on the benchmark's architecture (``arch`` in the file; default ``resnet18_32x32``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

from logitnorm_bench import hookimpl
from logitnorm_bench.leaderboard import GROUP_PREFIX, params_text
from logitnorm_bench.reporting import Cell, ReportSection, Results, Section, Table, Value, ood_label, row_value

from ood_bench_openood import plugin

REFERENCE = Path(__file__).resolve().parent / "reference.yaml"
ARCH, LOSS = "resnet18_32x32", "ce"
COLUMNS = (("near_auroc", "auroc", f"{GROUP_PREFIX}near", "Near-OOD AUROC"),
           ("far_auroc", "auroc", f"{GROUP_PREFIX}far", "Far-OOD AUROC"))


@lru_cache(maxsize=1)
def reference() -> dict:
    return yaml.safe_load(REFERENCE.read_text(encoding="utf-8"))


def _ours(rows: list[dict], detector: str, ood: str | None, metric: str) -> Value:
    """Our number for ``detector``: its variant with the fewest parameter changes first (a suite
    records the resolved defaults, e.g. ``temperature: 1``); the others are named in ``variant``."""
    found = [r for r in rows if r["detector"] == detector and (ood is None or ood_label(r) == ood)]
    real = [r for r in found if not r["smoke"]] or found
    if not real:
        return Value()
    real.sort(key=lambda r: (len(r["detector_params"]), params_text(r["detector_params"])))
    value = row_value(real[0], metric)
    if len({params_text(r["detector_params"]) for r in real}) > 1:
        value.variant = params_text(real[0]["detector_params"])
    return value


def benchmark_table(bench: str, ref: dict, rows: list[dict]) -> Table:
    arch = ref.get("arch", ARCH)
    mine = [r for r in rows if r["id_dataset"] == bench and r["arch"] == arch and r["loss"] == LOSS
            and not r["loss_params"]]
    out = []
    for det, entry in ref["detectors"].items():
        cells = [Cell((bench, arch, LOSS, det, ood, metric), label, _ours(mine, det, ood, metric), entry[key][0])
                 for key, metric, ood, label in COLUMNS]
        cells.append(Cell((bench, arch, LOSS, None, None, "id_acc"), "ID Acc",
                          _ours(mine, det, None, "id_acc"), ref["id_accuracy"][0]))
        out.append((f"{entry['openood']} ({det})", cells))
    runs = ref.get("runs", "OpenOOD's numbers: mean of 3 trainings.")
    return Table(f"openood_{bench}", f"OpenOOD v1.5 {bench}: ours vs OpenOOD's leaderboard "
                                     f"(CE, {ref.get('model', 'ResNet18_32x32')})",
                 [Section(f"{bench} (ID), {arch}, {LOSS}", [c[3] for c in COLUMNS] + ["ID Acc"], out)],
                 notes=[f"Reference: {ref.get('source', reference()['source'])}. {runs}"],
                 label=f"OpenOOD {bench}")


class OpenOODReference(ReportSection):
    title = "OpenOOD v1.5: our results vs its leaderboard"
    description = ("Each cell: ours mean±std [number of seeds] · OpenOOD · ours − OpenOOD. AUROC in percent, "
                   "averaged over each group's OOD sets (CIFAR: near the other CIFAR, TinyImageNet; far MNIST, SVHN, "
                   "Textures, Places365. ImageNet-1K: near SSB-hard, NINCO; far iNaturalist, Textures, OpenImage-O). "
                   "“—” = not run yet.")

    def tables(self, results: Results) -> list[Table]:
        ran = {r.get("id_dataset") for r in results.records}
        return [benchmark_table(bench, ref, list(results.rows))
                for bench, ref in reference()["benchmarks"].items() if bench in ran]


@hookimpl
def register_reports(register):
    plugin.register_defined(register, plugin.REPORTS, globals())
