"""The batch flows on the real stack: a generator registered in MLflow (artifacts in SeaweedFS),
image batches in S3, Prefect flows writing their outputs back to S3.

A tiny conditional DCGAN is trained in-process, logged as the pyfunc bundle and registered as
`<name>@champion`; `score_anomalies` scores every .npz under an s3:// prefix (digits and pure
noise) into one CSV each (read back from S3); `inpaint_batch` fills a centre square;
`augment_dataset` writes labelled samples; bad inputs fail the flow with the file named; the
commands `gan sample --npz`, `gan anomaly` (s3:// in and out) and `gan inpaint` run on the
registered model by its `models:/` URI.
"""

from __future__ import annotations

import csv
import io
import tempfile
import uuid
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from gan.apps.inputs import npz_bytes
from gan.apps.studies.demo_models import tiny_recipe
from gan.core.config import DataConfig
from gan.core.settings import Settings
from gan.data.prepare import prepare_arrays
from gan.io.storage import Storage
from gan.registry import connect as registry_connect
from gan.registry import model_format as mm
from gan.registry import publish as registry
from gan.registry import run_log as mlflow_run
from gan.train.loop import train_local
from gan.train.steps import unwrap

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
torch.set_num_threads(1)
NAME = f"appstest-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def published(stack: Settings):
    """(model URI `models:/<name>@champion`, the data it was trained on)."""
    from flows.prefect_setup import use_api

    use_api(stack)
    data = prepare_arrays(DataConfig(limit=300))
    model_cfg, train_cfg = tiny_recipe(conditional=True, epochs=2)
    state = train_local(data, model_cfg, train_cfg)
    c = registry_connect.client(stack)
    # experiment_id on the run, not set_experiment: no process-wide state left for later tests
    exp_id = mlflow_run.experiment_id(c, NAME)
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(experiment_id=exp_id) as run:
        bundle = mm.write_bundle(Path(tmp) / "gan_generator", model_cfg, state.generator,
                                 unwrap(state.D))
        info = mm.log_bundle_model(registry.MODEL_ARTIFACT, bundle)
    c.create_registered_model(NAME)
    mv = c.create_model_version(NAME, source=f"models:/{info.model_id}",
                                run_id=run.info.run_id, model_id=info.model_id)
    c.set_registered_model_alias(NAME, registry.CHAMPION, mv.version)
    return f"models:/{NAME}@champion", data


def _csv(storage: Storage, uri: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(storage.get_bytes(uri).decode())))


def test_score_anomalies_flow_s3_to_s3(published, storage: Storage) -> None:
    from flows.batch import score_anomalies

    uri, data = published
    prefix = storage.settings.s3_uri("apps-test", NAME)
    digits = data.x_holdout[:8].numpy()
    noise = np.random.default_rng(0).uniform(-1, 1, (8, 1, 28, 28)).astype(np.float32)
    storage.put_bytes(f"{prefix}/in/digits.npz", npz_bytes(x=digits))
    storage.put_bytes(f"{prefix}/in/noise.npz", npz_bytes(x=noise))
    storage.put_bytes(f"{prefix}/in/readme.txt", b"not an input")  # ignored: not .npz
    out = score_anomalies(uri, f"{prefix}/in/", f"{prefix}/out", steps=30, lr=0.1)
    assert [o["written"] for o in out] == [f"{prefix}/out/digits.scores.csv",
                                           f"{prefix}/out/noise.scores.csv"]
    d, n = (_csv(storage, o["written"]) for o in out)
    assert len(d) == 8 and len(n) == 8
    assert {"index", "score", "residual", "feature", "label"} <= set(d[0])
    for r in d + n:  # (how well scores separate is the unit tests' business: tiny model here)
        assert 0 <= int(r["label"]) < 10 and np.isfinite(float(r["score"]))
        assert float(r["score"]) == pytest.approx(
            0.9 * float(r["residual"]) + 0.1 * float(r["feature"]), rel=1e-4)


