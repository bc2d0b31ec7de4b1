"""gan.registry.publish on the real local stack: MLflow server (SQLite), artifacts in SeaweedFS.

Two runs of tiny conditional DCGANs are registered under one fresh model name: the first
(no champion yet, gate passes) becomes `challenger` and `champion`; the second, worse one only
`challenger`. Published weights come back identical (EMA copy, not raw G) through
`load_generator`, `mlflow.pyfunc` and `gan sample`; registering a run again changes nothing.

Re-deciding (issue 23, item 8): a decision names the report it was made on; registering a
decided run again returns that decision, never one made on another report; `redecide` applies
the gate to a new report under a new decision record that keeps the old one. The case it exists
for: MLflow down while the run was evaluated, so the champion could not be re-scored and the gate
said FAIL; before `redecide` no rerun could change that decision.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image

from gan.core.config import GateConfig, ModelConfig, RetrainParams, TrainConfig
from gan.core.records import (
    ChampionScore,
    DatasetRef,
    GateDecision,
    ModelRef,
    Report,
    TrainedRef,
)
from gan.core.settings import Settings
from gan.eval import pictures
from gan.io.storage import Storage
from gan.nets.models import build
from gan.registry import load as registry_load
from gan.registry import model_format as mm
from gan.registry import publish as registry
from gan.registry.connect import RegistryError
from gan.registry.live_run import LiveRun
from gan.train.checkpoint import save_checkpoint
from gan.train.state import TrainState, make_state

pytestmark = pytest.mark.integration
torch.set_num_threads(1)

MODEL_CFG = ModelConfig(arch="dcgan", conditional=True, spectral_norm=True, base_channels=8,
                        latent_dim=12)
TRAIN_CFG = TrainConfig(epochs=2, batch_size=16, ema_decay=0.9)
VERSION = "0123456789abcdef"


def _state(seed: int) -> TrainState:
    state = make_state(MODEL_CFG, TRAIN_CFG.model_copy(update={"seed": seed}))
    with torch.no_grad():  # make raw G differ from its EMA copy: the EMA one must be published
        for p in state.G.parameters():
            p.add_(0.05)
    return state


def _publish_inputs(storage: Storage, run_id: str, seed: int, fid: float,
                    champion: ChampionScore | None = None,
                    ) -> tuple[TrainState, TrainedRef, Report, DatasetRef]:
    """A real checkpoint and real report files in S3, as training and evaluation leave them."""
    s = storage.settings
    state = _state(seed)
    ckpt_uri = s.s3_uri("runs", run_id, "checkpoint.pt")
    storage.put_bytes(ckpt_uri, save_checkpoint(state, dataset_version=VERSION))
    history = [{"epoch": e, "step": 4 * e, "loss_d": 1.0 / e, "loss_g": 0.5 * e, "d_real": 0.6,
                "d_fake": 0.4, "images_per_s": 100.0, "epoch_time_s": 0.5} for e in (1, 2)]
    trained = TrainedRef(run_id=run_id, checkpoint_uri=ckpt_uri, dataset_version=VERSION,
                         model_cfg=MODEL_CFG.model_dump(), train_cfg=TRAIN_CFG.model_dump(),
                         epochs_completed=2, global_step=8, history=history,
                         images_per_s=100.0, ray_run_name=f"ray-{run_id}",
                         ray_storage_uri=s.s3_uri("ray"))
    eval_prefix = s.s3_uri("runs", run_id, "eval")
    with torch.no_grad():
        fake = state.G_ema(torch.randn(10, 12), torch.arange(10))  # (10, 1, 28, 28)
    artifacts = {"samples": f"{eval_prefix}/samples.png"}
    storage.put_bytes(artifacts["samples"], pictures.sample_grid_png(fake), "image/png")
    report = Report(run_id=run_id, dataset_version=VERSION,
                    metrics={"fid": fid, "kid_mean": fid / 100, "class_kl": 0.01,
                             "classes_covered": 10.0, "precision": 0.7, "recall": 0.6,
                             "copy_ct": 0.1, "copy_distance_ratio": 1.0},
                    per_seed={"fid": [fid] * 3}, eval_seeds=[1, 2, 3], champion=champion,
                    floors={"fid": 1.5, "recall": 0.9}, ceilings={"inception_score": 9.1},
                    class_hist=[0.1] * 10, classes_covered=10, judge_accuracy=0.97,
                    conditional_accuracy=0.9, n_samples=200, seeds={"eval": 1},
                    report_uri=f"{eval_prefix}/report.json",
                    markdown_uri=f"{eval_prefix}/report.md", artifacts=artifacts)
    storage.put_json(report.report_uri, report.model_dump(mode="json"))
    storage.put_bytes(report.markdown_uri, b"# report\n", "text/markdown")
    dataset = DatasetRef(name="digits", version=VERSION, uri=s.s3_uri("datasets/digits", VERSION),
                         source="digits", n_train=100, n_holdout=20, num_classes=10,
                         image_size=28)
    return state, trained, report, dataset


def _register(settings: Settings, storage: Storage, name: str, run_id: str,
              inputs: tuple[TrainState, TrainedRef, Report, DatasetRef], **kw: Any) -> ModelRef:
    _, trained, report, dataset = inputs
    p = RetrainParams(preset="smoke")
    data, _, _, ev = p.resolve()
    return registry.register(
        settings, run_id=run_id, trained=trained, report=report, dataset=dataset,
        params={"data": data, "model": MODEL_CFG, "train": TRAIN_CFG, "eval": ev, "gate": p.gate},
        gate_cfg=GateConfig(), model_name=name, storage=storage,
        lineage={"prefect.flow_run_id": f"flow-{run_id}",
                 "prefect.flow_run_url": f"http://127.0.0.1:1/runs/flow-run/flow-{run_id}"},
        **kw)


@pytest.fixture(scope="module")
def published(stack: Settings):
    """Two registered runs under a fresh model name: (name, [(inputs, ref), ...])."""
    storage = Storage.from_settings(stack)
    name = f"gan-test-{uuid.uuid4().hex[:8]}"
    out = []
    # The second is worse than version 1 re-scored in its evaluation: no promotion.
    rescored = ChampionScore(version="1", metrics={"fid": 10.0}, per_seed={"fid": [10.0] * 3})
    for i, (fid, champ) in enumerate(((10.0, None), (20.0, rescored))):
        run_id = f"reg-{uuid.uuid4().hex[:8]}-{i}"
        inputs = _publish_inputs(storage, run_id, seed=i, fid=fid, champion=champ)
        out.append((run_id, inputs, _register(stack, storage, name, run_id, inputs)))
    return name, out


def _z_y(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return torch.randn(n, MODEL_CFG.latent_dim, generator=g), torch.arange(n) % 10


def test_first_champion_second_challenger(stack: Settings, published) -> None:
    name, ((_, _, ref1), (_, _, ref2)) = published
    assert (ref1.version, ref1.champion, ref1.decision.promote) == ("1", True, True)
    assert ref1.decision.champion_version is None
    assert (ref2.version, ref2.champion, ref2.decision.promote) == ("2", False, False)
    assert ref2.decision.champion_version == "1" and ref2.decision.champion_fid == 10.0
    assert any(r.startswith("FAIL: FID 20 ± 0 vs champion v1 re-scored 10")
               for r in ref2.decision.reasons), ref2.decision.reasons
    assert ref1.uri == f"models:/{name}/1" and ref1.mlflow_run_url.startswith("http://")
    c = MlflowClient(stack.require_mlflow())
    assert c.get_model_version_by_alias(name, "champion").version == "1"
    assert c.get_model_version_by_alias(name, "challenger").version == "2"
    v2 = c.get_model_version(name, "2")
    public = {k for k in v2.tags if not k.startswith("gan.")}
    assert public == {"run_id", "dataset_version", "verdict"}, v2.tags  # few tags
    assert v2.tags["dataset_version"] == VERSION and v2.tags["verdict"] == "rejected"
    assert v2.tags["run_id"] == published[1][1][0]
    metrics = registry.version_metrics(c, v2)  # from its run, not its tags
    assert metrics["fid"] == 20.0 and metrics["judge_accuracy"] == 0.97
    assert "classes_covered" in metrics and "floor_fid" not in metrics
    card = v2.description
    assert "not promoted" in card and "FAIL: FID" in card and "## Data" in card
    assert "## Headline metrics" in card and "| FID (judge features) | 20 | 1.5 |" in card
    assert "## Known limits" in card and "## Intended use" in card
    assert f'mlflow.pyfunc.load_model("models:/{name}/2")' in card
    assert "get-artifact?path=evaluation/samples.png" in card
    assert "http://127.0.0.1:1/runs/flow-run/flow-" in card  # the Prefect link
    assert "promoted to champion" in c.get_model_version(name, "1").description
    run2 = published[1][1][2].mlflow_run_id
    assert {a.path for a in c.list_artifacts(run2)} >= {"model_card.md"}
    logged = c.get_logged_model(c.get_run(run2).data.tags[registry.MODEL_ID_TAG])
    assert {m.key: m.value for m in logged.metrics}["fid"] == 20.0  # the model's metrics


def test_run_holds_params_metrics_artifacts_lineage(stack: Settings, published) -> None:
    _, ((run_id, (_, trained, _, dataset), ref), _) = published
    c = MlflowClient(stack.require_mlflow())
    run = c.get_run(ref.mlflow_run_id)
    assert run.info.status == "FINISHED"
    p, tags = run.data.params, run.data.tags
    assert p["model.arch"] == "dcgan" and p["train.epochs"] == "2" and p["data.limit"] == "200"
    assert p["model.latent_dim"] == "12" and p["gate.max_class_kl"] == "0.1"
    secret = stack.aws_secret_access_key.get_secret_value()
    key_id = stack.aws_access_key_id.get_secret_value()
    everything = " ".join([*p.values(), *p.keys(), *tags.values(), *tags.keys()])
    assert secret not in everything and key_id not in everything
    assert tags["gan.run_id"] == run_id and tags["prefect.flow_run_id"] == f"flow-{run_id}"
    assert tags["gan.dataset.version"] == VERSION and tags["gan.dataset.uri"] == dataset.uri
    assert tags["gan.checkpoint_uri"] == trained.checkpoint_uri
    assert tags["gan.ray.run_name"] == f"ray-{run_id}" and tags["gan.code_version"]
    # The run page's "Datasets" panel: the version it trained on, its digest the content hash.
    (inp,) = run.inputs.dataset_inputs
    assert (inp.dataset.name, inp.dataset.digest) == ("digits", VERSION)
    assert json.loads(inp.dataset.source)["uri"] == dataset.uri
    assert json.loads(inp.dataset.profile)["n_train"] == dataset.n_train == 100
    hist = c.get_metric_history(ref.mlflow_run_id, "train/loss_d")
    assert sorted((m.step, m.value) for m in hist) == [(1, 1.0), (2, 0.5)]
    m = run.data.metrics
    assert m["fid"] == 10.0 and m["floor_fid"] == 1.5 and m["ceiling_inception_score"] == 9.1
    assert m["judge_accuracy"] == 0.97
    arts = {a.path for a in c.list_artifacts(ref.mlflow_run_id, "evaluation")}
    assert arts >= {"evaluation/report.json", "evaluation/report.md", "evaluation/samples.png"}


def test_load_generator_equals_published_ema(stack: Settings, published) -> None:
    name, ((_, inputs1, ref1), (_, inputs2, _)) = published
    z, y = _z_y()
    for uri, state in ((f"models:/{name}@champion", inputs1[0]), (ref1.uri, inputs1[0]),
                       (f"runs:/{ref1.mlflow_run_id}/generator", inputs1[0]),
                       (f"models:/{name}@challenger", inputs2[0])):
        G = registry_load.load_generator(uri, settings=stack)
        assert not G.training and next(G.parameters()).device.type == "cpu"
        with torch.no_grad():
            assert torch.equal(G(z, y), state.G_ema(z, y)), uri
            assert not torch.allclose(G(z, y), state.G(z, y)), f"{uri}: raw G published"
    D = registry_load.load_discriminator(f"models:/{name}@champion", settings=stack)
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    D1 = inputs1[0].D.eval()
    with torch.no_grad():
        assert torch.equal(D(x, y[:4]), D1(x, y[:4]))


def test_pyfunc_through_server(stack: Settings, published) -> None:
    name, ((_, inputs1, _), _) = published
    mlflow.set_tracking_uri(stack.require_mlflow())
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    z, y = _z_y(5)
    out = model.predict({"z": z.numpy(), "y": y.numpy()})
    assert out.shape == (5, 1, 28, 28) and out.dtype == np.float32
    assert -1.0 <= out.min() and out.max() <= 1.0
    with torch.no_grad():  # the portable G's fused inference form: equal up to rounding
        np.testing.assert_allclose(out, inputs1[0].G_ema(z, y).numpy(), atol=2e-6)
    assert model.metadata.get_input_schema().input_names() == ["n", "seed", "z", "y"]
    assert model.predict({"n": 3, "seed": 1, "y": [4, 4, 4]}).shape == (3, 1, 28, 28)


def test_registered_versions_load_without_the_pipeline(stack: Settings, published, tmp_path,
                                                       portable_client) -> None:
    """A conditional (the published champion) and an unconditional registered version load
    both ways (pyfunc, pytorch/pt2) in a process that cannot import `gan`, knowing only the
    MLflow URL and the stack's read-only consumer identity: no storage keys, artifacts
    through MLflow's proxy."""
    name, ((_, inputs1, _), _) = published
    cfg_u = MODEL_CFG.model_copy(update={"conditional": False})
    torch.manual_seed(3)
    G_u, D_u = build(cfg_u)
    G_u.eval()
    c = MlflowClient(stack.require_mlflow())
    mlflow.set_tracking_uri(stack.require_mlflow())
    with mlflow.start_run(experiment_id=c.get_experiment_by_name("gan-retrain").experiment_id):
        info = mm.log_bundle_model("generator", mm.write_bundle(tmp_path / "gan_generator",
                                                                cfg_u, G_u, D_u))
    uncond = f"{name}-uncond"
    c.create_registered_model(uncond)
    c.create_model_version(uncond, source=f"models:/{info.model_id}", model_id=info.model_id)
    cases = []
    for uri, G, cfg in ((f"models:/{name}@champion", inputs1[0].G_ema, MODEL_CFG),
                        (f"models:/{uncond}/1", G_u, cfg_u)):
        z, y = _z_y(5)
        z_req = torch.randn(5, cfg.latent_dim, generator=torch.Generator().manual_seed(7))
        yy = y if cfg.conditional else None
        with torch.no_grad():
            ref = {"z": z.numpy(), "x": G.eval()(z, yy).numpy(), "x_req": G(z_req, yy).numpy()}
        ref_path = tmp_path / f"ref-{len(cases)}.npz"
        np.savez(ref_path, **ref, **({"y": y.numpy()} if cfg.conditional else {}))
        cases.append({"uri": uri, "conditional": cfg.conditional, "ref": str(ref_path)})
    consumer = json.loads(stack.mlflow_consumer_file.read_text())  # the read-only identity
    results = portable_client(cases, tracking_uri=stack.require_mlflow(),
                              identity=(consumer["username"], consumer["password"]))
    assert [r["ok"] for r in results] == [True, True], results


