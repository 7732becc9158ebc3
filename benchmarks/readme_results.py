"""The README's "What the quick suite says" section, generated from a results folder of the quick suite.

    ood-bench run --results /tmp/quick                   # the bundled quick suite, default threads
    python benchmarks/readme_results.py /tmp/quick --write README.md

Without ``--write`` it prints the section.  With it, it replaces the README's section from its
``## What the quick suite says`` heading up to the ``<!-- end of generated section -->`` marker.
Every number and every comparison in the section comes from the records: the tables, the sentences
that read them (which loss wins, by how much against the seed spread), and where and how the
results were made (date, git commit, torch and its thread count, CPU model).  The CPU model is this
machine's; the script refuses a folder whose records name another host (``--cpu`` overrides).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

HEADING = "## What the quick suite says"
END = "<!-- end of generated section -->"
LOSSES = ("ce", "logitnorm", "logitpenalty", "godin")
DETECTORS = ("msp", "odin", "energy", "gradnorm")
LOSS_NAMES = {"ce": "CE", "logitnorm": "LogitNorm", "logitpenalty": "LogitPenalty", "godin": "GODIN"}
FAR = ("digits", "average", "`digits` against the average of `photo_patches`, `gaussian_noise` and `uniform_noise`")
NEAR = ("digits_0to4", "digits_5to9", "`digits_0to4` against `digits_5to9`")


def loss_label(loss: str, params: dict) -> str:
    name = LOSS_NAMES.get(loss, loss)
    if loss == "logitnorm" and "tau" in params:
        return f"{name} (τ {params['tau']:g})"
    if loss == "logitpenalty" and "lam" in params:
        return f"{name} (λ {params['lam']:g})"
    return name


def _one(rows: list[dict], **match) -> dict | None:
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    if len(found) > 1:
        raise SystemExit(f"more than one leaderboard row for {match}: not the quick suite's grid")
    return found[0] if found else None


def provenance(records: list[dict], cpu: str | None) -> str:
    import _common as C

    def values(key):
        return sorted({str(r["provenance"].get(key)) for r in records})

    hosts, threads, commits = values("host"), values("torch_threads"), values("git_commit")
    if cpu is None:
        if hosts != [platform.node()]:
            raise SystemExit(f"the records were made on {', '.join(hosts)}, not on this machine ({platform.node()}): "
                             f"pass --cpu with that machine's CPU model")
        cpu = C.cpu_model()
    dates = sorted(r["created"][:10] for r in records)
    when = dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
    return (f"These results were made on {when} with `ood-bench run --results DIR` (the bundled quick suite) at "
            f"git commit {', '.join(f'`{c[:12]}`' for c in commits)}, with torch {', '.join(values('torch'))} "
            f"using {', '.join(threads)} torch thread(s), on CPU {cpu} ({len({r['run_id'] for r in records})} "
            f"trainings, {len(records)} records). Regenerate this section with "
            f"`python benchmarks/readme_results.py DIR --write README.md`.")


def accuracy_table(rows: list[dict]) -> list[str]:
    out = ["| ID set | chance | " + " | ".join(LOSS_NAMES[x] for x in LOSSES) + " |",
           "|---|---|" + "---|" * len(LOSSES)]
    for id_ds, chance in (("digits", 10), ("digits_0to4", 20)):
        cells = []
        for loss in LOSSES:
            r = _one(rows, id_dataset=id_ds, loss=loss, detector="msp", ood_dataset=FAR[1] if id_ds == "digits" else NEAR[1])
            cells.append(f"{r['id_acc']:.2f} ± {r['id_acc_std']:.2f}" if r else "")
        out.append(f"| `{id_ds}` | {chance}% | " + " | ".join(cells) + " |")
    return out


def ood_table(rows: list[dict], id_ds: str, ood: str) -> tuple[list[str], dict]:
    header_losses = []
    for loss in LOSSES:
        r = _one(rows, id_dataset=id_ds, loss=loss, detector="msp", ood_dataset=ood)
        header_losses.append(loss_label(loss, r["loss_params"]) if r else LOSS_NAMES[loss])
    out = ["| detector | " + " | ".join(header_losses) + " |", "|---|" + "---|" * len(LOSSES)]
    grid: dict[tuple[str, str], dict] = {}
    for det in DETECTORS:
        found = {loss: _one(rows, id_dataset=id_ds, loss=loss, detector=det, ood_dataset=ood) for loss in LOSSES}
        grid.update({(loss, det): r for loss, r in found.items() if r})
        best = min((r["fpr95"] for r in found.values() if r), default=None)
        cells = []
        for loss in LOSSES:
            r = found[loss]
            if r is None:
                cells.append("")
                continue
            fpr = f"**{r['fpr95']:.1f}**" if r["fpr95"] == best else f"{r['fpr95']:.1f}"
            cells.append(f"{fpr} ± {r['fpr95_std']:.1f} / {r['auroc']:.1f}")
        temps = {loss: r["detector_params"].get("temperature") for loss, r in found.items() if r}
        odd = {loss: t for loss, t in temps.items() if t != temps.get("ce")}
        name = det if not odd else (f"{det} (T {temps['ce']:g}; "
                                    + ", ".join(f"{LOSS_NAMES[x]} {t:g}" for x, t in odd.items()) + ")")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    g = _one(rows, id_dataset=id_ds, loss="godin", detector="godin", ood_dataset=ood)
    if g:
        grid[("godin", "godin")] = g
        out.append("| godin (its own score) | " + " | " * (len(LOSSES) - 1)
                   + f"{g['fpr95']:.1f} ± {g['fpr95_std']:.1f} / {g['auroc']:.1f} |")
    return out, grid


def verdict(a: dict, b: dict) -> str:
    """How row ``a`` compares with row ``b`` on FPR95 (lower is better), against the larger seed std."""
    gap, std = b["fpr95"] - a["fpr95"], max(a["fpr95_std"], b["fpr95_std"])
    if abs(gap) <= std:
        return "is within one seed std of"
    return "beats" if gap > 0 else "loses to"


def compare(a: dict, b: dict, name_a: str, name_b: str) -> str:
    std = max(a["fpr95_std"], b["fpr95_std"])
    return f"{name_a} {verdict(a, b)} {name_b} ({a['fpr95']:.1f} vs {b['fpr95']:.1f} FPR95; the larger seed std is {std:.1f})"


def mean_score(records: list[dict], side: str) -> float:
    """The mean score of one side (``id``/``ood``) from the records' score histograms (bin centres)."""
    total = weight = 0.0
    for r in records:
        edges, counts = r["score_hist"]["edges"], r["score_hist"][side]
        for lo, hi, c in zip(edges, edges[1:], counts):
            total += c * (lo + hi) / 2
            weight += c
    return total / weight


