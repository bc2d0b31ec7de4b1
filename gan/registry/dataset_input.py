"""A run's dataset version as an MLflow dataset input: what the run page's "Datasets" panel shows.

What this module is: `VersionedDataset`, an `mlflow.data` dataset made of metadata only — the
version's storage prefix as its source (`s3://<bucket>/datasets/<name>/<version>/`, or a local
path), its name, the version (the content hash `gan.data.prepare` computed) as its digest, its
counts and image shape as its profile, and a tensor schema (images uint8 (N, C, H, W), labels
int64 (N,)) — and `log_dataset_input(client, run_id, dataset)`, which logs it into a run with
the context tag "training". Logging the same version into a run again adds nothing (MLflow
keys a run's inputs by dataset name and digest), so a retried task is harmless.

What it is not: no data is read or uploaded (the version already lives in the bucket, written
once by `gan.data.prepare`); no run is created here (`gan.registry.run_log`, `live_run`).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from mlflow import MlflowClient
from mlflow.data.dataset import Dataset
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.schema import TensorDatasetSchema
from mlflow.entities import DatasetInput, InputTag
from mlflow.types import Schema, TensorSpec
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from gan.core.records import DatasetRef

CONTEXT = "training"  # the input's role, shown beside it in the MLflow UI


class VersionedDataset(Dataset):
    """A prepared dataset version, described (not carried) as an MLflow dataset."""

    def __init__(self, ref: DatasetRef) -> None:
        self.ref = ref
        super().__init__(source=resolve_dataset_source(ref.uri), name=ref.name,
                         digest=ref.version)

    def _compute_digest(self) -> str:
        return self.ref.version  # the content hash: the version *is* the digest

    @property
    def profile(self) -> dict[str, Any]:
        r = self.ref
        out: dict[str, Any] = {"num_rows": r.n_train + r.n_holdout, "n_train": r.n_train,
                               "n_holdout": r.n_holdout,
                               "image_shape": [r.channels, r.image_size, r.image_size],
                               "labelled": r.labelled,
                               "num_classes": r.num_classes if r.labelled else 0}
        if r.class_hist_train:
            out["class_hist_train"] = list(r.class_hist_train)
        if r.class_names:
            out["class_names"] = list(r.class_names)
        if r.n_skipped:
            out["n_skipped_files"] = r.n_skipped
        return out

    @property
    def schema(self) -> TensorDatasetSchema:
        r = self.ref
        images = TensorSpec(np.dtype(np.uint8), (-1, r.channels, r.image_size, r.image_size),
                            "x")  # (N, C, H, W) pixels 0..255
        labels = TensorSpec(np.dtype(np.int64), (-1,), "y")  # (N,)
        return TensorDatasetSchema(features=Schema([images]), targets=Schema([labels]))

    def to_dict(self) -> dict[str, str]:
        return super().to_dict() | {"schema": json.dumps(self.schema.to_dict()),
                                    "profile": json.dumps(self.profile)}


def log_dataset_input(client: MlflowClient, mlflow_run_id: str, dataset: DatasetRef) -> None:
    """`dataset` as the run's training input (idempotent: see the module docstring)."""
    entity = VersionedDataset(dataset)._to_mlflow_entity()
    client.log_inputs(mlflow_run_id, datasets=[
        DatasetInput(entity, tags=[InputTag(key=MLFLOW_DATASET_CONTEXT, value=CONTEXT)])])