def test_reregistering_is_idempotent(stack: Settings, published) -> None:
    name, ((run_id, inputs, ref), _) = published
    storage = Storage.from_settings(stack)
    c = MlflowClient(stack.require_mlflow())
    runs_before = c.search_runs([c.get_run(ref.mlflow_run_id).info.experiment_id],
                                max_results=1000)
    again = _register(stack, storage, name, run_id, inputs)
    assert again == ref
    runs_after = c.search_runs([c.get_run(ref.mlflow_run_id).info.experiment_id],
                               max_results=1000)
    assert len(runs_after) == len(runs_before)
    assert sorted(v.version for v in c.search_model_versions(f"name = '{name}'")) == ["1", "2"]
    assert len(c.get_metric_history(ref.mlflow_run_id, "train/loss_d")) == 2  # not re-logged
    assert len(c.get_run(ref.mlflow_run_id).inputs.dataset_inputs) == 1  # nor the dataset
    assert c.get_model_version_by_alias(name, "champion").version == "1"


def test_missing_models_give_clear_errors(stack: Settings, published) -> None:
    name, _ = published
    for uri in ("models:/no-such-model-xyz@champion", f"models:/{name}/99",
                f"models:/{name}@no-such-alias"):
        with pytest.raises(registry_load.ModelNotFoundError, match=f"model '{uri}'"):
            registry_load.load_generator(uri, settings=stack)


