"""Evaluation against the real local stack: the judge is built once per dataset version and
settings (`prepare_judge`) and reused from S3, evaluation loads exactly that judge; report.json/md
and the PNGs land under runs/<run_id>/eval/."""

from __future__ import annotations

import io
import uuid

import pytest
import torch
from PIL import Image

from gan.core.config import DataConfig, EvalConfig, GateConfig, ModelConfig, TrainConfig
from gan.core.records import DatasetRef, JudgeRef, Report, TrainedRef
from gan.data.prepare import load_prepared, prepare
from gan.eval.evaluate import Champion, evaluate, gate
from gan.eval.inception import InceptionError, load_inception
from gan.eval.judge import judge_prefix
from gan.eval.judge_ladder import prepare_judge
from gan.io.storage import Storage
from gan.nets.inception import FIDInceptionV3
from gan.train.checkpoint import generator_from_checkpoint, load_checkpoint, save_checkpoint
from gan.train.loop import train_local
from gan.train.state import make_state

pytestmark = pytest.mark.integration

# An unusual split seed gives a dataset version no other test uses, so the judge cache starts
# empty here whatever ran before in the session.
DATA = DataConfig(split_seed=9173)
MODEL = ModelConfig(arch="mlp", g_hidden=(32, 64), d_hidden=(64, 32), latent_dim=16)
TRAIN = TrainConfig(epochs=1, batch_size=64, loss="bce", ema_decay=0.0)


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def trained_run(storage: Storage, dataset: DatasetRef) -> TrainedRef:
    """A real (tiny, one-epoch) training run whose checkpoint is stored in S3."""
    data = load_prepared(storage, dataset)
    state = train_local(data, MODEL, TRAIN)
    run_id = f"evaltest-{uuid.uuid4().hex[:8]}"
    uri = storage.settings.s3_uri("runs", run_id, "checkpoint.pt")
    storage.put_bytes(uri, save_checkpoint(state, dataset_version=dataset.version))
    return TrainedRef(run_id=run_id, checkpoint_uri=uri, dataset_version=dataset.version,
                      model_cfg=MODEL.model_dump(), train_cfg=TRAIN.model_dump(),
                      epochs_completed=state.epoch, global_step=state.step,
                      history=state.history)


def head(storage: Storage, uri: str) -> tuple[str, object]:
    bucket, key = uri[5:].split("/", 1)
    h = storage.client.head_object(Bucket=bucket, Key=key)
    return h["ETag"], h["LastModified"]


def test_judge_trained_once_and_report_written(storage: Storage):
    storage.ensure_bucket()
    dataset = prepare(DATA, storage)
    storage.delete_prefix(judge_prefix(storage, dataset.version) + "/")
    cfg = EvalConfig()
    ref = prepare_judge(storage, dataset, cfg)
    assert not ref.reused and ref.kind == "classifier"
    first = trained_run(storage, dataset)

    report = evaluate(storage, dataset, first, cfg, judge_ref=ref)

    # The judge and the floors are cached under judges/<version>/classifier-<key>/.
    prefix = ref.uri
    assert prefix == f"{judge_prefix(storage, dataset.version)}/classifier-{ref.key}"
    keys = storage.list_keys(prefix + "/")
    assert f"{prefix}/judge.safetensors" in keys and f"{prefix}/judge.json" in keys
    assert any("/floors/" in k for k in keys)
    meta = storage.get_json(f"{prefix}/judge.json")
    assert meta["holdout_accuracy"] == report.judge_accuracy == ref.accuracy >= 0.95
    assert meta["dataset_version"] == dataset.version and meta["seed"] == 0
    assert meta["cache_key"] == ref.settings and report.judge_ref == ref
    print(f"\njudge accuracy {report.judge_accuracy:.4f}, trained in {meta['train_seconds']} s")
    before = {k: head(storage, k) for k in keys}

    # Everything the run's evaluation writes lies under runs/<run_id>/eval/.
    eval_prefix = storage.settings.s3_uri("runs", first.run_id, "eval")
    assert set(storage.list_keys(eval_prefix + "/")) == {
        f"{eval_prefix}/{name}" for name in
        ("report.json", "report.md", "samples.png", "real_vs_generated.png", "curves.png")}
    assert report.report_uri == f"{eval_prefix}/report.json"
    stored = Report.model_validate(storage.get_json(report.report_uri))
    assert stored == report.model_copy(update={"markdown": ""})
    md = storage.get_bytes(report.markdown_uri).decode()
    assert md == report.markdown and "| FID ↓ |" in md and first.run_id in md
    for name, uri in report.artifacts.items():
        img = Image.open(io.BytesIO(storage.get_bytes(uri)))
        img.load()
        assert img.format == "PNG", name
    assert Image.open(io.BytesIO(storage.get_bytes(report.artifacts["samples"]))).size == (604,
                                                                                          604)

    # A second run on the same dataset version reuses the judge and floors: nothing rewritten,
    # and the judge loaded from S3 scores the same checkpoint exactly as the fresh one did.
    second = first.model_copy(update={"run_id": first.run_id + "-again"})
    again_ref = prepare_judge(storage, dataset, cfg)
    assert again_ref.reused and again_ref.weights_sha256 == ref.weights_sha256
    again = evaluate(storage, dataset, second, cfg, judge_ref=again_ref)
    assert {k: head(storage, k) for k in storage.list_keys(prefix + "/")} == before
    assert again.metrics == report.metrics and again.floors == report.floors