def test_inpaint_and_augment_flows(published, storage: Storage) -> None:
    from flows.batch import augment_dataset, inpaint_batch

    uri, data = published
    prefix = storage.settings.s3_uri("apps-test", NAME)
    x = data.x_holdout[:4].numpy()
    storage.put_bytes(f"{prefix}/inp/batch.npz", npz_bytes(x=x))
    (res,) = inpaint_batch(uri, f"{prefix}/inp/batch.npz", f"{prefix}/inp-out", steps=5)
    assert res["written"] == [f"{prefix}/inp-out/batch.inpainted.npz"]
    with np.load(io.BytesIO(storage.get_bytes(res["written"][0]))) as f:
        known = f["known"].astype(bool)
        assert f["x"].shape == x.shape and f["y"].shape == (4,)
        np.testing.assert_array_equal(f["x"][known], x[known])
    res = augment_dataset(uri, 3, f"{prefix}/aug/samples.npz")
    with np.load(io.BytesIO(storage.get_bytes(res["written"]))) as f:
        assert f["x"].shape == (30, 1, 28, 28) and np.bincount(f["y"]).tolist() == [3] * 10


def test_commands_on_the_registered_model(published, storage: Storage, tmp_path: Path) -> None:
    from PIL import Image
    from typer.testing import CliRunner

    from gan.cli.main import app

    uri, data = published
    run = CliRunner().invoke
    # gan sample --npz: the labelled export augmentation uses
    r = run(app, ["sample", "--model", uri, "--n", "20", "--npz", str(tmp_path / "s.npz")])
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "s.npz") as f:
        assert f["x"].shape == (20, 1, 28, 28) and np.bincount(f["y"]).tolist() == [2] * 10
    # gan anomaly: input and scores in S3
    prefix = storage.settings.s3_uri("apps-test", NAME, "cli")
    storage.put_bytes(f"{prefix}/in.npz", npz_bytes(x=data.x_holdout[:5].numpy(),
                                                     y=data.y_holdout[:5].numpy()))
    r = run(app, ["anomaly", "--model", uri, "--input", f"{prefix}/in.npz", "--out",
                  f"{prefix}/scores.csv", "--steps", "5"])
    assert r.exit_code == 0, r.output
    rows = _csv(storage, f"{prefix}/scores.csv")
    assert [int(x["y"]) for x in rows] == data.y_holdout[:5].tolist()
    assert [x["label"] for x in rows] == [x["y"] for x in rows]  # labels given → searched
    # gan inpaint: centre square, grid and filled images
    x = data.x_holdout[:4].numpy()
    np.savez(tmp_path / "in.npz", x=x)
    r = run(app, ["inpaint", "--model", uri, "--input", str(tmp_path / "in.npz"), "--mask",
                  "center", "--steps", "5", "--out", str(tmp_path / "grid.png"), "--npz",
                  str(tmp_path / "filled.npz")])
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "grid.png").size == ((3 * 30 + 2) * 2, (4 * 30 + 2) * 2)
    with np.load(tmp_path / "filled.npz") as f:
        known = f["known"].astype(bool)
        assert int((~known).sum()) == 4 * 14 * 14
        np.testing.assert_array_equal(f["x"][known], x[known])


def test_bad_batches_fail_naming_the_file(published, storage: Storage) -> None:
    from flows.batch import score_anomalies

    uri, _ = published
    prefix = storage.settings.s3_uri("apps-test", NAME, "bad")
    storage.put_bytes(f"{prefix}/small.npz", npz_bytes(x=np.zeros((2, 8, 8), np.float32)))
    with pytest.raises(ValueError, match=r"small\.npz: array 'x' has shape \(2, 1, 8, 8\)"):
        score_anomalies(uri, f"{prefix}/small.npz", f"{prefix}/out.csv", steps=2)
    with pytest.raises(ValueError, match="no .npz files"):
        score_anomalies(uri, f"{prefix}/nothing-here/", f"{prefix}/out", steps=2)
    assert not storage.exists(f"{prefix}/out.csv")
