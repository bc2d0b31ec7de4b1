"""The judge ladder (gan.eval.judge_ladder): which judge a dataset version gets and why, built
and checked before training; errors that name the `gan retrain` flag; the cache key that holds
everything shaping a judge (the reporter's bug: a 30-epoch judge reused by a default run); and
evaluation loading exactly the judge that was checked. Real judges on digits, in a local folder
or an in-memory object store."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from flows.params import RETRAIN_OPTIONS
from gan.core.config import DataConfig, EvalConfig, GateConfig
from gan.core.records import DatasetRef, GateDecision, JudgeRef, Report
from gan.core.settings import Settings
from gan.data.prepare import PreparedData, prepare_arrays
from gan.eval import metrics as M
from gan.eval.gate import gate
from gan.eval.judge import Judge, JudgeError
from gan.eval.judge_ladder import (
    CLASSIFIER,
    FLAGS,
    KINDS,
    LABEL_FREE,
    FolderFiles,
    build_judge,
    cache_key,
    cached_judge,
    judge_settings,
    load_judge,
    prepare_judge,
)
from gan.eval.report import render_markdown
from gan.eval.ssl_judge import SSLJudge
from gan.registry.model_card import model_card

# The label-free rung made cheap: 2 epochs, its retrieval and 5-NN rules off (its separation
# rule stays). Thresholds are no part of a judge's cache key (test below).
FAST_SSL = {"ssl_judge_epochs": 2, "min_ssl_retrieval": 0.0, "min_ssl_knn_accuracy": 0.0}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """One intra-op thread for this module (see conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def labelled() -> PreparedData:
    return prepare_arrays(DataConfig(limit=600))


def _unlabelled(tmp: Path, limit: int) -> PreparedData:
    """`limit` digits through the npz source with no `y`: what `--source npz` makes of them."""
    digits = prepare_arrays(DataConfig(limit=limit))
    x = torch.cat([digits.x_train, digits.x_holdout]).numpy()  # (N, 1, 28, 28) in [-1, 1]
    np.savez(tmp / "digits.npz", x=x)
    return prepare_arrays(DataConfig(source="npz", uri=str(tmp / "digits.npz")))


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory) -> PreparedData:
    return _unlabelled(tmp_path_factory.mktemp("npz"), 600)


@pytest.fixture(scope="module")
def small_unlabelled(tmp_path_factory) -> PreparedData:
    return _unlabelled(tmp_path_factory.mktemp("npz-small"), 200)


def files_in(root: Path):
    """Each judge in its own folder named like the object store's: <kind>-<key>."""
    return lambda settings: FolderFiles(root / f"{settings['kind']}-{cache_key(settings)}")


class MemoryStorage:
    """Object storage in a dict: the part of `gan.io.storage.Storage` the judge cache uses."""

    def __init__(self) -> None:
        self.settings = Settings(s3_bucket="gan")
        self.objects: dict[str, bytes] = {}

    def exists(self, uri: str) -> bool:
        return uri in self.objects

    def get_bytes(self, uri: str) -> bytes:
        return self.objects[uri]

    def put_bytes(self, uri: str, data: bytes, content_type: str | None = None) -> None:
        self.objects[uri] = data


# --------------------------------------------------------------------------- the ladder


def test_labels_and_a_good_classifier_give_the_classifier_judge(labelled, tmp_path):
    cfg = EvalConfig(judge_epochs=15, **FAST_SSL)
    judge, ref = build_judge(files_in(tmp_path), labelled, cfg)
    assert isinstance(judge, Judge) and ref.kind == CLASSIFIER
    assert ref.reason == "the data has labels" and ref.passed_over == [] and ref.labelled
    assert ref.accuracy == judge.accuracy >= 0.95 and ref.quality == judge.quality
    assert not ref.reused and ref.uri == str(tmp_path / f"classifier-{ref.key}")
    assert [p.name for p in tmp_path.iterdir()] == [f"classifier-{ref.key}"]  # no 2nd rung
    _, again = build_judge(files_in(tmp_path), labelled, cfg)
    assert again.reused and again.weights_sha256 == ref.weights_sha256


