"""The class rules relative to the real data (issue 22): the real held-out images, scored under
the same judge as if they were samples, give the real data's own class KL and classes covered
(the judge's error), and the gate compares the generator with them. Under a judge that is less
than perfect, a generator that returns real held-out images passes the class rules: the real
data passes its own gate. On the bundled digits."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from gan.core.config import DataConfig, EvalConfig, GateConfig
from gan.core.records import Report
from gan.data.prepare import PreparedData, prepare_arrays
from gan.eval import metrics as M
from gan.eval.evaluate import compute_floors, evaluate_generator
from gan.eval.gate import gate
from gan.eval.judge import Judge, holdout_accuracy, train_judge

CFG = EvalConfig(min_judge_accuracy=0.0, n_samples=400, n_seeds=2)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """One intra-op thread for this module (see conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def digits() -> PreparedData:
    return prepare_arrays(DataConfig())  # 1437 train, 360 holdout


@pytest.fixture(scope="module")
def judge(digits: PreparedData) -> Judge:
    return train_judge(digits, 6, seed=0)  # holdout accuracy ≈ 0.98


def confusing(judge: Judge, data: PreparedData, shift: float) -> Judge:
    """The judge with class 1's logit lowered by `shift`: it reads many 1s as other digits, the
    concentrated kind of error a judge makes (errors spread evenly barely move class KL)."""
    worse = copy.deepcopy(judge)
    with torch.no_grad():
        worse.net.head[1].bias[1] -= shift
    worse.accuracy = holdout_accuracy(worse, data)
    return worse


class HeldOut(nn.Module):
    """A 'generator' that returns real held-out images (z's first coordinate picks one)."""

    conditional = False

    def __init__(self, images: Tensor) -> None:
        super().__init__()
        self.latent_dim, self.images = 8, images.float()

    def forward(self, z: Tensor) -> Tensor:
        u = torch.special.ndtr(z[:, 0])  # (B,) uniform in (0, 1)
        return self.images[(u * len(self.images)).long().clamp(max=len(self.images) - 1)]


def report_of(result: dict) -> Report:
    return Report(run_id="t", dataset_version="v", report_uri="s3://b/r.json",
                  markdown_uri="s3://b/r.md", **result)


def class_lines(reasons: list[str]) -> list[str]:
    return [r for r in reasons if r.split(": ", 1)[1].startswith("class")]


def test_class_floors_come_from_the_holdout_the_judge_never_saw(judge, digits):
    """On its own training images the judge errs less than on the holdout: train images would
    hide most of its error from the class floors."""
    fl = compute_floors(judge, digits, CFG)["floors"]
    p_real = M.class_shares(digits.y_train, digits.num_classes)
    held = M.class_stats(judge.predict(digits.x_holdout), p_real, CFG.class_share_threshold)
    train = M.class_stats(judge.predict(digits.x_train), p_real, CFG.class_share_threshold)
    assert fl["class_kl"] == held["class_kl"] and fl["classes_covered"] == held[
        "classes_covered"]
    print(f"\nclass KL of real images under the judge: holdout {held['class_kl']:.4g}, train "
          f"{train['class_kl']:.4g}")
    assert held["class_kl"] > 2 * train["class_kl"]


@pytest.mark.parametrize("shift, gate_cfg", [
    (0.0, GateConfig()),  # the judge as trained, the default rules
    # a judge that misreads most 1s (accuracy 0.90, class 1's share 0.011 of the holdout):
    # its class rules are applied (min_class_judge_accuracy lowered to include it)
    (5.0, GateConfig(min_class_judge_accuracy=0.85)),
])
def test_real_held_out_images_pass_their_own_class_rules(judge, digits, shift, gate_cfg):
    j = confusing(judge, digits, shift) if shift else judge
    result, _ = evaluate_generator(HeldOut(digits.x_holdout), digits, j, CFG)
    m, fl = result["metrics"], result["floors"]
    print(f"\nshift {shift}: judge accuracy {j.accuracy:.4f}; real held-out class KL "
          f"{fl['class_kl']:.4g}, covered {fl['classes_covered']:.0f}; as samples: KL "
          f"{m['class_kl']:.4g}, covered {result['classes_covered']}")
    assert j.accuracy < 1.0 and j.accuracy >= gate_cfg.min_class_judge_accuracy
    d = gate(report_of(result), None, gate_cfg)
    lines = class_lines(d.reasons)
    assert len(lines) == 2 and all(r.startswith("PASS: class") for r in lines), d.reasons
    if shift:  # the judge's own error alone breaks the absolute rules the gate used to apply
        assert m["class_kl"] > gate_cfg.max_class_kl and result["classes_covered"] < 10
        # A generator that draws no 7s at all is still refused under the same judge.
        no_sevens = digits.x_holdout[digits.y_holdout != 7]
        dropped, _ = evaluate_generator(HeldOut(no_sevens), digits, j, CFG)
        assert [r.startswith("FAIL") for r in class_lines(
            gate(report_of(dropped), None, gate_cfg).reasons)] == [True, True]
