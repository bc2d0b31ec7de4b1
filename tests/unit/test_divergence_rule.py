"""The gate's divergence rule can fail: training raises on the divergences its guard sees, so
before this rule read `TrainedRef.diverged` only and always passed; the evaluation now looks
for the evidence itself (non-finite generator weights, a saturated last epoch)."""

from __future__ import annotations

import math

import torch
from torch import nn

from gan.core.config import GateConfig
from gan.core.records import Report
from gan.eval.evaluate import divergence_evidence, gate

HEALTHY = [{"epoch": 1, "d_real": 0.7, "d_fake": 0.3}, {"epoch": 2, "d_real": 0.6, "d_fake": 0.4}]
SATURATED = [*HEALTHY[:1], {"epoch": 2, "d_real": 0.999, "d_fake": 0.0005}]


def report(why: str | None) -> Report:
    return Report(run_id="r", dataset_version="v", report_uri="s3://b/r.json",
                  markdown_uri="s3://b/r.md", n_samples=100, classes_covered=10,
                  class_hist=[0.1] * 10, judge_accuracy=0.99, floors={"recall": 0.8},
                  ceilings={}, diverged=why is not None, divergence_reason=why,
                  metrics={"fid": 1.0, "class_kl": 0.0, "recall": 0.8, "copy_ct": 0.0,
                           "copy_distance_ratio": 1.0})


def test_healthy_generator_and_history_are_not_diverged():
    g = nn.Linear(4, 4)
    assert divergence_evidence(g, HEALTHY, {"loss": "hinge"}) is None
    assert divergence_evidence(g, [], {"loss": "hinge"}) is None
    # WGAN-GP's critic is unbounded: its σ outputs say nothing about saturation
    assert divergence_evidence(g, SATURATED, {"loss": "wgan-gp"}) is None
    d = gate(report(None), None, GateConfig())
    assert d.promote and "PASS: training finished without divergence" in d.reasons


def test_saturated_last_epoch_fails_the_gate():
    why = divergence_evidence(nn.Linear(4, 4), SATURATED, {"loss": "hinge"})
    assert why is not None and why.startswith("D saturated in the last epoch (2)")
    # BCE with one-sided smoothing (real_label 0.9) saturates at 0.85
    bce = [{"epoch": 1, "d_real": 0.88, "d_fake": 0.001}]
    assert divergence_evidence(nn.Linear(4, 4), bce, {"loss": "bce", "real_label": 0.9})
    d = gate(report(why), None, GateConfig())
    assert not d.promote
    assert [r for r in d.reasons if r.startswith("FAIL")] == [f"FAIL: training diverged: {why}"]


def test_non_finite_generator_weights_fail_the_gate():
    g = nn.Linear(4, 4)
    with torch.no_grad():
        g.weight[0, 0] = math.nan
    why = divergence_evidence(g, HEALTHY, {"loss": "hinge"})
    assert why == "the generator has non-finite weights (weight)"
    assert not gate(report(why), None, GateConfig()).promote
