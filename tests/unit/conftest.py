"""Unit-tier fixtures shared by the application tests (anomaly, inpainting): one small digits
split and one tiny conditional DCGAN trained on it, saved as an MLflow model directory, built
once per session instead of once per module (the unit tier runs on 2 shared cores)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gan.apps.studies.demo_models import save_model_dir, tiny_recipe
from gan.core.config import DataConfig
from gan.data.prepare import PreparedData, prepare_arrays
from gan.train.loop import train_local


@pytest.fixture(scope="session")
def tiny_digits() -> PreparedData:
    return prepare_arrays(DataConfig(limit=300))


@pytest.fixture(scope="session")
def tiny_cond_model_dir(tiny_digits: PreparedData, tmp_path_factory: pytest.TempPathFactory
                        ) -> Path:
    """A tiny conditional DCGAN (2 epochs on `tiny_digits`) as an MLflow model directory."""
    torch.set_num_threads(1)
    model_cfg, train_cfg = tiny_recipe(conditional=True, epochs=2)
    state = train_local(tiny_digits, model_cfg, train_cfg)
    return save_model_dir(tmp_path_factory.mktemp("tiny_cond") / "model", state)
