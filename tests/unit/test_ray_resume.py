"""Resuming a Ray run and which token a join uses, without starting Ray.

`latest_complete_checkpoint`: what every (re)start of the worker group offers besides Ray's own
checkpoint (Ray registers a report only at its next poll, so a node lost in between would cost
that checkpoint): the newest folder whose `checkpoint.pt` loads and names its own epoch;
partial uploads and mislabelled folders are skipped. `stack_token_file`: the stack's Ray token
only for the stack's own head; a RAY_ADDRESS cluster authenticates with Ray's own RAY_AUTH_*.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyarrow import fs as pafs

from gan.core.config import resolve_configs
from gan.train.checkpoint import save_checkpoint
from gan.train.ray.driver import resources_per_worker, stack_token_file
from gan.train.ray.worker import CHECKPOINT_FILE, latest_complete_checkpoint
from gan.train.state import make_state


def _write(run_dir: Path, folder_epoch: int, data: bytes) -> None:
    d = run_dir / f"checkpoint_epoch_{folder_epoch:05d}"
    d.mkdir(parents=True)
    (d / CHECKPOINT_FILE).write_bytes(data)


def test_latest_complete_checkpoint_skips_partial_and_mislabelled(tmp_path: Path) -> None:
    model_cfg, train_cfg = resolve_configs("smoke")
    state = make_state(model_cfg, train_cfg)
    fs, run_dir = pafs.LocalFileSystem(), tmp_path / "run"
    assert latest_complete_checkpoint(fs, str(run_dir)) is None  # no folder yet
    run_dir.mkdir()
    assert latest_complete_checkpoint(fs, str(run_dir)) is None  # no checkpoint yet
    blobs = {}
    for epoch in (1, 2):
        state.epoch = epoch
        blobs[epoch] = save_checkpoint(state)
    _write(run_dir, 1, blobs[1])
    _write(run_dir, 2, blobs[2])
    assert latest_complete_checkpoint(fs, str(run_dir)) == str(run_dir / "checkpoint_epoch_00002")
    _write(run_dir, 3, blobs[2][: len(blobs[2]) // 2])  # a partial upload
    _write(run_dir, 4, blobs[1])  # a folder whose checkpoint says another epoch
    (run_dir / "checkpoint_epoch_00005").mkdir()  # an empty folder
    (run_dir / "checkpoint_manager_snapshot.json").write_text(json.dumps({}))
    assert latest_complete_checkpoint(fs, str(run_dir)) == str(run_dir / "checkpoint_epoch_00002")


def test_stack_token_only_for_the_stacks_own_head(settings_env) -> None:
    home = settings_env.gan_home
    home.mkdir()
    (home / "stack.json").write_text(json.dumps({"ray_address": "127.0.0.1:21002"}))
    s = settings_env.load()
    assert s.ray_from_stack and stack_token_file(s) == s.ray_token_file
    settings_env.set(RAY_ADDRESS="10.0.0.5:6379")  # a cluster: Ray's own RAY_AUTH_* apply
    assert stack_token_file(settings_env.load()) is None
    settings_env.set(RAY_ADDRESS="ray://gan-ray-head-svc:10001")
    assert stack_token_file(settings_env.load()) is None
    settings_env.set(RAY_ADDRESS="127.0.0.1:6390", GAN_RAY_PORT="6390")  # names the stack's
    s = settings_env.load()
    assert not s.ray_from_stack and stack_token_file(s) == s.ray_token_file


def test_workers_request_the_cluster_worker_resource_only_on_a_cluster() -> None:
    _, tc = resolve_configs("smoke", train={"cpus_per_worker": 2})
    assert resources_per_worker(tc, worker_resource="gan_worker", local=False) == {
        "CPU": 2, "gan_worker": 1}
    assert resources_per_worker(tc, worker_resource="gan_worker", local=True) == {"CPU": 2}
    assert resources_per_worker(tc, worker_resource=None, local=False) == {"CPU": 2}
    _, gpu = resolve_configs("smoke", train={"use_gpu": True})
    assert resources_per_worker(gpu, worker_resource=None, local=False) == {"CPU": 1, "GPU": 1}


def test_worker_resource_name_is_checked(settings_env) -> None:
    settings_env.set(GAN_RAY_WORKER_RESOURCE="gan_worker")
    assert settings_env.load().ray_worker_resource == "gan_worker"
    settings_env.set(GAN_RAY_WORKER_RESOURCE="no spaces")
    with pytest.raises(ValueError, match="GAN_RAY_WORKER_RESOURCE"):
        settings_env.load()
