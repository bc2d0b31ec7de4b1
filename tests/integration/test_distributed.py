"""gan.train.ray.driver on a real local Ray (started once for this file) and the real SeaweedFS.

Two CPU workers train and leave a checkpoint `gan.train.checkpoint` loads; 1 and 2 workers see the
same samples per epoch; a time-limited run stops cleanly and its rerun continues, and there a
worker killed for real (`os._exit`) makes Ray restart the group from the latest checkpoint; a
finished run id returns its result without training; a divergence fails with its reason,
again on rerun. While a run is live, every listening socket of the local Ray is on loopback,
and no S3 secret reaches Ray's logs or the TrainedRef. Tiny model (PRESETS["smoke"]), 200
digits, 2-3 epochs; 4 fits in all (each Ray Train start is new controller and worker
processes: seconds of CPU each on a small machine).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch

from gan.core.config import DataConfig, ModelConfig, TrainConfig, resolve_configs
from gan.core.records import DatasetRef
from gan.core.settings import Settings
from gan.data.prepare import prepare
from gan.io.storage import Storage
from gan.stack.procs import listening_sockets
from gan.train.checkpoint import generator_from_checkpoint, load_checkpoint
from gan.train.ray.cluster import RaySession, start_local, stop
from gan.train.ray.driver import TrainingDiverged, train

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def configs(**train_kw: Any) -> tuple[ModelConfig, TrainConfig]:
    return resolve_configs("smoke", train={"checkpoint_every": 1, **train_kw})


def run_id(tag: str) -> str:
    return f"it-{tag}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def ray_local() -> Iterator[RaySession]:
    """One local Ray for the whole file (2 CPUs); train() reuses it and leaves it running."""
    session = start_local(num_cpus=2)
    yield session
    stop(session)


@pytest.fixture(scope="module")
def dataset(stack: Settings) -> DatasetRef:
    return prepare(DataConfig(limit=200), Storage.from_settings(stack))


@pytest.fixture(scope="module")
def two_workers(stack: Settings, dataset: DatasetRef, ray_local: RaySession) -> dict[str, Any]:
    """2 workers × 1 CPU, 2 epochs; records on_epoch calls and the live listening sockets."""
    seen: list[dict[str, Any]] = []
    sockets: list[tuple[str, str, int]] = []

    def on_epoch(metrics: dict[str, Any]) -> None:
        if not sockets:
            # this process's descendants: the local Ray's GCS, raylet, agents and workers
            sockets.extend(listening_sockets(psutil.Process().children(recursive=True)))
        seen.append(metrics)

    model_cfg, train_cfg = configs(epochs=2, num_workers=2, cpus_per_worker=1)
    rid = run_id("2w")
    ref = train(stack, dataset, model_cfg, train_cfg, run_id=rid, on_epoch=on_epoch)
    return {"ref": ref, "seen": seen, "sockets": sockets, "model_cfg": model_cfg,
            "train_cfg": train_cfg, "run_id": rid}


def test_two_workers_train_and_leave_a_loadable_checkpoint(
        two_workers: dict[str, Any], storage: Storage, dataset: DatasetRef) -> None:
    ref = two_workers["ref"]
    bucket = storage.settings.s3_bucket
    assert ref.checkpoint_uri == (f"s3://{bucket}/ray/{two_workers['run_id']}/"
                                  "checkpoint_epoch_00002/checkpoint.pt")
    assert (ref.epochs_completed, ref.resumed_from_epoch) == (2, 0)
    assert not ref.stopped_by_time_limit
    ckpt = load_checkpoint(storage.get_bytes(ref.checkpoint_uri))
    assert ckpt["epoch"] == 2 and ckpt["dataset_version"] == dataset.version
    # 167 train images (200 digits split by pixel hash), batch 32: 5 whole batches, 160 images
    assert ckpt["step"] == ref.global_step == 2 * (160 // 32)
    G = generator_from_checkpoint(ckpt)
    assert G(torch.randn(3, G.latent_dim), None).shape == (3, 1, 28, 28)
    assert [h["epoch"] for h in ref.history] == [1, 2]
    assert all(h["samples"] == 160 and h["images_per_s"] > 0 for h in ref.history)
    # on_epoch ran here, once per epoch, with rank 0's metrics
    assert [m["epoch"] for m in two_workers["seen"]] == [1, 2]
    assert {"loss_d", "loss_g", "d_real", "d_fake", "images_per_s", "samples"} <= set(
        two_workers["seen"][0])


def test_live_local_ray_listens_on_loopback_only(two_workers: dict[str, Any]) -> None:
    sockets = two_workers["sockets"]
    names = {name for name, _, _ in sockets}
    assert {"gcs_server", "raylet"} <= names, names  # really saw the live Ray
    assert any("RayTrainWorker" in n for n in names), names
    assert [s for s in sockets if s[1] not in LOOPBACK] == []


def test_no_secret_in_ray_logs_or_result(two_workers: dict[str, Any], ray_local: RaySession,
                                         stack: Settings) -> None:
    assert stack.aws_secret_access_key is not None and stack.aws_access_key_id is not None
    secrets = [stack.aws_secret_access_key.get_secret_value().encode(),
               stack.aws_access_key_id.get_secret_value().encode()]
    assert two_workers["ref"].model_dump_json().encode().count(secrets[0]) == 0
    assert ray_local.temp_dir is not None
    files = [p for p in Path(ray_local.temp_dir).rglob("*") if p.is_file()]
    assert any(p.suffix in (".log", ".out", ".err") for p in files)  # Ray's logs are there
    leaked = []
    for p in files:
        try:
            data = p.read_bytes()
        except OSError:  # sockets and files Ray is rotating
            continue
        leaked += [str(p) for s in secrets if s in data]
    assert leaked == []


def test_stopped_run_continues_on_rerun_and_a_killed_worker_resumes_from_a_checkpoint(
        two_workers: dict[str, Any], stack: Settings, dataset: DatasetRef,
        ray_local: RaySession, tmp_path: Path) -> None:
    # One run id, two train() calls (one scenario: each Ray Train start costs ~10 s here).
    # 1) One worker under a time limit: it stops cleanly after epoch 1, with a checkpoint,
    #    having seen as many samples as the two workers of `two_workers` did per epoch.
    rid = run_id("resume")
    model_cfg, limited = configs(epochs=3, num_workers=1, time_limit_s=0.001)
    first = train(stack, dataset, model_cfg, limited, run_id=rid)
    assert first.stopped_by_time_limit and first.epochs_completed == 1
    assert first.history[0]["samples"] == two_workers["ref"].history[0]["samples"] == 160
    assert first.checkpoint_uri.endswith("/checkpoint_epoch_00001/checkpoint.pt")
    # 2) The rerun (no limit, 2 workers) continues at epoch 2; in epoch 3 rank 1 really
    #    exits (os._exit), and Ray restarts the group from epoch 2's checkpoint.
    marker = tmp_path / "fault-fired"
    _, train_cfg = configs(epochs=3, num_workers=2, max_failures=2)
    second = train(stack, dataset, model_cfg, train_cfg, run_id=rid,
                   fault={"exit_at_epoch": 3, "rank": 1, "once_marker": str(marker)})
    assert marker.exists()  # the worker process really died
    assert second.history[0] == first.history[0]  # epoch 1: the stopped run's, not retrained
    assert second.resumed_from_epoch == 2  # the restarted group: from the checkpoint of epoch 2
    assert (second.epochs_completed, second.global_step) == (3, 3 * (160 // 32))
    assert not second.stopped_by_time_limit
    assert [(h["epoch"], h["samples"]) for h in second.history] == [(1, 160), (2, 160),
                                                                      (3, 160)]
    assert second.checkpoint_uri.endswith("/checkpoint_epoch_00003/checkpoint.pt")


def test_rerun_of_finished_run_returns_its_result(
        two_workers: dict[str, Any], stack: Settings, dataset: DatasetRef,
        storage: Storage) -> None:
    rid = two_workers["run_id"]
    before = storage.list_keys(stack.s3_uri("ray", rid) + "/")
    calls: list[dict[str, Any]] = []
    again = train(stack, dataset, two_workers["model_cfg"], two_workers["train_cfg"],
                  run_id=rid, on_epoch=calls.append)
    assert again == two_workers["ref"]
    assert calls == []  # no epoch ran
    assert storage.list_keys(stack.s3_uri("ray", rid) + "/") == before  # nothing written


def test_divergence_fails_with_its_reason_and_stays_diverged(
        stack: Settings, dataset: DatasetRef, ray_local: RaySession, tmp_path: Path) -> None:
    rid = run_id("div")
    model_cfg, train_cfg = configs(epochs=3, num_workers=1, max_failures=1)
    fault = {"diverge_at_epoch": 2, "rank": 0, "once_marker": str(tmp_path / "div")}
    with pytest.raises(TrainingDiverged, match="injected by the test fault hook in epoch 2") as e:
        train(stack, dataset, model_cfg, train_cfg, run_id=rid, fault=fault)
    assert e.value.step == 6  # epoch 1's 5 steps and the first batch of epoch 2
    with pytest.raises(TrainingDiverged, match="earlier attempt of this run id"):
        train(stack, dataset, model_cfg, train_cfg, run_id=rid)