def test_labels_and_a_failing_classifier_fall_back_to_the_label_free_judge(labelled, tmp_path):
    cfg = EvalConfig(judge_epochs=1, **FAST_SSL)  # one epoch: holdout accuracy ≈ 0.15
    judge, ref = build_judge(files_in(tmp_path), labelled, cfg)
    assert isinstance(judge, SSLJudge) and ref.kind == LABEL_FREE and ref.labelled
    assert ref.reason == "the data has labels, but the classifier judge failed its check"
    (over,) = ref.passed_over
    assert over.startswith("classifier judge: ") and "holdout accuracy" in over
    assert "raise --judge-epochs (eval.judge_epochs, now 1) or lower --min-judge-accuracy " \
           "(eval.min_judge_accuracy, now 0.95)" in over
    assert "knn_accuracy" in ref.quality  # labels check it, never train it


def test_no_labels_give_the_label_free_judge(unlabelled, tmp_path):
    judge, ref = build_judge(files_in(tmp_path), unlabelled, EvalConfig(**FAST_SSL))
    assert isinstance(judge, SSLJudge) and ref.kind == LABEL_FREE and not ref.labelled
    assert ref.reason == "the data has no labels" and ref.passed_over == []
    assert "knn_accuracy" not in ref.quality and ref.accuracy == ref.quality[
        "retrieval_accuracy"]


def test_eval_judge_forces_one_rung(labelled, unlabelled, tmp_path):
    _, ref = build_judge(files_in(tmp_path), labelled, EvalConfig(judge=LABEL_FREE, **FAST_SSL))
    assert ref.kind == LABEL_FREE and ref.passed_over == []
    assert ref.reason == "eval.judge='self-supervised' (--judge) asks for it"
    with pytest.raises(JudgeError, match=r"eval.judge='classifier' needs labels; dataset "
                                         r".* has none: use --judge auto or self-supervised"):
        build_judge(files_in(tmp_path), unlabelled, EvalConfig(judge=CLASSIFIER))


def test_the_last_rung_failing_stops_naming_the_flags(labelled, unlabelled, tmp_path):
    forced = EvalConfig(judge=CLASSIFIER, judge_epochs=1)
    with pytest.raises(JudgeError) as e:
        build_judge(files_in(tmp_path), labelled, forced)
    msg = str(e.value)
    assert "passes its check, so no generator trained on it could be scored; nothing was " \
           "trained" in msg
    assert "raise --judge-epochs (eval.judge_epochs, now 1) or lower --min-judge-accuracy " \
           "(eval.min_judge_accuracy, now 0.95)" in msg
    # Both rungs of the ladder fail: each is named, with its own flags.
    both = EvalConfig(judge_epochs=1, ssl_judge_epochs=2, min_ssl_knn_accuracy=1.0)
    with pytest.raises(JudgeError) as e:
        build_judge(files_in(tmp_path), labelled, both)
    msg = str(e.value)
    assert "classifier judge: " in msg and "self-supervised judge: " in msg
    assert "raise --ssl-judge-epochs (eval.ssl_judge_epochs, now 2), or lower " \
           "--min-ssl-retrieval (eval.min_ssl_retrieval, now 0.3) or --min-ssl-knn-accuracy " \
           "(eval.min_ssl_knn_accuracy, now 1.0)" in msg
    # Without labels the label-free judge is the last rung.
    with pytest.raises(JudgeError, match=r"--min-ssl-retrieval \(eval.min_ssl_retrieval, "
                                         r"now 1.0\)"):
        build_judge(files_in(tmp_path), unlabelled, EvalConfig(ssl_judge_epochs=2,
                                                                  min_ssl_retrieval=1.0))


def test_too_small_a_holdout_is_refused_before_any_judge(labelled, tmp_path):
    tiny = dataclasses.replace(labelled, x_holdout=labelled.x_holdout[:5],
                               y_holdout=labelled.y_holdout[:5])
    with pytest.raises(JudgeError, match=r"5 holdout images; .* at least 10: bring more "
                                         r"images, or raise --holdout-fraction"):
        build_judge(files_in(tmp_path), tiny, EvalConfig())
    assert list(tmp_path.iterdir()) == []


