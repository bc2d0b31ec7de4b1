"""Reruns of a decided run (issue 23, item 8): reports are written once, a decided run reuses
the report its decision was made on, `redecide` evaluates again into a new numbered report.

Pure logic: a dict stands in for the bucket, stubs for the registry's answers; the flow's
evaluate task is called as a function (`.fn`). The registry half (decision records, the model
card, refusing to re-decide the champion) runs on the real stack in
tests/integration/test_registry.py, the write-once evaluation in test_evaluate_s3.py.
"""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from flows import retrain as flow
from gan.core.config import EvalConfig, RetrainParams
from gan.core.records import GateDecision, Report, TrainedRef
from gan.eval import stored
from gan.registry import decisions

BUCKET = "s3://gan"


class Bucket:
    """The few Storage calls the report layout makes, on a dict of URI → bytes."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.settings = SimpleNamespace(s3_uri=lambda *parts: "/".join([BUCKET, *parts]))

    def exists(self, uri: str) -> bool:
        return uri in self.objects

    def get_json(self, uri: str) -> Any:
        return json.loads(self.objects[uri])

    def get_bytes(self, uri: str) -> bytes:
        return self.objects[uri]

    def put_report(self, report: Report) -> Report:
        self.objects[report.report_uri] = report.model_dump_json().encode()
        self.objects[report.markdown_uri] = f"# {report.report_uri}\n".encode()
        return report


def _trained(**kw: Any) -> TrainedRef:
    return TrainedRef(**{"run_id": "r1", "checkpoint_uri": f"{BUCKET}/ray/r1/ck.pt",
                         "dataset_version": "v1", "model_cfg": {}, "train_cfg": {},
                         "epochs_completed": 3, "global_step": 9, **kw})


def _report(prefix: str, fid: float = 1.0) -> Report:
    return Report(run_id="r1", dataset_version="v1", metrics={"fid": fid}, floors={},
                  ceilings={}, class_hist=[], classes_covered=0, judge_accuracy=1.0,
                  n_samples=10, report_uri=f"{prefix}/report.json",
                  markdown_uri=f"{prefix}/report.md")


# --------------------------------------------------------------------------- layout


def test_each_evaluation_of_a_checkpoint_gets_its_own_prefix() -> None:
    bucket, run = Bucket(), _trained()
    base = f"{BUCKET}/runs/r1/eval"
    assert stored.next_prefix(bucket, run) == base and not stored.evaluated_before(bucket, run)
    bucket.put_report(_report(base))
    assert stored.evaluated_before(bucket, run) and stored.next_prefix(bucket, run) == f"{base}/2"
    bucket.put_report(_report(f"{base}/2"))
    assert stored.next_prefix(bucket, run) == f"{base}/3"
    bucket.objects[f"{base}/3/samples.png"] = b"png"  # died before its report.json
    assert stored.next_prefix(bucket, run) == f"{base}/3"
    continued = _trained(resumed_from_epoch=3, epochs_completed=10)
    assert stored.next_prefix(bucket, continued) == f"{base}/epoch_00010"


# --------------------------------------------------------------------------- decided_report


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The stored decision `decided_report` reads (None: not decided); counts the asks."""
    answer: dict[str, Any] = {"found": None, "asked": 0}

    def stored_decision(settings: Any, model_name: str, trained: TrainedRef,
                        experiment: str = "gan-retrain") -> Any:
        answer["asked"] += 1
        return answer["found"]

    monkeypatch.setattr(decisions, "stored_decision", stored_decision)
    return answer


def test_a_run_never_evaluated_does_not_ask_the_registry(registry: dict[str, Any]) -> None:
    assert decisions.decided_report(None, Bucket(), "m", _trained()) is None  # type: ignore
    assert registry["asked"] == 0  # a new run evaluates even with MLflow down


def test_a_decided_run_gives_the_report_of_its_decision(registry: dict[str, Any]) -> None:
    bucket = Bucket()
    first = bucket.put_report(_report(f"{BUCKET}/runs/r1/eval", fid=1.0))
    second = bucket.put_report(_report(f"{BUCKET}/runs/r1/eval/2", fid=2.0))
    assert decisions.decided_report(None, bucket, "m", _trained()) is None  # type: ignore
    registry["found"] = ("4", GateDecision(promote=False, reasons=[], number=2,
                                           report_uri=second.report_uri))
    got = decisions.decided_report(None, bucket, "m", _trained())  # type: ignore[arg-type]
    assert got is not None and (got.version, got.decision.number) == ("4", 2)
    assert got.report.model_copy(update={"markdown": ""}) == second
    assert got.report.markdown == f"# {second.report_uri}\n"  # the stored report.md
    # A decision made before decisions named their report: the run's first report.
    registry["found"] = ("4", GateDecision(promote=True, reasons=[]))
    legacy = decisions.decided_report(None, bucket, "m", _trained())  # type: ignore[arg-type]
    assert legacy is not None and legacy.report.report_uri == first.report_uri


# --------------------------------------------------------------------------- the flow's task


@pytest.fixture
def task_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The evaluate task's collaborators stubbed; records what it called."""
    calls: dict[str, Any] = {"decided": None, "asked": 0, "evaluated": 0}

    def decided_report(*args: Any) -> Any:
        calls["asked"] += 1
        return calls["decided"]

    def evaluate(storage: Any, dataset: Any, trained: Any, cfg: Any, **kw: Any) -> str:
        calls["evaluated"] += 1
        return "new report"

    monkeypatch.setattr(flow, "get_run_logger", lambda: logging.getLogger("test"))
    monkeypatch.setattr(flow.Storage, "from_settings", lambda settings: Bucket())
    monkeypatch.setattr(flow.decisions, "decided_report", decided_report)
    monkeypatch.setattr(flow.ev, "evaluate", evaluate)
    monkeypatch.setattr(flow, "current_champion", lambda settings, name: None)
    return calls


def _evaluate_task(redecide: bool) -> Any:
    return flow.evaluate.fn(None, None, _trained(), judge=None, cfg=EvalConfig(), model_name="m",
                            experiment="gan-retrain", redecide=redecide)


def test_a_rerun_of_a_decided_run_reuses_its_report(task_env: dict[str, Any]) -> None:
    assert _evaluate_task(False) == "new report" and task_env["evaluated"] == 1  # not decided
    old = _report(f"{BUCKET}/runs/r1/eval")
    task_env["decided"] = decisions.Decided("4", GateDecision(promote=False, reasons=[]), old)
    assert _evaluate_task(False) is old and task_env["evaluated"] == 1  # reused, not redone


def test_redecide_evaluates_again_without_asking(task_env: dict[str, Any]) -> None:
    task_env["decided"] = decisions.Decided("4", GateDecision(promote=False, reasons=[]),
                                            _report(f"{BUCKET}/runs/r1/eval"))
    assert _evaluate_task(True) == "new report"
    assert (task_env["asked"], task_env["evaluated"]) == (0, 1)


def test_redecide_needs_the_run_id_of_the_run_to_decide_again() -> None:
    with pytest.raises(ValueError, match="redecide needs run_id: the run whose decision"):
        RetrainParams(redecide=True)
    assert RetrainParams(redecide=True, run_id="gan-digits-1").redecide
