"""Training on the stack's warm Ray head (`gan stack up` runs it on 127.0.0.1:GAN_RAY_PORT).

A run reads the head's address from the stack's state, joins it with the head's token and
leaves it running: no Ray of its own is started. Tiny model (PRESETS["smoke"]), 200 digits,
one worker, one epoch.
"""

from __future__ import annotations

import logging
import uuid

import psutil
import pytest
import ray

from gan.core.config import DataConfig, resolve_configs
from gan.core.settings import Settings
from gan.data.prepare import prepare
from gan.io.storage import Storage
from gan.stack import supervisor
from gan.train.ray.driver import train

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_training_joins_the_stacks_warm_head(stack: Settings, caplog) -> None:
    assert not ray.is_initialized()
    assert stack.ray_from_stack and stack.ray_address == f"127.0.0.1:{stack.ray_port}"
    head_pid = supervisor.status(stack)["services"]["ray"]["pid"]
    dataset = prepare(DataConfig(limit=200), Storage.from_settings(stack))
    model_cfg, train_cfg = resolve_configs("smoke", train={"epochs": 1, "num_workers": 1})
    with caplog.at_level(logging.INFO, logger="gan.train.ray.cluster"):
        ref = train(stack, dataset, model_cfg, train_cfg, run_id=f"it-warm-{uuid.uuid4().hex[:8]}")
    assert ref.epochs_completed == 1
    joined = [r.getMessage() for r in caplog.records if "joined the Ray" in r.getMessage()]
    assert joined and joined[0].startswith(f"joined the Ray head at {stack.ray_address}")
    assert not [r for r in caplog.records if "started a local Ray" in r.getMessage()]
    assert not ray.is_initialized()  # disconnected, not shut down:
    st = supervisor.status(stack)["services"]["ray"]
    assert st["healthy"] and st["pid"] == head_pid and psutil.pid_exists(head_pid)
