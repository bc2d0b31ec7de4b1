"""The MLflow run of a pipeline run while it trains: open at the start, filled as epochs end.

What this module is: `LiveRun`, used by the flow's train task (in the driver process, never in
a Ray worker).
- `LiveRun.open(...)` finds or creates the MLflow run this training logs into
  (`run_log.open_live_run`, tag `gan.run_id`; the checkpoint is not known yet), marks it
  RUNNING with its lineage tags, a description linking the Prefect flow run and the dataset
  version as its input (`gan.registry.dataset_input`);
- `log_epoch(metrics)` logs rank 0's per-epoch numbers as `train/<key>` at step = epoch
  (losses, D outputs, throughput) and, when the metrics carry a "preview" (64 seeded
  samples), a sample grid `progress/samples_epoch_<N>.png`;
- `finish(trained)` logs the run's summary numbers, marks training logged (so `register`
  does not log the history twice) and keys the run on its checkpoint
  (`run_log.tag_checkpoint`);
- `fail(message)` ends the run FAILED.
`gan.registry.publish.register` later reuses the same run (evaluation, model, version) and ends
it FINISHED: one run per (run id, checkpoint), its real duration.

What it is not: no model logging, no registry (`gan.registry.publish`); nothing here stops
training: the flow logs a warning when MLflow does not answer.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.entities import RunStatus

from gan.core.records import DatasetRef, TrainedRef
from gan.core.settings import Settings
from gan.eval.pictures import sample_grid_png
from gan.registry import run_log
from gan.registry.connect import check_reachable, client
from gan.registry.dataset_input import log_dataset_input

log = logging.getLogger(__name__)
NOTE_TAG = "mlflow.note.content"  # what the MLflow UI shows as the run's description
NOT_METRICS = ("epoch", "step", "preview")


def run_description(run_id: str, flow_run_url: str = "") -> str:
    """The run's description (markdown): what it is and a link back to Prefect."""
    text = f"Pipeline run `{run_id}`: prepare data → train → evaluate → register."
    if flow_run_url:
        text += f"\n\n[Prefect flow run]({flow_run_url})"
    return text


class LiveRun:
    """One pipeline run's MLflow run, open while training (see the module docstring)."""

    def __init__(self, c: MlflowClient, mlflow_run_id: str, run_id: str,
                 exp_id: str = "") -> None:
        self.client, self.mlflow_run_id, self.run_id = c, mlflow_run_id, run_id
        self.exp_id = exp_id
        self._uploads: list[threading.Thread] = []

    @classmethod
    def open(cls, settings: Settings, *, run_id: str, experiment: str = "gan-retrain",
             lineage: Mapping[str, str] | None = None,
             dataset: DatasetRef | None = None) -> LiveRun:
        """Find or create the MLflow run of `run_id`, RUNNING, with lineage and description,
        and the dataset version it trains on as its input (shown while it trains)."""
        run_log.check_run_id(run_id)
        check_reachable(settings, attempts=2)
        c = client(settings)
        exp_id = run_log.experiment_id(c, experiment)
        tags = {run_log.RUN_TAG: run_id, "mlflow.runName": run_id, **(lineage or {})}
        tags[NOTE_TAG] = run_description(run_id, (lineage or {}).get("prefect.flow_run_url", ""))
        run = run_log.open_live_run(c, exp_id, run_id, tags)
        if run.info.status != RunStatus.to_string(RunStatus.RUNNING):
            c.update_run(run.info.run_id, status="RUNNING")  # a rerun of a failed run id
        if dataset is not None:
            log_dataset_input(c, run.info.run_id, dataset)
        return cls(c, run.info.run_id, run_id, exp_id)

    def log_epoch(self, metrics: Mapping[str, Any]) -> None:
        """Rank 0's numbers of one epoch as `train/<key>` (step = epoch); the preview grid."""
        epoch = int(metrics.get("epoch", 0))
        values = {k: v for k, v in metrics.items() if k not in NOT_METRICS}
        run_log.log_values(self.client, self.mlflow_run_id, values, prefix="train/", step=epoch)
        preview = metrics.get("preview")
        if preview is not None:
            self.log_preview(epoch, np.asarray(preview))

    def log_preview(self, epoch: int, images: np.ndarray) -> None:
        """(n, C, H, W) samples in [-1, 1] → progress/samples_epoch_<NNNNN>.png in the run,
        uploaded in a daemon thread: an artifact store that is down makes MLflow's client
        retry for minutes, which must not stall the epoch callback (and so the driver)."""
        png = sample_grid_png(torch.from_numpy(images.astype(np.float32)), ncol=8)
        t = threading.Thread(target=self._upload, args=(epoch, png), daemon=True,
                             name=f"gan-preview-{epoch}")
        t.start()
        self._uploads.append(t)

    def _upload(self, epoch: int, png: bytes) -> None:
        try:
            with tempfile.TemporaryDirectory(prefix="gan-preview-") as tmp:
                path = Path(tmp, f"samples_epoch_{epoch:05d}.png")
                path.write_bytes(png)
                self.client.log_artifact(self.mlflow_run_id, str(path), "progress")
        except Exception as e:  # noqa: BLE001 (a lost preview is logged, never fatal)
            log.warning("preview of epoch %d not uploaded to MLflow: %s", epoch, e)

    def wait_uploads(self, timeout_s: float = 30.0) -> None:
        """Wait (at most `timeout_s` in all) for the preview uploads still running."""
        deadline = time.monotonic() + timeout_s
        for t in self._uploads:
            t.join(max(0.0, deadline - time.monotonic()))

    def finish(self, trained: TrainedRef) -> None:
        """Training done: the epochs not logged live (e.g. before a resume, or a finished run
        returned again), the run's summary numbers; `register` then skips the history."""
        self.wait_uploads()
        seen = {m.step for m in self.client.get_metric_history(self.mlflow_run_id,
                                                               "train/images_per_s")}
        for i, row in enumerate(trained.history):
            epoch = int(row.get("epoch", i + 1))
            if epoch not in seen:
                self.log_epoch({**row, "epoch": epoch})
        run_log.log_values(self.client, self.mlflow_run_id, {
            "epochs_completed": trained.epochs_completed, "global_step": trained.global_step,
            "images_per_s": trained.images_per_s,
            "resumed_from_epoch": trained.resumed_from_epoch},
            prefix="run/", step=trained.epochs_completed)
        self.client.set_tag(self.mlflow_run_id, "gan.logged.training", "true")
        if self.exp_id and trained.checkpoint_uri:  # the key `register` finds this run by
            run = self.client.get_run(self.mlflow_run_id)
            self.mlflow_run_id = run_log.tag_checkpoint(self.client, self.exp_id, run,
                                                        self.run_id, trained.checkpoint_uri)

    def fail(self, message: str) -> None:
        """End the run FAILED, saying why (the flow fails too; a rerun reopens it)."""
        self.client.set_tag(self.mlflow_run_id, "gan.failure", message[:5000])
        self.client.set_terminated(self.mlflow_run_id, "FAILED")
