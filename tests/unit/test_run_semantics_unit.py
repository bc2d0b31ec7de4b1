"""Run semantics (issue 15, point 5): an unfinished run is never promoted; a continued run id
gets an MLflow run (so a version) of its own per checkpoint; resuming refuses changed training
settings (naming them) and optimises with the configured hyperparameters.

Pure logic: a tiny model, local files, and an in-memory stand-in for the MlflowClient calls
`open_run` makes (the real server: tests/integration/test_run_semantics.py).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from mlflow import MlflowClient
from pyarrow import fs as pafs

from gan.core.config import GateConfig, ModelConfig, TrainConfig
from gan.core.records import DatasetRef, GateDecision, TrainedRef
from gan.io.jsonio import write_json_fs
from gan.registry import publish, run_log
from gan.train.checkpoint import (
    ResumeRefused,
    check_resumable,
    load_checkpoint,
    resume_conflicts,
    save_checkpoint,
    state_from_checkpoint,
)
from gan.train.ray.driver import _previous_result
from gan.train.ray.worker import RUN_FILE
from gan.train.state import make_state

torch.set_num_threads(1)
MODEL = ModelConfig(arch="mlp", latent_dim=8, image_size=8, num_classes=4, g_hidden=(16,),
                    d_hidden=(16,))
STARTED = TrainConfig(epochs=4, batch_size=16, loss="hinge", lr_g=2e-4, lr_d=2e-4, beta1=0.5,
                      beta2=0.999)
DATASET = DatasetRef(name="tiny", version="v1", uri="s3://b/datasets/tiny/v1/", source="t",
                     n_train=64, n_holdout=8, num_classes=4, image_size=8)


# --------------------------------------------------------------------------- resume


def test_resume_allows_only_epochs_time_limit_and_workers() -> None:
    saved = STARTED.model_dump(mode="json")
    ok = STARTED.model_copy(update={"epochs": 40, "time_limit_s": 60.0, "num_workers": 2,
                                    "cpus_per_worker": 2, "max_failures": 0,
                                    "checkpoint_every": 1})
    assert resume_conflicts(saved, ok) == {}
    check_resumable(saved, ok, run_id="r1")
    changed = STARTED.model_copy(update={"loss": "wgan-gp", "lr_g": 1e-3, "epochs": 9})
    assert resume_conflicts(saved, changed) == {"loss": ("hinge", "wgan-gp"),
                                                "lr_g": (2e-4, 1e-3)}
    with pytest.raises(ResumeRefused, match=r"run id r1 was started with other training "
                       r"settings \(loss 'hinge' → 'wgan-gp', lr_g 0.0002 → 0.001\)"):
        check_resumable(saved, changed, run_id="r1")
    older = {k: v for k, v in saved.items() if k != "mode_seeking"}  # before the field existed
    assert resume_conflicts(older, STARTED.model_copy(update={"mode_seeking": 0.5})) == {}


def test_driver_refuses_to_continue_a_run_with_another_loss(tmp_path: Path) -> None:
    fs, run_dir = pafs.LocalFileSystem(), f"{tmp_path}/r1"
    write_json_fs(fs, f"{run_dir}/{RUN_FILE}", {
        "model_cfg": MODEL.model_dump(mode="json"), "dataset_version": "v1",
        "train_cfg": STARTED.model_dump(mode="json")})
    more = STARTED.model_copy(update={"epochs": 8, "num_workers": 2, "time_limit_s": 30.0})
    assert _previous_result(fs, run_dir, "r1", DATASET, MODEL, more) is None  # continues
    with pytest.raises(ResumeRefused, match=r"loss 'hinge' → 'wgan-gp'.*new run id"):
        _previous_result(fs, run_dir, "r1", DATASET, MODEL,
                         STARTED.model_copy(update={"loss": "wgan-gp"}))


def test_resumed_optimisers_use_the_configured_hyperparameters() -> None:
    state = make_state(MODEL, STARTED)
    blob = save_checkpoint(state)
    assert load_checkpoint(blob)["opt_g"]["param_groups"][0]["lr"] == 2e-4
    configured = STARTED.model_copy(update={"lr_g": 1e-3, "lr_d": 5e-4, "beta1": 0.0,
                                            "beta2": 0.9, "beta2_d": 0.99})
    resumed = state_from_checkpoint(load_checkpoint(blob), "cpu", train_cfg=configured)
    assert [(g["lr"], g["betas"]) for g in resumed.opt_g.param_groups] == [(1e-3, (0.0, 0.9))]
    assert [(g["lr"], g["betas"]) for g in resumed.opt_d.param_groups] == [(5e-4, (0.0, 0.99))]


# --------------------------------------------------------------------------- unfinished


def _trained(**kw: Any) -> TrainedRef:
    base: dict[str, Any] = dict(
        run_id="r1", checkpoint_uri="s3://gan/ray/r1/checkpoint_epoch_00003/checkpoint.pt",
        dataset_version="v1", model_cfg={}, train_cfg={"epochs": 10}, epochs_completed=10,
        global_step=40)
    return TrainedRef(**{**base, **kw})


def _always_promote(report: Any, champion_metrics: Any, cfg: GateConfig, *,
                    champion_version: str | None = None) -> GateDecision:
    return GateDecision(promote=True, reasons=["PASS: everything"],
                        champion_version=champion_version)


def test_a_time_limited_run_is_never_promoted() -> None:
    finished = publish.never_promote_unfinished(_trained(), _always_promote)
    assert finished is _always_promote and publish.unfinished_reason(_trained()) is None
    stopped = _trained(epochs_completed=3, stopped_by_time_limit=True)
    decision = publish.never_promote_unfinished(stopped, _always_promote)(
        None, None, GateConfig(), champion_version="2")
    assert not decision.promote and decision.champion_version == "2"
    assert decision.reasons == [
        "FAIL: training unfinished (stopped by the time limit after epoch 3 of 10): an "
        "unfinished run is never promoted; rerun run id r1 to finish it", "PASS: everything"]
    short = publish.unfinished_reason(_trained(epochs_completed=7))
    assert short is not None and "ended after epoch 7 of 10" in short


# --------------------------------------------------------------------------- continued runs


class Runs(MlflowClient):
    """MLflow runs with tags (no server: only the methods `open_run` calls)."""

    def __init__(self) -> None:  # noqa: D107 (no super().__init__: nothing to connect to)
        self.runs: dict[str, dict[str, str]] = {}
        self.status: dict[str, str] = {}
        self.deleted: set[str] = set()

    def _run(self, rid: str) -> Any:
        return SimpleNamespace(info=SimpleNamespace(run_id=rid,
                                                    status=self.status.get(rid, "RUNNING")),
                               data=SimpleNamespace(tags=dict(self.runs[rid])))

    def search_runs(self, experiment_ids: Any, filter_string: str = "", **kw: Any) -> Any:
        want = filter_string.split("= '")[1].rstrip("'")
        return [self._run(r) for r, t in self.runs.items()
                if t.get(run_log.RUN_TAG) == want and r not in self.deleted]

    def set_terminated(self, run_id: str, status: str = "FINISHED") -> None:
        self.status[run_id] = status

    def delete_run(self, run_id: str) -> None:
        self.deleted.add(run_id)

    def create_run(self, experiment_id: str, run_name: str | None = None,
                   tags: dict[str, str] | None = None, **kw: Any) -> Any:
        rid = f"m{len(self.runs) + 1}"
        self.runs[rid] = {**(tags or {}), "mlflow.runName": run_name or rid}
        return self._run(rid)

    def log_batch(self, run_id: str, metrics: Any = (), params: Any = (), tags: Any = (),
                  **kw: Any) -> None:
        self.runs[run_id].update({t.key: t.value for t in tags})

    def get_run(self, run_id: str) -> Any:
        return self._run(run_id)


def _open(c: Runs, trained: TrainedRef) -> Any:
    tags = run_log.lineage_tags(run_id="r1", trained=trained, dataset=DATASET.model_copy(
        update={"version": trained.dataset_version}))
    return run_log.open_run(c, "0", "r1", tags)


def test_a_continued_run_gets_its_own_mlflow_run_per_checkpoint() -> None:
    c = Runs()
    first = _open(c, _trained(epochs_completed=3, stopped_by_time_limit=True))
    assert first.data.tags["mlflow.runName"] == "r1"
    again = _open(c, _trained(epochs_completed=3, stopped_by_time_limit=True))
    assert again.info.run_id == first.info.run_id and len(c.runs) == 1  # a retry: same run
    done = _trained(checkpoint_uri="s3://gan/ray/r1/checkpoint_epoch_00010/checkpoint.pt",
                    resumed_from_epoch=3)
    second = _open(c, done)
    assert second.info.run_id != first.info.run_id and len(c.runs) == 2
    assert second.data.tags["mlflow.runName"] == "r1 (epoch 10)"
    assert second.data.tags[run_log.CONTINUES_TAG] == first.info.run_id
    assert second.data.tags[run_log.CHECKPOINT_TAG].endswith("checkpoint_epoch_00010/"
                                                             "checkpoint.pt")
    # the first run still names its own checkpoint (it is no longer overwritten)
    assert c.runs[first.info.run_id][run_log.CHECKPOINT_TAG].endswith("epoch_00003/"
                                                                      "checkpoint.pt")
    assert _open(c, done).info.run_id == second.info.run_id  # retried: still two runs
    assert run_log.find_run(c, "0", "r1").info.run_id == first.info.run_id
    assert run_log.find_run(c, "0", "r1", done.checkpoint_uri).info.run_id == "m2"


def _live(c: Runs, trained: TrainedRef) -> str:
    """What the train task does: open the live run, then key it on the checkpoint."""
    run = run_log.open_live_run(c, "0", "r1", {run_log.RUN_TAG: "r1"})
    return run_log.tag_checkpoint(c, "0", c.get_run(run.info.run_id), "r1",
                                  trained.checkpoint_uri)


def test_the_live_run_is_the_run_register_finds_one_per_checkpoint() -> None:
    c = Runs()
    first = _trained(epochs_completed=3, stopped_by_time_limit=True)
    live = _live(c, first)
    assert _open(c, first).info.run_id == live and len(c.runs) == 1  # register: the same run
    # A retried flow whose training returned the same checkpoint: the extra live run goes.
    c.set_terminated(live)
    assert _live(c, first) == live and len(c.runs) - len(c.deleted) == 1
    # Continued to epoch 10: a run of its own, named by its epoch, pointing at the first.
    done = _trained(checkpoint_uri="s3://gan/ray/r1/checkpoint_epoch_00010/checkpoint.pt",
                    resumed_from_epoch=3)
    second = _live(c, done)
    assert second != live and c.runs[second]["mlflow.runName"] == "r1 (epoch 10)"
    assert c.runs[second][run_log.CONTINUES_TAG] == live
    assert _open(c, done).info.run_id == second
    # A crash before the checkpoint: the next attempt logs into the same unfinished live run.
    c.set_terminated(second)
    crashed = run_log.open_live_run(c, "0", "r1", {run_log.RUN_TAG: "r1"}).info.run_id
    assert run_log.open_live_run(c, "0", "r1", {run_log.RUN_TAG: "r1"}).info.run_id == crashed
