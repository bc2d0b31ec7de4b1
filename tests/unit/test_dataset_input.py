"""A run's dataset version shows in MLflow's "Datasets" panel (gan.registry.dataset_input): one
input per run, named after the dataset, its digest the version (content hash), its source the
version's storage prefix, its profile the counts, context "training"; logged again (a retried
task, the register stage after the live run), it is not added twice. A local SQLite tracking
store, no server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from gan.core.records import DatasetRef
from gan.registry import dataset_input

REF = DatasetRef(name="digits", version="0123456789abcdef",
                 uri="s3://gan/datasets/digits/0123456789abcdef/", source="digits",
                 n_train=1617, n_holdout=180, num_classes=10, image_size=28,
                 class_hist_train=[162] * 9 + [159])


@pytest.fixture
def client(tmp_path: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_the_dataset_version_is_the_runs_training_input(client: MlflowClient) -> None:
    run = client.create_run(client.create_experiment("e"))
    for _ in range(2):  # the live run, then register (or a retried task): still one input
        dataset_input.log_dataset_input(client, run.info.run_id, REF)
    (inp,) = client.get_run(run.info.run_id).inputs.dataset_inputs
    ds = inp.dataset
    assert (ds.name, ds.digest, ds.source_type) == ("digits", REF.version, "s3")
    assert json.loads(ds.source)["uri"] == REF.uri
    profile = json.loads(ds.profile)
    assert profile["n_train"] == 1617 and profile["n_holdout"] == 180
    assert profile["num_rows"] == 1797 and profile["image_shape"] == [1, 28, 28]
    assert profile["num_classes"] == 10 and sum(profile["class_hist_train"]) == 1617
    schema = json.loads(ds.schema)["mlflow_tensorspec"]
    assert json.loads(schema["features"])[0]["tensor-spec"]["shape"] == [-1, 1, 28, 28]
    assert {t.key: t.value for t in inp.tags} == {"mlflow.data.context": "training"}


def test_another_version_is_another_input(client: MlflowClient, tmp_path: Path) -> None:
    """A run that (somehow) saw two versions lists both; a local version has a local source."""
    run = client.create_run(client.create_experiment("e"))
    local = REF.model_copy(update={"version": "fedcba9876543210", "uri": str(tmp_path),
                                   "labelled": False, "num_classes": 1, "class_hist_train": []})
    dataset_input.log_dataset_input(client, run.info.run_id, REF)
    dataset_input.log_dataset_input(client, run.info.run_id, local)
    inputs = client.get_run(run.info.run_id).inputs.dataset_inputs
    assert sorted(i.dataset.digest for i in inputs) == sorted([REF.version, local.version])
    unlabelled = next(i.dataset for i in inputs if i.dataset.digest == local.version)
    assert unlabelled.source_type == "local"
    assert json.loads(unlabelled.profile)["num_classes"] == 0
