"""`gan.registry.publish._decide_and_apply` when another run moves `champion` meanwhile (reliability
scenario 6, two runs at once): the decision is retaken against the new champion, so the
worse candidate never overwrites a better champion that arrived while it was deciding.

Pure logic: an in-memory stand-in for the five MlflowClient calls involved (the real server
is exercised by tests/reliability/test_3_divergence_concurrency.py).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

from gan.core.config import GateConfig
from gan.core.records import GateDecision
from gan.registry import publish as registry
from gan.registry.connect import RegistryError


class Registry(MlflowClient):
    """Versions with tags, and aliases, of one registered model (no server: the base class's
    constructor is not called; only the methods below are used)."""

    def __init__(self) -> None:  # noqa: D107 (no super().__init__: nothing to connect to)
        self.tags: dict[str, dict[str, str]] = {"1": {"fid": "1.0"}, "2": {"fid": "2.0"}}
        self.aliases: dict[str, str] = {}
        self.descriptions: dict[str, str] = {}

    def get_model_version(self, name: str, version: str) -> Any:
        # No MLflow run behind these versions: their metrics come from their tags, as for
        # versions registered before the model card.
        return SimpleNamespace(version=version, tags=dict(self.tags[version]), run_id=None)

    def get_model_version_by_alias(self, name: str, alias: str) -> Any:
        if alias not in self.aliases:
            raise MlflowException("no alias", error_code=RESOURCE_DOES_NOT_EXIST)
        return self.get_model_version(name, self.aliases[alias])

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        self.aliases[alias] = version

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.tags[version][key] = value

    def update_model_version(self, name: str, version: str, description: str) -> None:
        self.descriptions[version] = description


def fid_gate(report: Any, champion_metrics: dict[str, float] | None, cfg: GateConfig, *,
             champion_version: str | None = None) -> GateDecision:
    """Promote when there is no champion or the candidate's FID is lower."""
    fid = report.metrics["fid"]
    ok = champion_metrics is None or fid < champion_metrics["fid"]
    return GateDecision(promote=ok, reasons=[f"{'PASS' if ok else 'FAIL'}: FID {fid}"],
                        champion_version=champion_version)


def _report(fid: float, uri: str = "s3://gan/runs/r2/eval/report.json") -> Any:
    return SimpleNamespace(metrics={"fid": fid}, report_uri=uri)


def test_champion_moved_while_deciding_is_judged_again() -> None:
    reg, calls = Registry(), []

    def racing_gate(report: Any, champ: Any, cfg: GateConfig, **kw: Any) -> GateDecision:
        decision = fid_gate(report, champ, cfg, **kw)
        if not calls:  # the other run (version 1, better FID) becomes champion right now
            reg.aliases["champion"] = "1"
        calls.append(kw.get("champion_version"))
        return decision

    report = _report(2.0)
    decision = registry._decide_and_apply(reg, "m", "2", report, GateConfig(), racing_gate)
    assert calls == [None, "1"]  # decided once with no champion, then against version 1
    assert not decision.promote and decision.champion_version == "1"
    assert reg.aliases == {"champion": "1", "challenger": "2"}
    assert reg.tags["2"]["verdict"] == "rejected"
    assert GateDecision.model_validate_json(reg.tags["2"][registry.DECISION_TAG]) == decision
    assert reg.tags["2"][registry.APPLIED_TAG] == "true"


def test_better_candidate_still_wins_after_the_recheck() -> None:
    reg = Registry()
    reg.tags["1"]["fid"] = "3.0"

    def racing_gate(report: Any, champ: Any, cfg: GateConfig, **kw: Any) -> GateDecision:
        reg.aliases.setdefault("champion", "1")
        return fid_gate(report, champ, cfg, **kw)

    report = _report(2.0)
    decision = registry._decide_and_apply(reg, "m", "2", report, GateConfig(), racing_gate)
    assert decision.promote and decision.champion_version == "1"
    assert reg.aliases["champion"] == "2"


def test_no_race_decides_once() -> None:
    reg, calls = Registry(), []

    def gate(report: Any, champ: Any, cfg: GateConfig, **kw: Any) -> GateDecision:
        calls.append(kw.get("champion_version"))
        return fid_gate(report, champ, cfg, **kw)

    registry._decide_and_apply(reg, "m", "1", _report(1.0), GateConfig(), gate)
    assert calls == [None] and reg.aliases == {"champion": "1", "challenger": "1"}


def test_redecide_makes_a_new_record_and_keeps_the_old() -> None:
    """Issue 23, item 8: decision 1 (made on report 1) stands on a plain rerun with another
    report; `redecide` sets it aside as `gan.gate.decision.1` and decides on report 2."""
    reg = Registry()
    reg.aliases["champion"] = "1"
    first = registry._decide_and_apply(reg, "m", "2", _report(5.0), GateConfig(), fid_gate)
    assert (first.promote, first.number, first.report_uri) == (
        False, 1, "s3://gan/runs/r2/eval/report.json")
    better = _report(0.5, "s3://gan/runs/r2/eval/2/report.json")
    assert registry._decide_and_apply(reg, "m", "2", better, GateConfig(), fid_gate) == first
    new = registry._decide_and_apply(reg, "m", "2", better, GateConfig(), fid_gate,
                                     redecide=True)
    assert (new.promote, new.number, new.report_uri) == (True, 2, better.report_uri)
    assert reg.aliases["champion"] == "2" and reg.tags["2"]["verdict"] == "champion"
    assert GateDecision.model_validate_json(reg.tags["2"][f"{registry.DECISION_TAG}.1"]) == first
    assert registry._decide_and_apply(reg, "m", "2", better, GateConfig(), fid_gate,
                                      redecide=True) == new  # a retry: the same record
    with pytest.raises(RegistryError, match="v2 of m is @champion: re-deciding it would "
                       "compare it with itself"):
        registry._decide_and_apply(reg, "m", "2", _report(0.1, "s3://x/3/report.json"),
                                   GateConfig(), fid_gate, redecide=True)