def test_gan_sample_cli(stack: Settings, published, gan_cli, tmp_path) -> None:
    name, _ = published
    r = gan_cli.run("sample", "--model", f"models:/{name}@champion", "--n", "23", "--seed", "3",
                    "--out", str(tmp_path / "grid.png"), "--npz", str(tmp_path / "s.npz"),
                    timeout=180)
    assert r.returncode == 0, r.stderr
    img = Image.open(tmp_path / "grid.png")
    assert img.format == "PNG" and img.size[0] > 28 * 10
    with np.load(tmp_path / "s.npz") as f:
        assert f["x"].shape == (23, 1, 28, 28) and f["x"].dtype == np.float32
        counts = np.bincount(f["y"], minlength=10)
        assert counts.sum() == 23 and counts.max() - counts.min() <= 1
        assert -1.0 <= f["x"].min() and f["x"].max() <= 1.0
    r = gan_cli.run("sample", "--model", "models:/no-such-model-xyz@champion", "--n", "4",
                    "--out", str(tmp_path / "x.png"), timeout=180)
    assert r.returncode == 1 and "no-such-model-xyz" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.png").exists()


def test_model_artifacts_live_in_the_bucket(stack: Settings, published) -> None:
    storage = Storage.from_settings(stack)
    keys = storage.list_keys(stack.s3_uri("mlflow"))
    names = {k.rsplit("/", 1)[1] for k in keys}
    assert {mm.GENERATOR_FILE, mm.DISCRIMINATOR_FILE, mm.CONFIG_FILE, "MLmodel",
            "samples.png", "report.json"} <= names
    assert not any(k.endswith((".pkl", ".pt", ".pth")) for k in keys)