def test_every_flag_a_judge_error_names_is_a_gan_retrain_flag():
    fields = {o.flags: o.field for o in RETRAIN_OPTIONS}
    for field, flag in FLAGS.items():
        assert fields.get(flag) == field, (flag, field)


# --------------------------------------------------------------------------- the cache key


def test_cache_key_holds_everything_that_shapes_the_judge(labelled, monkeypatch):
    def key(kind: str = LABEL_FREE, data: PreparedData = labelled, **cfg) -> str:
        return cache_key(judge_settings(kind, data, EvalConfig(**cfg)))

    base = key()
    assert key() == base and len(base) == 12
    rgb = dataclasses.replace(labelled, x_train=labelled.x_train.repeat(1, 3, 1, 1))
    other_version = dataclasses.replace(labelled, version="0" * 16)
    shaping = {"30 epochs": key(ssl_judge_epochs=30), "the other kind": key(CLASSIFIER),
               "3 channels (arch)": key(data=rgb), "another dataset version":
               key(data=other_version),
               "another seed": cache_key(judge_settings(LABEL_FREE, labelled, EvalConfig(),
                                                        seed=1))}
    assert base not in shaping.values() and len(set(shaping.values())) == len(shaping)
    # What only checks a judge, or belongs to the other kind, or to the evaluation: not in it.
    for cfg in ({"min_ssl_retrieval": 0.9}, {"min_ssl_knn_accuracy": 0.1},
                {"min_judge_accuracy": 0.5}, {"judge_epochs": 3}, {"n_samples": 500},
                {"seed": 7}, {"judge": LABEL_FREE}):
        assert key(**cfg) == base, cfg
    assert key(CLASSIFIER, ssl_judge_epochs=30) == key(CLASSIFIER)
    assert key(CLASSIFIER, judge_epochs=30) != key(CLASSIFIER)
    # The judge's code changed (its format version bumped): old caches are not reused.
    monkeypatch.setitem(KINDS, LABEL_FREE, dataclasses.replace(KINDS[LABEL_FREE],
                                                               fmt=KINDS[LABEL_FREE].fmt + 1))
    assert key() != base


def test_a_new_judge_setting_enters_the_key_by_its_name_alone(labelled):
    class Later(EvalConfig):  # a field a later change adds
        ssl_judge_temperature: float = 0.5

    settings = judge_settings(LABEL_FREE, labelled, Later())
    assert settings["ssl_judge_temperature"] == 0.5
    assert cache_key(settings) != cache_key(judge_settings(LABEL_FREE, labelled,
                                                           Later(ssl_judge_temperature=0.2)))
    assert "ssl_judge_temperature" not in judge_settings(CLASSIFIER, labelled, Later())


def test_a_30_epoch_judge_is_not_reused_by_a_default_run(small_unlabelled):
    """The reporter's bug: one run trained the label-free judge with 30 epochs, a later run with
    the default settings on the same images reused it (identical FID 5.982)."""
    storage = MemoryStorage()
    relaxed = {"min_ssl_retrieval": 0.0, "min_ssl_knn_accuracy": 0.0}  # not in the key
    long = prepare_judge(storage, small_unlabelled, EvalConfig(ssl_judge_epochs=30, **relaxed))
    default = prepare_judge(storage, small_unlabelled, EvalConfig(**relaxed))
    assert not long.reused and not default.reused
    assert default.settings["ssl_judge_epochs"] == EvalConfig().ssl_judge_epochs != 30
    assert default.uri != long.uri and default.weights_sha256 != long.weights_sha256
    prefix = f"s3://gan/judges/{small_unlabelled.version}/self-supervised-"
    assert long.uri == prefix + long.key and default.uri == prefix + default.key
    # Each is reused by a run with its own settings, and they score the same images apart.
    again = prepare_judge(storage, small_unlabelled, EvalConfig(ssl_judge_epochs=30, **relaxed))
    assert again.reused and again.uri == long.uri and again.weights_sha256 == long.weights_sha256
    fake = small_unlabelled.x_train[:40].flip(-1)  # (40, 1, 28, 28) mirrored digits
    fids = [M.fid(load_judge(storage, r).feature_module(), small_unlabelled.x_holdout, fake)
            for r in (long, default)]
    assert fids[0] != pytest.approx(fids[1], rel=1e-3), fids


