"""A dataset bigger than the in-memory cap trains by streaming its shards (Ray Data from S3).

The bundled digits (1,797 images: 1,438 train + 359 holdout, 5.4 MiB as float32) with
`train.max_in_memory_mb` 2 and `train.stream` auto: the driver must choose the streaming
path, the worker reads its `get_dataset_shard` from the stack's SeaweedFS through Ray Data,
and the run leaves a checkpoint of the right dataset version with finite losses; the
recorded `data_path` (in the TrainedRef and the run's `trained.json`) says "stream", and
every epoch saw floor(N / B) whole batches, as the in-memory path does; the same run id
asked for a third epoch resumes from the checkpoint and streams again. A train shard whose
bytes differ from the manifest is refused before any training. Tiny model
(PRESETS["smoke"]), 2 + 1 epochs.
"""

from __future__ import annotations

import math
import uuid

import pytest

from gan.core.config import DataConfig, resolve_configs
from gan.core.settings import Settings
from gan.data.prepare import prepare
from gan.data.validate import DataError
from gan.io.jsonio import read_json_fs
from gan.io.storage import Storage, arrow_fs, arrow_path
from gan.train.checkpoint import load_checkpoint
from gan.train.ray.driver import train
from gan.train.ray.stream import train_shard_paths
from gan.train.ray.worker import TRAINED_FILE
from gan.train.stream import in_memory_mb

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_capped_memory_streams_the_shards_and_trains(stack: Settings, storage: Storage,
                                                      name: str) -> None:
    dataset = prepare(DataConfig(name=name), storage)
    size = in_memory_mb(dataset.n_train + dataset.n_holdout, dataset.channels,
                        dataset.image_size)
    assert size > 2  # the cap below is smaller than the dataset
    model_cfg, train_cfg = resolve_configs(
        "smoke", train={"epochs": 2, "batch_size": 32, "checkpoint_every": 1,
                        "stream": "auto", "max_in_memory_mb": 2})
    run_id = f"it-stream-{uuid.uuid4().hex[:8]}"
    ref = train(stack, dataset, model_cfg, train_cfg, run_id=run_id)

    assert ref.data_path == "stream"
    fs = arrow_fs(stack)
    recorded = read_json_fs(fs, f"{arrow_path(stack.s3_uri('ray'))}/{run_id}/{TRAINED_FILE}")
    assert recorded is not None and recorded["data_path"] == "stream"
    assert ref.epochs_completed == 2 and ref.dataset_version == dataset.version
    whole = dataset.n_train // 32 * 32  # drop_last: whole batches only
    assert [h["samples"] for h in ref.history] == [whole, whole]
    ckpt = load_checkpoint(storage.get_bytes(ref.checkpoint_uri))
    assert ckpt["epoch"] == 2 and ckpt["step"] == 2 * (dataset.n_train // 32)
    assert ckpt["dataset_version"] == dataset.version
    for h in ckpt["history"]:
        assert math.isfinite(h["loss_d"]) and math.isfinite(h["loss_g"]), h

    # The same run id asked for one more epoch resumes from epoch 2's checkpoint, streaming.
    more = train_cfg.model_copy(update={"epochs": 3})
    resumed = train(stack, dataset, model_cfg, more, run_id=run_id)
    assert resumed.data_path == "stream" and resumed.resumed_from_epoch == 2
    assert resumed.epochs_completed == 3 and resumed.global_step == 3 * (dataset.n_train // 32)
    assert [h["samples"] for h in resumed.history] == [whole] * 3


def test_a_shard_that_differs_from_its_manifest_is_refused(stack: Settings, storage: Storage,
                                                           name: str) -> None:
    dataset = prepare(DataConfig(limit=100, name=name), storage)
    fs = arrow_fs(stack)
    assert len(train_shard_paths(fs, dataset)) == 1  # intact: accepted
    storage.put_bytes(dataset.uri + "train-00000.parquet", b"not the shard")
    with pytest.raises(DataError, match="train-00000.parquet: sha256 differs"):
        train_shard_paths(fs, dataset)
