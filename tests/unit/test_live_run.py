"""gan.registry.live_run without a server: what the train task logs into MLflow as epochs end.

Per-epoch numbers go to `train/<key>` at step = epoch (not epoch/step/preview), a preview
becomes a PNG artifact under progress/, `finish` logs only the epochs not logged live plus the
run's summary and marks training logged, `fail` ends the run FAILED saying why.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from pyarrow import fs as pafs

from gan.core.config import ModelConfig, TrainConfig
from gan.core.records import TrainedRef
from gan.registry.live_run import LiveRun, run_description
from gan.train.ray import worker
from gan.train.ray.driver import preview_every
from gan.train.ray.worker import RunSpec, _Reporter
from gan.train.state import make_state


class FakeClient:
    """The MlflowClient calls LiveRun makes after `open`, recorded."""

    def __init__(self) -> None:
        self.metrics: list[Any] = []
        self.artifacts: list[tuple[str, bytes]] = []
        self.tags: dict[str, str] = {}
        self.status = "RUNNING"

    def log_batch(self, run_id: str, metrics: Any = (), params: Any = (), tags: Any = ()) -> None:
        self.metrics += list(metrics)

    def log_artifact(self, run_id: str, path: str, artifact_path: str) -> None:
        self.artifacts.append((f"{artifact_path}/{Path(path).name}", Path(path).read_bytes()))

    def get_metric_history(self, run_id: str, key: str) -> list[Any]:
        return [m for m in self.metrics if m.key == key]

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.tags[key] = value

    def set_terminated(self, run_id: str, status: str) -> None:
        self.status = status


def _epoch(e: int, **extra: Any) -> dict[str, Any]:
    return {"epoch": e, "step": 10 * e, "loss_d": 1.0 / e, "loss_g": 0.5 * e, "d_real": 0.6,
            "d_fake": 0.4, "images_per_s": 100.0 + e, "epoch_time_s": 0.5, **extra}


def test_epochs_preview_finish_and_fail() -> None:
    c = FakeClient()
    live = LiveRun(c, "mlflow-run", "r1")  # type: ignore[arg-type]
    preview = np.zeros((64, 1, 28, 28), np.float32)
    live.log_epoch(_epoch(1))
    live.log_epoch(_epoch(2, preview=preview))
    live.wait_uploads()  # previews upload in a thread
    keys = {m.key for m in c.metrics}
    assert "train/loss_d" in keys and "train/d_fake" in keys and "train/images_per_s" in keys
    assert not keys & {"train/epoch", "train/step", "train/preview"}
    assert sorted(m.step for m in c.get_metric_history("", "train/loss_d")) == [1, 2]
    (name, png), = c.artifacts
    assert name == "progress/samples_epoch_00002.png" and png[:8] == b"\x89PNG\r\n\x1a\n"
    trained = TrainedRef(run_id="r1", checkpoint_uri="s3://b/c.pt", dataset_version="v",
                         model_cfg={}, train_cfg={}, epochs_completed=3, global_step=30,
                         history=[_epoch(1), _epoch(2), _epoch(3)], images_per_s=101.0)
    live.finish(trained)  # epoch 3 was not seen live (e.g. the driver restarted)
    assert sorted(m.step for m in c.get_metric_history("", "train/loss_d")) == [1, 2, 3]
    assert c.get_metric_history("", "run/epochs_completed")[0].value == 3.0
    assert c.tags["gan.logged.training"] == "true"
    live.fail("training failed: boom")
    assert c.status == "FAILED" and c.tags["gan.failure"] == "training failed: boom"


def test_description_links_prefect() -> None:
    text = run_description("r1", "http://h:4200/runs/flow-run/abc")
    assert "`r1`" in text and "[Prefect flow run](http://h:4200/runs/flow-run/abc)" in text
    assert "Prefect" not in run_description("r1")


def test_worker_previews_about_five_times_and_at_the_end() -> None:
    """Rank 0 queues 64 seeded samples of the published G on preview epochs only."""
    cfg = ModelConfig(arch="mlp", conditional=True, g_hidden=(8,), d_hidden=(8,), latent_dim=4)
    tc = TrainConfig(epochs=12)
    spec = RunSpec(run_id="r1", model_cfg=cfg, train_cfg=tc, run_dir="/nowhere",
                   run_fs=pafs.LocalFileSystem(), preview_every=preview_every(tc.epochs))
    rep = _Reporter(spec, make_state(cfg, tc), rank=0, device=torch.device("cpu"),
                    batches=None)  # type: ignore[arg-type]
    shown = [e for e in range(1, 13) if rep._preview(e, 12)]
    assert preview_every(12) == 2 and shown == [2, 4, 6, 8, 10, 12]
    x = rep._preview(12, 12)["preview"]
    assert x.shape == (64, 1, 28, 28) and x.dtype == np.float32
    np.testing.assert_array_equal(x, rep._preview(12, 12)["preview"])  # same latents each time
    off = RunSpec(run_id="r1", model_cfg=cfg, train_cfg=tc, run_dir="/nowhere",
                  run_fs=pafs.LocalFileSystem())
    assert _Reporter(off, rep.state, rank=0, device=torch.device("cpu"),
                     batches=None)._preview(12, 12) == {}  # type: ignore[arg-type]


@pytest.mark.parametrize("driver_shows_it", [True, False])
def test_each_epoch_line_is_printed_once(monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture,
                                         driver_shows_it: bool) -> None:
    """`gan retrain`'s terminal gets each epoch's line once: with a driver callback (the flow's
    `EpochProgress` logs it, to the terminal and the Prefect UI) rank 0 only queues the
    metrics; without one (a bare `train()`), rank 0 prints it, which Ray forwards."""
    cfg = ModelConfig(arch="mlp", g_hidden=(8,), d_hidden=(8,), latent_dim=4)
    tc = TrainConfig(epochs=3)
    queued: list[dict[str, Any]] = []
    spec = RunSpec(run_id="r1", model_cfg=cfg, train_cfg=tc, run_dir="/nowhere",
                   run_fs=pafs.LocalFileSystem(),
                   progress=SimpleNamespace(put_nowait=queued.append) if driver_shows_it else None)
    state = make_state(cfg, tc)
    state.history.append({})
    monkeypatch.setattr(worker, "_report", lambda *a, **k: None)  # ray.train.report
    rep = _Reporter(spec, state, rank=0, device=torch.device("cpu"),
                    batches=SimpleNamespace(count=64))  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger=worker.__name__):
        rep(_epoch(1), None)
    lines = [r.getMessage() for r in caplog.records if "epoch 1/3" in r.getMessage()]
    assert len(lines) == (0 if driver_shows_it else 1), lines
    assert len(queued) == (1 if driver_shows_it else 0)
