"""Evaluation against the real local stack: the judge is trained once per dataset version and
reused from S3; report.json/md and the PNGs land under runs/<run_id>/eval/."""

from __future__ import annotations

import dataclasses
import io
import uuid

import pytest
import torch
from PIL import Image

from gan.core.config import DataConfig, EvalConfig, GateConfig, ModelConfig, TrainConfig
from gan.core.records import DatasetRef, Report, TrainedRef
from gan.data.prepare import load_prepared, prepare
from gan.eval.evaluate import Champion, evaluate, gate, get_or_train_judge
from gan.eval.judge import JudgeError, judge_prefix, judge_to_bytes, train_judge
from gan.io.storage import Storage
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
    prefix = judge_prefix(storage, dataset.version)
    storage.delete_prefix(prefix + "/")
    cfg = EvalConfig()
    first = trained_run(storage, dataset)

    report = evaluate(storage, dataset, first, cfg)

    # The judge and the floors are cached under judges/<version>/, JSON written.
    keys = storage.list_keys(prefix + "/")
    assert f"{prefix}/judge.safetensors" in keys and f"{prefix}/judge.json" in keys
    assert any("/floors/" in k for k in keys)
    meta = storage.get_json(f"{prefix}/judge.json")
    assert meta["holdout_accuracy"] == report.judge_accuracy >= 0.95
    assert meta["dataset_version"] == dataset.version and meta["seed"] == 0
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
    again = evaluate(storage, dataset, second, cfg)
    assert {k: head(storage, k) for k in storage.list_keys(prefix + "/")} == before
    assert again.metrics == report.metrics and again.floors == report.floors
    judge = get_or_train_judge(storage, load_prepared(storage, dataset), cfg)
    assert judge.meta["reused"] is True and judge.accuracy == report.judge_accuracy


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

    report = evaluate(storage, dataset, candidate, cfg, champion=Champion("1", champion_g))

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
                     cfg, champion=Champion("2", small))
    assert other.champion is not None and not other.champion.comparable
    assert "(1, 16, 16)" in other.champion.reason
    decision = gate(other, None, GateConfig(require_all_classes=False, max_class_kl=100.0,
                                            min_recall_ratio=0.0, min_copy_ct=None,
                                            min_copy_distance_ratio=0.0),
                    champion_version="2")
    assert not decision.promote
    assert decision.reasons[-1].startswith("FAIL: champion v2 cannot be scored on this data")


def test_dataset_version_mismatch_is_refused(storage: Storage):
    dataset = prepare(DATA, storage)
    trained = TrainedRef(run_id="mismatch", checkpoint_uri=storage.settings.s3_uri("none.pt"),
                         dataset_version="0000000000000000", model_cfg={}, train_cfg={},
                         epochs_completed=0, global_step=0)
    with pytest.raises(ValueError, match="trained on dataset version '0000000000000000'"):
        evaluate(storage, dataset, trained, EvalConfig())


def test_weak_or_corrupt_cached_judge_is_replaced(storage: Storage):
    storage.ensure_bucket()
    dataset = prepare(DataConfig(split_seed=9174), storage)
    data = load_prepared(storage, dataset)
    prefix = judge_prefix(storage, dataset.version)
    storage.delete_prefix(prefix + "/")
    # What a careless earlier run could leave: a 1-epoch judge that fails the accuracy check.
    perm = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(0))
    weak = train_judge(dataclasses.replace(data, y_train=data.y_train[perm]),
                       1)
    weights, meta = judge_to_bytes(weak)
    storage.put_bytes(f"{prefix}/judge.safetensors", weights)
    storage.put_json(f"{prefix}/judge.json", meta)

    # Asked for no more training than it had: the data is at fault, so it fails loudly.
    with pytest.raises(JudgeError, match=f"accuracy {weak.accuracy:.4f}"):
        get_or_train_judge(storage, data, EvalConfig(judge_epochs=1))
    # Asked for more: it is replaced by a judge trained as asked.
    cfg = EvalConfig(judge_epochs=8)
    good = get_or_train_judge(storage, data, cfg)
    assert good.meta["reused"] is False and "retraining with 8 epochs" in good.meta[
        "trained_because"]
    stored = storage.get_json(f"{prefix}/judge.json")
    assert stored["epochs"] == 8 and stored["holdout_accuracy"] == good.accuracy >= 0.95

    # Corrupt weights are not trusted: the judge is retrained, bit for bit the same.
    storage.put_bytes(f"{prefix}/judge.safetensors", b"not safetensors")
    healed = get_or_train_judge(storage, data, cfg)
    assert healed.meta["reused"] is False and "weights_sha256" in healed.meta["trained_because"]
    assert storage.get_json(f"{prefix}/judge.json")["weights_sha256"] == stored["weights_sha256"]
    assert get_or_train_judge(storage, data, cfg).meta["reused"] is True
