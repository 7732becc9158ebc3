"""An example ood-bench plugin: Weights & Biases as an experiment tracker (``--tracker wandb``).

One W&B run per training run (id = the harness's run id, so a rerun or a resumed training
continues it): the configuration as its config, the per-epoch metrics as its history (step =
epoch), each record's metrics in its summary.  ``mode: offline`` (or ``WANDB_MODE=offline``) writes
everything under ``dir`` (default ``RESULTS/wandb``) for ``wandb sync`` later.
"""

from __future__ import annotations

from pathlib import Path

from logitnorm_bench import hookimpl
from logitnorm_bench.trackers import Tracker, cell_metric_prefix


class WandbTracker(Tracker):
    REQUIRES = (("wandb", "ood-bench-wandb"),)  # a missing package is bad input before the run starts

    def __init__(self, project: str = "ood-bench", entity: str | None = None, mode: str | None = None,
                 dir: str | None = None, group: str | None = None):
        self.project, self.entity, self.mode, self.dir, self.group = project, entity, mode, dir, group
        self.run = None

    def run_started(self, run):
        import wandb

        folder = Path(self.dir) if self.dir else Path(run.results) / "wandb"
        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=self.project, entity=self.entity, mode=self.mode, dir=str(folder),
                              id=run.run_id, resume="allow", name=run.label, group=self.group or run.suite,
                              config=run.config, reinit="create_new", settings=wandb.Settings(silent=True))

    def epoch_ended(self, run, epoch, metrics):
        self.run.log({f"train/{k}": v for k, v in metrics.items()}, step=epoch)

    def record_written(self, run, record):
        if record.get("status") == "ok":
            prefix = cell_metric_prefix(record)
            for key, value in (record.get("metrics") or {}).items():
                self.run.summary[f"{prefix}/{key}"] = value
            self.run.summary["run/id_acc"] = (record.get("run_metrics") or {}).get("id_acc")

    def run_finished(self, run, status, error=None):
        if self.run is not None:
            if error:
                self.run.summary["error"] = error
            self.run.finish(exit_code=0 if status == "ok" else 1)
            self.run = None


@hookimpl
def register_trackers(register):
    register("wandb", WandbTracker, description="Weights & Biases: a W&B run per training (mode=offline works offline)")