def test_live_run_is_the_registered_run(stack: Settings, published, tmp_path) -> None:
    """The MLflow run opens when training starts (RUNNING, description linking Prefect),
    takes epochs and preview grids as they come, and `register` reuses it: one run, FINISHED,
    its history logged once."""
    name, _ = published
    storage = Storage.from_settings(stack)
    run_id = f"live-{uuid.uuid4().hex[:8]}"
    flow_url = f"http://127.0.0.1:1/runs/flow-run/flow-{run_id}"
    live = LiveRun.open(stack, run_id=run_id, lineage={"prefect.flow_run_url": flow_url})
    c = MlflowClient(stack.require_mlflow())
    run = c.get_run(live.mlflow_run_id)
    assert run.info.status == "RUNNING" and run.data.tags["gan.run_id"] == run_id
    assert f"[Prefect flow run]({flow_url})" in run.data.tags["mlflow.note.content"]
    inputs = _publish_inputs(storage, run_id, seed=5, fid=30.0)
    for row in inputs[1].history:
        extra = {"preview": np.zeros((64, 1, 28, 28), np.float32)} if row["epoch"] == 2 else {}
        live.log_epoch({**row, **extra})
    assert [m.step for m in c.get_metric_history(live.mlflow_run_id, "train/loss_d")] == [1, 2]
    live.finish(inputs[1])
    ref = _register(stack, storage, name, run_id, inputs)
    assert ref.mlflow_run_id == live.mlflow_run_id  # one MLflow run per run id
    run = c.get_run(live.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert len(c.get_metric_history(live.mlflow_run_id, "train/loss_d")) == 2  # not twice
    assert {a.path for a in c.list_artifacts(live.mlflow_run_id, "progress")} == {
        "progress/samples_epoch_00002.png"}


# --------------------------------------------------------------------------- redecide


DOWN = ("the registry could not be asked: MLflow tracking server http://127.0.0.1:1 "
        "unreachable after 2 attempts (Connection refused); nothing was registered")


def _second_report(storage: Storage, report: Report, fid: float, champion: ChampionScore,
                   n: int) -> Report:
    """Another evaluation of the same run, as `evaluate` writes it (`eval/<n>/`)."""
    prefix = report.report_uri.rsplit("/", 1)[0] + f"/{n}"
    again = report.model_copy(update={
        "metrics": {**report.metrics, "fid": fid}, "per_seed": {"fid": [fid] * 3},
        "champion": champion, "report_uri": f"{prefix}/report.json",
        "markdown_uri": f"{prefix}/report.md"})
    storage.put_json(again.report_uri, again.model_dump(mode="json"))
    storage.put_bytes(again.markdown_uri, b"# report 2\n", "text/markdown")
    return again


def test_a_decision_stored_while_mlflow_was_down_can_be_redecided(stack: Settings) -> None:
    storage, c = Storage.from_settings(stack), MlflowClient(stack.require_mlflow())
    name = f"gan-redecide-{uuid.uuid4().hex[:8]}"
    first = _publish_inputs(storage, f"rd-{uuid.uuid4().hex[:8]}-1", seed=1, fid=10.0)
    assert _register(stack, storage, name, first[1].run_id, first).champion  # v1

    # v2 evaluated while MLflow was down: the champion could not be asked, the gate said no.
    run_id = f"rd-{uuid.uuid4().hex[:8]}-2"
    asked = ChampionScore(version="?", comparable=False, reason=DOWN)
    state, trained, report1, dataset = _publish_inputs(storage, run_id, seed=2, fid=5.0,
                                                       champion=asked)
    ref = _register(stack, storage, name, run_id, (state, trained, report1, dataset))
    assert (ref.version, ref.champion, ref.decision.promote) == ("2", False, False)
    assert ref.decision.report_uri == report1.report_uri and ref.decision.number == 1
    assert any("champion v1 was not re-scored" in r for r in ref.decision.reasons)

    # A rerun that evaluated again (MLflow back: v1 re-scored, worse) returns the stored
    # decision, which names the report it was made on: nothing is decided on report 2.
    rescored = ChampionScore(version="1", metrics={"fid": 10.0}, per_seed={"fid": [10.0] * 3})
    report2 = _second_report(storage, report1, 4.0, rescored, n=2)
    again = _register(stack, storage, name, run_id, (state, trained, report2, dataset))
    assert again == ref and not again.champion

    # redecide: the gate is applied to report 2 under decision 2; decision 1 is kept.
    new = _register(stack, storage, name, run_id, (state, trained, report2, dataset),
                    redecide=True)
    assert (new.version, new.champion, new.decision.promote) == ("2", True, True)
    assert new.decision.number == 2 and new.decision.report_uri == report2.report_uri
    assert c.get_model_version_by_alias(name, "champion").version == "2"
    tags = c.get_model_version(name, "2").tags
    assert tags["verdict"] == "champion"
    old = GateDecision.model_validate_json(tags[f"{registry.DECISION_TAG}.1"])
    assert old == ref.decision
    card = c.get_model_version(name, "2").description
    assert f"Decision 2, re-decided (`redecide`) on report `{report2.report_uri}`; decision 1 " \
        "kept" in card and "| FID (judge features) | 4 |" in card
    decided = {a.path for a in c.list_artifacts(new.mlflow_run_id, "evaluation/decision_2")}
    assert "evaluation/decision_2/report.json" in decided
    assert registry.version_metrics(c, c.get_model_version(name, "2"))["fid"] == 4.0
    # Retried (a Prefect task retry): the same decision, no third record.
    assert _register(stack, storage, name, run_id, (state, trained, report2, dataset),
                     redecide=True) == new
    assert f"{registry.DECISION_TAG}.2" not in c.get_model_version(name, "2").tags

    # The champion itself is not re-decided (it would be compared with itself): refused.
    report3 = _second_report(storage, report1, 4.0, rescored, n=3)
    with pytest.raises(RegistryError, match=rf"v2 of {name} is @champion"):
        _register(stack, storage, name, run_id, (state, trained, report3, dataset),
                  redecide=True)


def test_moving_the_champion_by_hand_as_the_docs_say(stack: Settings, published,
                                                     tmp_path) -> None:
    """docs/runs.md's three lines (admin identity, one line of Python), run in a clean shell
    against this stack's model; then @champion is put back where the other tests expect it."""
    name, _ = published
    doc = (Path(__file__).resolve().parents[2] / "docs" / "runs.md").read_text()
    section = doc.split("## Moving `@champion` by hand", 1)[1]
    block = re.search(r"^```bash\n(.*?)^```", section, re.S | re.M)
    assert block, "docs/runs.md: no bash block under 'Moving @champion by hand'"
    script = (block[1].replace("http://127.0.0.1:5000", stack.require_mlflow())
              .replace('".gan/', f'"{stack.gan_home.resolve()}/')
              .replace('"gan-digits", "champion", "4"', f'"{name}", "champion", "2"'))
    assert f'"{name}", "champion", "2"' in script and stack.require_mlflow() in script
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    c = MlflowClient(stack.require_mlflow())
    try:
        assert r.returncode == 0, r.stderr[-1500:]
        assert c.get_model_version_by_alias(name, "champion").version == "2"
    finally:
        c.set_registered_model_alias(name, "champion", "1")