def test_evaluation_loads_exactly_the_checked_judge(small_unlabelled):
    storage = MemoryStorage()
    cfg = EvalConfig(**FAST_SSL)
    ref = prepare_judge(storage, small_unlabelled, cfg)
    n_objects = len(storage.objects)
    judge = load_judge(storage, ref)
    assert judge.meta["weights_sha256"] == ref.weights_sha256 and judge.quality == ref.quality
    assert len(storage.objects) == n_objects  # nothing trained or written
    meta_uri = f"{ref.uri}/ssl_judge.json"
    other = storage.objects[meta_uri].replace(ref.weights_sha256.encode(), b"0" * 64)
    storage.objects[meta_uri] = other
    with pytest.raises(JudgeError, match="is not the one checked before training"):
        load_judge(storage, ref)
    storage.objects.clear()
    with pytest.raises(JudgeError, match="is gone: run the flow again"):
        load_judge(storage, ref)


def test_a_torn_cache_is_retrained_to_the_same_judge(small_unlabelled, tmp_path):
    cfg = EvalConfig(**FAST_SSL)
    files = FolderFiles(tmp_path)
    first, reused = cached_judge(files, LABEL_FREE, small_unlabelled, cfg)
    assert not reused
    (tmp_path / "ssl_judge.safetensors").write_bytes(b"not safetensors")
    healed, reused = cached_judge(files, LABEL_FREE, small_unlabelled, cfg)
    assert not reused and healed.meta["weights_sha256"] == first.meta["weights_sha256"]
    assert cached_judge(files, LABEL_FREE, small_unlabelled, cfg)[1] is True


# --------------------------------------------------------------------------- where it shows


def _fallback_ref() -> JudgeRef:
    return JudgeRef(kind=LABEL_FREE, uri="s3://gan/judges/v/self-supervised-abc", key="abc",
                    settings={}, dataset_version="v", labelled=True, accuracy=0.91,
                    quality={"knn_accuracy": 0.91}, weights_sha256="0" * 64,
                    reason="the data has labels, but the classifier judge failed its check",
                    passed_over=["classifier judge: holdout accuracy 0.7250 (raise "
                                 "--judge-epochs ...)"], reused=False)


def test_report_gate_and_model_card_say_which_judge_and_why():
    ref = _fallback_ref()
    report = Report(run_id="r", dataset_version="v", metrics={"fid": 3.0, "recall": 0.5,
                                                               "copy_ct": 0.2,
                                                               "copy_distance_ratio": 1.0},
                    floors={"fid": 1.0, "recall": 0.6}, ceilings={}, class_hist=[],
                    classes_covered=0, judge_accuracy=0.91, n_samples=1000,
                    report_uri="s3://b/r.json", markdown_uri="s3://b/r.md",
                    judge=LABEL_FREE, judge_quality=ref.quality, judge_ref=ref)
    md = render_markdown(report)
    assert ("- why this judge: the data has labels, but the classifier judge failed its check; "
            "trained for this dataset version (`s3://gan/judges/v/self-supervised-abc`)") in md
    assert "- judge passed over: classifier judge: holdout accuracy 0.7250" in md
    d = gate(report, None, GateConfig())
    assert ("PASS: the self-supervised judge has no classes: class coverage and class KL not "
            "judged (metrics in the self-supervised judge's feature space); judge trained for "
            "this dataset version: the data has labels, but the classifier judge failed its "
            "check") in d.reasons
    dataset = DatasetRef(name="digits", version="v", uri="s3://gan/datasets/digits/v/",
                         source="digits", n_train=480, n_holdout=120, num_classes=10,
                         image_size=28)
    card = model_card(name="m", version="1", report=report, dataset=dataset, params={},
                      decision=GateDecision(promote=True, reasons=d.reasons), run_id="r")
    assert "chosen because the data has labels, but the classifier judge failed its check; " \
           "trained for this dataset version; passed over: classifier judge" in card
    assert "classes covered" not in card.split("## Gate")[0]  # no classes: no class row