def readings(rows: list[dict], far: dict, near: dict, records: list[dict]) -> list[str]:
    out = ["Read as they are, these numbers say the following:", ""]
    ce, ln = far[("ce", "msp")], far[("logitnorm", "msp")]
    paper = "as the paper finds" if verdict(ln, ce) == "beats" else "the paper finds LogitNorm better"
    out.append(f"- **Far OOD with MSP:** {compare(ln, ce, 'LogitNorm', 'CE')}; {paper}.")
    wins = []
    for det in ("odin", "energy", "gradnorm"):
        best = min((far[(loss, det)]["fpr95"], loss) for loss in LOSSES if (loss, det) in far)
        wins.append(f"with {det}, {compare(far[('logitnorm', det)], far[('ce', det)], 'LogitNorm', 'CE')}, "
                    f"and the lowest is {LOSS_NAMES[best[1]]}'s {best[0]:.1f}")
    out.append("- **Far OOD with the other detectors:** " + "; ".join(wins) + ".")
    worse = [det for det in DETECTORS if verdict(near[("logitnorm", det)], near[("ce", det)]) == "loses to"]
    gaps = ", ".join(f"{det} {near[('logitnorm', det)]['fpr95']:.1f} vs {near[('ce', det)]['fpr95']:.1f}"
                     for det in DETECTORS)
    out.append(f"- **Near OOD:** LogitNorm loses to CE by more than one seed std with {len(worse)} of "
               f"{len(DETECTORS)} detectors (FPR95 {gaps}). The paper evaluates only far-OOD sets.")
    g, gm = far.get(("godin", "godin")), far.get(("godin", "msp"))
    if g and gm:
        out.append(f"- **GODIN:** its own score gives {g['fpr95']:.1f} ± {g['fpr95_std']:.1f} FPR95 on far OOD, "
                   f"MSP on the same trainings {gm['fpr95']:.1f} ± {gm['fpr95_std']:.1f}.")
    norms = {loss: far[(loss, "msp")] for loss in ("ce", "logitnorm")}
    out.append(f"- **Figure 1** (`ood-bench report`): after training, LogitNorm's mean raw logit norm is "
               f"{norms['logitnorm']['logit_norm_id']:.2f} on ID test images and {norms['logitnorm']['logit_norm_ood']:.2f} "
               f"on the far-OOD sets; CE's is {norms['ce']['logit_norm_id']:.2f} and {norms['ce']['logit_norm_ood']:.2f}. "
               f"The paper's Table 5 (CIFAR-10, SVHN as OOD) gives 1.48 / 0.49 for LogitNorm and 12.80 / 10.91 for CE.")
    msp = {loss: [r for r in records if r["loss"] == loss and r["detector"] == "msp" and r["id_dataset"] == FAR[0]]
           for loss in ("ce", "logitnorm")}
    out.append(f"- **Figure 4:** the mean MSP on ID / far-OOD test images is {mean_score(msp['logitnorm'], 'id'):.2f} / "
               f"{mean_score(msp['logitnorm'], 'ood'):.2f} with LogitNorm and {mean_score(msp['ce'], 'id'):.2f} / "
               f"{mean_score(msp['ce'], 'ood'):.2f} with CE (from the records' score histograms).")
    out.append("- These numbers depend on the torch thread count: `python benchmarks/thread_sensitivity.py` "
               "measures how far each one moves between 1 and 2 threads, against its seed std; "
               "[docs/reproducibility.md](docs/reproducibility.md) has its table (about as far as a new seed).")
    return out