def test_data_change_rescores_the_champion_in_the_report(storage: Storage):
    """The champion was trained on another dataset version; the candidate's evaluation scores
    it under the candidate's judge, holdout and seeds, and both columns land in the report.
    A champion of another image size is reported as not comparable, and the gate says so."""
    storage.ensure_bucket()
    old_data = prepare(DataConfig(split_seed=9174, limit=400), storage)  # the "before" data
    dataset = prepare(DATA, storage)
    assert old_data.version != dataset.version
    old_run = trained_run(storage, old_data)
    champion_g = generator_from_checkpoint(load_checkpoint(storage.get_bytes(
        old_run.checkpoint_uri)), use_ema=True)
    candidate = trained_run(storage, dataset)
    cfg = EvalConfig(n_samples=200)
    ref = prepare_judge(storage, dataset, cfg)

    report = evaluate(storage, dataset, candidate, cfg, judge_ref=ref,
                      champion=Champion("1", champion_g))

    score = report.champion
    assert score is not None and score.version == "1" and score.comparable
    assert len(score.per_seed["fid"]) == len(report.per_seed["fid"]) == cfg.n_seeds
    assert score.metrics["fid"] > 0 and report.spread["fid"] > 0
    stored = Report.model_validate(storage.get_json(report.report_uri))
    assert stored.champion == score  # both sets of numbers in report.json ...
    md = storage.get_bytes(report.markdown_uri).decode()
    assert "champion v1 (re-scored)" in md and " ± " in md  # ... and in report.md
    print("\n" + md)

    small = make_state(MODEL.model_copy(update={"image_size": 16}), TRAIN).generator
    other = evaluate(storage, dataset, candidate.model_copy(update={"run_id": "evaltest-16px"}),
                     cfg, judge_ref=ref, champion=Champion("2", small))
    assert other.champion is not None and not other.champion.comparable
    assert "(1, 16, 16)" in other.champion.reason
    decision = gate(other, None, GateConfig(require_all_classes=False, max_class_kl=100.0,
                                            min_recall_ratio=0.0, min_copy_ct=None,
                                            min_copy_distance_ratio=0.0),
                    champion_version="2")
    assert not decision.promote
    assert decision.reasons[-1].startswith("FAIL: champion v2 cannot be scored on this data")


