"""The promotion gate: each rule alone, no champion, ties and margins (pure logic, no I/O)."""

from __future__ import annotations

import math

import pytest

from gan.core.config import GateConfig
from gan.core.records import Report
from gan.eval.evaluate import gate


def make_report(*, fid: float = 10.0, class_kl: float = 0.01, covered: int = 10,
                diverged: bool = False, k: int = 10, recall: float = 0.8) -> Report:
    return Report(
        run_id="r1", dataset_version="v1",
        metrics={"fid": fid, "class_kl": class_kl, "classes_covered": float(covered),
                 "recall": recall},
        floors={"fid": 1.0, "recall": 0.88}, ceilings={"inception_score": 9.0},
        class_hist=[1.0 / k] * k, classes_covered=covered, judge_accuracy=0.99, n_samples=1000,
        diverged=diverged, report_uri="s3://b/runs/r1/eval/report.json",
        markdown_uri="s3://b/runs/r1/eval/report.md",
    )


def failed(decision) -> list[str]:
    return [r for r in decision.reasons if r.startswith("FAIL")]


def test_first_model_without_champion_is_judged_on_absolute_rules_only():
    d = gate(make_report(fid=500.0), None, GateConfig())
    assert d.promote, d.reasons
    assert len(d.reasons) == 5 and all(r.startswith("PASS") for r in d.reasons)
    assert any("no champion" in r for r in d.reasons)
    assert d.champion_fid is None and d.champion_version is None


def test_better_fid_than_champion_promotes_and_names_the_champion():
    d = gate(make_report(fid=10.0), {"fid": 12.0}, GateConfig(), champion_version="3")
    assert d.promote, d.reasons
    assert d.champion_fid == 12.0 and d.champion_version == "3"
    assert any("champion 3" in r and r.startswith("PASS") for r in d.reasons)


def test_diverged_training_is_refused():
    d = gate(make_report(diverged=True), None, GateConfig())
    assert not d.promote
    assert failed(d) == ["FAIL: training diverged"]


def test_missing_class_is_refused_when_all_classes_required():
    d = gate(make_report(covered=9), None, GateConfig(require_all_classes=True))
    assert not d.promote
    assert len(failed(d)) == 1 and "9/10" in failed(d)[0]


def test_missing_class_allowed_when_not_required_but_still_reported():
    d = gate(make_report(covered=9), None, GateConfig(require_all_classes=False))
    assert d.promote, d.reasons
    assert any("9/10" in r and "not required" in r for r in d.reasons)


def test_class_kl_at_or_over_limit_is_refused():
    over = gate(make_report(class_kl=0.2), None, GateConfig(max_class_kl=0.1))
    at = gate(make_report(class_kl=0.1), None, GateConfig(max_class_kl=0.1))
    under = gate(make_report(class_kl=0.099), None, GateConfig(max_class_kl=0.1))
    assert not over.promote and "class KL" in failed(over)[0]
    assert not at.promote  # "under" the limit: equal is not under
    assert under.promote


def test_worse_fid_than_champion_is_refused():
    d = gate(make_report(fid=13.0), {"fid": 12.0}, GateConfig(), champion_version="1")
    assert not d.promote
    assert len(failed(d)) == 1 and "FID 13" in failed(d)[0]


def test_fid_tie_does_not_promote():
    d = gate(make_report(fid=12.0), {"fid": 12.0}, GateConfig(fid_margin=0.0))
    assert not d.promote, d.reasons


@pytest.mark.parametrize(("fid", "promote"), [(11.5, False), (11.0, False), (10.9, True)])
def test_fid_margin(fid: float, promote: bool):
    d = gate(make_report(fid=fid), {"fid": 12.0}, GateConfig(fid_margin=1.0))
    assert d.promote is promote, d.reasons


def test_nan_fid_never_promotes_over_a_champion():
    d = gate(make_report(fid=math.nan), {"fid": 12.0}, GateConfig())
    assert not d.promote


def test_every_failed_rule_is_listed():
    d = gate(make_report(fid=20.0, class_kl=3.0, covered=1, diverged=True, recall=0.01),
             {"fid": 12.0}, GateConfig())
    assert not d.promote
    assert len(d.reasons) == 5 and len(failed(d)) == 5


def test_champion_without_fid_is_a_clear_error():
    with pytest.raises(ValueError, match="champion 7 metrics lack 'fid'"):
        gate(make_report(), {"kid_mean": 0.1}, GateConfig(), champion_version="7")


def test_report_without_fid_is_a_clear_error():
    r = make_report().model_copy(update={"metrics": {"class_kl": 0.0}})
    with pytest.raises(ValueError, match="lacks 'fid'"):
        gate(r, None, GateConfig())


def test_collapsed_generator_fails_on_recall_whatever_its_fid():
    """A conditional G that draws one image per class: FID fine, classes all there, recall ~0."""
    collapsed = gate(make_report(fid=1.0, recall=0.058), None, GateConfig())
    assert not collapsed.promote
    assert len(failed(collapsed)) == 1 and "mode collapse" in failed(collapsed)[0]
    # the bound is a share of real data's recall (0.25 × 0.88 = 0.22)
    assert gate(make_report(recall=0.23), None, GateConfig()).promote
    assert not gate(make_report(recall=0.21), None, GateConfig()).promote
    assert gate(make_report(recall=0.0), None, GateConfig(min_recall_ratio=0.0)).promote


def test_recall_rule_needs_recall_in_the_report():
    r = make_report()
    r = r.model_copy(update={"metrics": {k: v for k, v in r.metrics.items() if k != "recall"}})
    with pytest.raises(ValueError, match="recall"):
        gate(r, None, GateConfig())
