"""The judge classifier: accuracy on digits, the accuracy check, determinism, (de)serialisation."""

from __future__ import annotations

import dataclasses
import time

import pytest
import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from gan.core.config import DataConfig, EvalConfig
from gan.data.prepare import PreparedData, prepare_arrays
from gan.eval.judge import (
    Judge,
    JudgeError,
    check_judge,
    judge_from_bytes,
    judge_to_bytes,
    train_judge,
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """One intra-op thread for this module (see conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def digits() -> PreparedData:
    return prepare_arrays(DataConfig())


@pytest.fixture(scope="module")
def small() -> PreparedData:
    return prepare_arrays(DataConfig(limit=300))


@pytest.fixture(scope="module")
def judge(digits: PreparedData) -> Judge:
    start = time.perf_counter()
    j = train_judge(digits, EvalConfig().judge_epochs, seed=0)
    print(f"\ndigits judge: holdout accuracy {j.accuracy:.4f} after {j.epochs} epochs, "
          f"{time.perf_counter() - start:.1f} s")
    return j


def test_judge_reaches_threshold_on_digits(judge: Judge, digits: PreparedData):
    cfg = EvalConfig()
    assert judge.accuracy >= cfg.min_judge_accuracy == 0.95
    check_judge(judge, cfg.min_judge_accuracy)  # does not raise
    # The reported accuracy is the holdout accuracy, recomputed here independently.
    pred = judge.net(digits.x_holdout).argmax(1)
    assert judge.accuracy == pytest.approx(float((pred == digits.y_holdout).float().mean()))


def test_judge_trained_on_shuffled_labels_fails_the_check(small: PreparedData):
    perm = torch.randperm(len(small.y_train), generator=torch.Generator().manual_seed(0))
    shuffled = dataclasses.replace(small, y_train=small.y_train[perm])
    cfg = EvalConfig(judge_epochs=3)
    bad = train_judge(shuffled, cfg.judge_epochs, seed=0)
    assert bad.accuracy < 0.5
    with pytest.raises(JudgeError, match=rf"accuracy {bad.accuracy:.4f}.*min_judge_accuracy=0.95"):
        check_judge(bad, cfg.min_judge_accuracy)


def test_training_is_deterministic_for_a_seed_and_leaves_global_rng_alone(small: PreparedData):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b = train_judge(small, 2, seed=5), train_judge(small, 2, seed=5)
    c = train_judge(small, 2, seed=6)
    assert torch.equal(torch.get_rng_state(), before)
    sa, sb, sc = (j.net.state_dict() for j in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.accuracy == b.accuracy
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_features_are_scaled_to_unit_mean_square_on_train(judge: Judge, digits: PreparedData):
    f = judge.features(digits.x_train)
    assert f.shape == (len(digits.x_train), judge.net.arch.feature_dim)
    assert float(f.square().mean()) == pytest.approx(1.0, rel=1e-4)
    assert (f >= 0).all()  # post-ReLU


def test_feature_module_plugs_into_torchmetrics_fid(judge: Judge, digits: PreparedData):
    fid = FrechetInceptionDistance(feature=judge.feature_module())
    x = digits.x_holdout
    fid.update(x, real=True)
    fid.update(x, real=False)
    assert abs(float(fid.compute())) < 1e-3  # a set against itself


def test_bytes_round_trip_and_tamper_detection(judge: Judge, digits: PreparedData):
    weights, meta = judge_to_bytes(judge)
    assert meta["holdout_accuracy"] == judge.accuracy and meta["seed"] == 0
    assert meta["arch"] == {"channels": 1, "image_size": 28, "num_classes": 10, "width": 16,
                            "feature_dim": 64}
    back = judge_from_bytes(weights, meta)
    x = digits.x_holdout[:50]
    assert torch.equal(back.features(x), judge.features(x))
    assert back.accuracy == judge.accuracy
    tampered = bytearray(weights)
    tampered[-1] ^= 1
    with pytest.raises(JudgeError, match="weights_sha256"):
        judge_from_bytes(bytes(tampered), meta)


def test_unlabelled_or_bad_labels_are_refused(small: PreparedData):
    with pytest.raises(ValueError, match="num_classes=1"):
        train_judge(dataclasses.replace(small, num_classes=1), 1)
    bad = small.y_holdout.clone()
    bad[0] = 10
    with pytest.raises(ValueError, match=r"holdout labels outside \[0, 10\)"):
        train_judge(dataclasses.replace(small, y_holdout=bad), 1)
