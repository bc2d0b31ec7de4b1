"""Unlabelled data end to end on the real stack (issue 15, point 1): digits in an .npz without
`y` go through the retrain flow (run in this process, as `gan retrain --source npz --uri`
runs it), are scored by the label-free (self-supervised) judge, cached per dataset version and
judge settings, and registered; the report, the gate and the model card name that judge.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from gan.core.config import DataConfig, RetrainParams
from gan.core.records import ModelRef
from gan.core.settings import Settings
from gan.data.prepare import prepare_arrays
from gan.io.storage import Storage

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

DATA = f"unl{uuid.uuid4().hex[:6]}"
MODEL = f"gan-{DATA}-smoke"


@pytest.fixture(scope="module")
def npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    digits = prepare_arrays(DataConfig(limit=600))
    x = torch.cat([digits.x_train, digits.x_holdout]).numpy()  # (600, 1, 28, 28) in [-1, 1]
    path = tmp_path_factory.mktemp("unlabelled") / "digits.npz"
    np.savez(path, x=x)  # no y: unlabelled
    return path


def test_unlabelled_npz_retrains_and_registers_with_the_label_free_judge(stack: Settings,
                                                                         npz: Path):
    from flows.prefect_setup import use_api

    use_api(stack)
    from flows.retrain import retrain  # after use_api: Prefect reads its API URL at import

    params = RetrainParams.model_validate({
        "preset": "smoke", "epochs": 2,
        "data": {"source": "npz", "uri": str(npz), "name": DATA, "limit": 600},
        # the real quality check (the smoke preset switches it off), on a short training
        "eval": {"ssl_judge_epochs": 8, "min_ssl_retrieval": 0.25},  # not 0.3: a default
        # value is dropped in favour of the preset's (RetrainParams.resolve)
        "gate": {"min_recall_ratio": 0.0},
    })
    state = retrain(params, return_state=True)
    assert state.is_completed(), state.message
    ref = state.result()
    assert isinstance(ref, ModelRef) and ref.name == MODEL and ref.version == "1"
    assert any("self-supervised judge" in r for r in ref.decision.reasons), ref.decision.reasons
    assert any(r.startswith("PASS: no labels: class coverage and class KL not judged")
               for r in ref.decision.reasons), ref.decision.reasons

    c, storage = MlflowClient(stack.require_mlflow()), Storage.from_settings(stack)
    v1 = c.get_model_version(MODEL, "1")
    assert "features of a self-supervised judge (no labels" in v1.description  # model card
    dataset_version = v1.tags["dataset_version"]
    report = storage.get_json(stack.s3_uri("runs", v1.tags["run_id"], "eval", "report.json"))
    judge_uri = report["judge_ref"]["uri"]  # judges/<version>/self-supervised-<settings key>
    assert judge_uri.startswith(stack.s3_uri("judges", dataset_version, "self-supervised-"))
    assert report["judge_ref"]["reason"] == "the data has no labels"
    meta = storage.get_json(f"{judge_uri}/ssl_judge.json")
    assert meta["kind"] == "self-supervised" and meta["epochs"] == 8
    assert meta["cache_key"]["ssl_judge_epochs"] == 8
    assert meta["quality"]["retrieval_accuracy"] >= 0.25
    assert report["judge"] == "self-supervised" and report["class_hist"] == []
    assert report["judge_quality"]["separation"] > 5
    md = storage.get_bytes(stack.s3_uri("runs", v1.tags["run_id"], "eval", "report.md"))
    assert "judge: self-supervised encoder (label-free" in md.decode()