def section(results: Path, cpu: str | None = None) -> str:
    from logitnorm_bench.leaderboard import build_rows
    from logitnorm_bench.records import ResultsDir

    records = [r for r in ResultsDir(results).records() if r.get("split", "test") == "test"]
    if not records:
        raise SystemExit(f"{results}: no records")
    if any(r.get("status") != "ok" for r in records) or any(r.get("smoke") for r in records):
        raise SystemExit(f"{results}: failed or smoke records; the README shows a clean full run only")
    if {r["suite"] for r in records} != {"quick"}:
        raise SystemExit(f"{results}: not (only) the quick suite's records")
    rows = build_rows(records)
    far_lines, far = ood_table(rows, FAR[0], FAR[1])
    near_lines, near = ood_table(rows, NEAR[0], NEAR[1])
    seeds = statistics.median(r["n_seeds"] for r in rows)
    lines = [HEADING, "", "<!-- generated by benchmarks/readme_results.py: edit the script, not this section -->", "",
             provenance(records, cpu), "",
             f"ID accuracy (mean ± std over {seeds:g} seeds) against chance:", "", *accuracy_table(rows), "",
             f"The tables below give FPR95 (%) ± std over {seeds:g} seeds, followed by AUROC (%); "
             "bold is the lowest FPR95 of a row.", "",
             f"Far OOD: {FAR[2]}:", "", *far_lines, "", f"Near OOD: {NEAR[2]}:", "", *near_lines, "",
             *readings(rows, far, near, records), "", END]
    return "\n".join(_wrap(line) for line in lines) + "\n"


def _wrap(line: str, width: int = 115) -> str:
    """Prose wrapped like the rest of the README; headings, tables and comments as they are."""
    if not line or line.startswith(("|", "#", "<!--")):
        return line
    indent = "  " if line.startswith("- ") else ""
    return textwrap.fill(line, width=width, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, help="a results folder of the quick suite")
    p.add_argument("--write", type=Path, help="replace the section in this README instead of printing it")
    p.add_argument("--cpu", help="the CPU model of the machine the results were made on (default: this machine's)")
    args = p.parse_args(argv)
    text = section(args.results, args.cpu)
    if args.write is None:
        print(text, end="")
        return 0
    readme = args.write.read_text()
    start = readme.index(HEADING)
    end = readme.index(END, start) + len(END) + 1 if END in readme[start:] else readme.index("\n## ", start) + 1
    args.write.write_text(readme[:start] + text + readme[end:])
    print(f"{args.write}: section regenerated from {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