def test_evaluating_a_run_again_never_overwrites_its_report(storage: Storage):
    """Issue 23, item 8: a report is written once. Evaluating the same run again (a rerun of
    its run id, `redecide`) writes the next numbered report beside it (`eval/2/`), so the
    report a decision was made on stays as it was."""
    storage.ensure_bucket()
    dataset = prepare(DATA, storage)
    run = trained_run(storage, dataset)
    cfg = EvalConfig(n_samples=200)
    ref = prepare_judge(storage, dataset, cfg)  # the data step's judge, as the flow passes it
    first = evaluate(storage, dataset, run, cfg, judge_ref=ref)
    etag = head(storage, first.report_uri)
    second = evaluate(storage, dataset, run, cfg, judge_ref=ref,
                      champion=Champion("7", None, problem="not loaded here"))
    prefix = storage.settings.s3_uri("runs", run.run_id, "eval")
    assert first.report_uri == f"{prefix}/report.json"
    assert second.report_uri == f"{prefix}/2/report.json"
    assert set(second.artifacts.values()) == {f"{prefix}/2/{f}" for f in (
        "samples.png", "real_vs_generated.png", "curves.png")}
    assert head(storage, first.report_uri) == etag  # untouched
    assert Report.model_validate(storage.get_json(first.report_uri)).champion is None
    assert Report.model_validate(storage.get_json(second.report_uri)).champion is not None
    assert evaluate(storage, dataset, run, cfg,
                    judge_ref=ref).report_uri == f"{prefix}/3/report.json"


def test_dataset_version_mismatch_is_refused(storage: Storage):
    dataset = prepare(DATA, storage)
    ref = prepare_judge(storage, dataset, EvalConfig())
    trained = TrainedRef(run_id="mismatch", checkpoint_uri=storage.settings.s3_uri("none.pt"),
                         dataset_version="0000000000000000", model_cfg={}, train_cfg={},
                         epochs_completed=0, global_step=0)
    with pytest.raises(ValueError, match="trained on dataset version '0000000000000000'"):
        evaluate(storage, dataset, trained, EvalConfig(), judge_ref=ref)
    right = trained.model_copy(update={"dataset_version": dataset.version})
    other = ref.model_copy(update={"dataset_version": "1111111111111111"})
    with pytest.raises(ValueError, match="judged by a judge of dataset version '1111"):
        evaluate(storage, dataset, right, EvalConfig(), judge_ref=other)


def test_inception_weights_load_from_s3_and_a_missing_file_stops_evaluation_first(
        storage: Storage):
    """The standard FID's weight file through the project's storage: a random network of the
    FID Inception-v3 architecture uploaded to S3 loads by name and gives 2048-d features; a
    missing object stops `evaluate` before it reads anything else, naming the URI and knob."""
    storage.ensure_bucket()
    torch.manual_seed(0)
    net = FIDInceptionV3().eval()
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    uri = storage.settings.s3_uri("weights", f"inception-{uuid.uuid4().hex[:8]}.pth")
    storage.put_bytes(uri, buf.getvalue())

    inception = load_inception(uri, storage)
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        f, want = inception.net(x), net(x)
    assert f.shape == (2, 2048) and (f - want).abs().max() <= 1e-3 * want.abs().max()
    assert inception.describe()["uri"] == uri and not inception.standard

    missing = uri.replace(".pth", "-missing.pth")
    dataset = DatasetRef(name="none", version="0" * 16, uri="s3://nowhere/", source="none",
                         n_train=0, n_holdout=0, num_classes=1, image_size=28)
    trained = TrainedRef(run_id="inception-missing", checkpoint_uri="s3://nowhere/ckpt.pt",
                         dataset_version=dataset.version, model_cfg={}, train_cfg={},
                         epochs_completed=0, global_step=0)
    with pytest.raises(InceptionError) as e:  # before the (absent) dataset is read
        evaluate(storage, dataset, trained, EvalConfig(inception_weights=missing),
                 judge_ref=JudgeRef(kind="classifier", uri="s3://nowhere/judge", key="0",
                                    settings={}, dataset_version=dataset.version,
                                    labelled=True, accuracy=1.0, weights_sha256="0",
                                    reason="test", reused=True))
    assert missing in str(e.value) and "eval.inception_weights" in str(e.value)
