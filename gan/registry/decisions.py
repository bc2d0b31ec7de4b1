"""What the registry decided about a run: the stored gate decision of its checkpoint's version
and the report that decision was made on.

What this module is: `stored_decision` (read from the version's tags) and `decided_report`,
which the flow's evaluate step asks before evaluating a run again: a decided run is not
evaluated again, its decision's report is reused (so report and decision agree); only
`redecide` evaluates anew (`gan.registry.publish` then decides under a new record).

What it is not: no decision making or applying (`gan.registry.publish`), no report layout
(`gan.eval.stored`).
"""

from __future__ import annotations

from typing import NamedTuple

from gan.core.records import GateDecision, Report, TrainedRef
from gan.core.settings import Settings
from gan.eval import stored as stored_reports
from gan.io.storage import Storage
from gan.registry import run_log as mlflow_run
from gan.registry.connect import check_reachable, client
from gan.registry.publish import DECISION_TAG


class Decided(NamedTuple):
    version: str
    decision: GateDecision
    report: Report  # the report the decision was made on


def stored_decision(settings: Settings, model_name: str, trained: TrainedRef,
                    experiment: str = "gan-retrain") -> tuple[str, GateDecision] | None:
    """(version, decision) the registry holds for this run's checkpoint (written, applied or
    not), else None: no MLflow run, no version, or no decision yet. RegistryUnavailable when
    MLflow does not answer."""
    check_reachable(settings, attempts=2)
    c = client(settings)
    exp = c.get_experiment_by_name(experiment)
    run = (None if exp is None else
           mlflow_run.find_run(c, exp.experiment_id, trained.run_id, trained.checkpoint_uri))
    if run is None:
        return None
    found = c.search_model_versions(f"name = '{model_name}' and run_id = '{run.info.run_id}'")
    if not found:
        return None
    version = min(found, key=lambda v: int(v.version)).version
    tags = c.get_model_version(model_name, version).tags
    if DECISION_TAG not in tags:
        return None
    return version, GateDecision.model_validate_json(tags[DECISION_TAG])


def decided_report(settings: Settings, storage: Storage, model_name: str, trained: TrainedRef,
                   experiment: str = "gan-retrain") -> Decided | None:
    """The registry's decision on this run and the report it was made on, or None (never
    evaluated, or not decided yet). MLflow is asked only when the run has a report already;
    when it does not answer then, RegistryUnavailable is raised (the flow's task retries):
    evaluating again could leave a report the stored decision was not made on."""
    if not stored_reports.evaluated_before(storage, trained):
        return None
    found = stored_decision(settings, model_name, trained, experiment)
    if found is None:
        return None
    version, decision = found
    # Decisions made before they named their report: the run's first report.
    uri = decision.report_uri or (f"{stored_reports.first_prefix(storage, trained)}/"
                                  f"{stored_reports.REPORT_FILE}")
    return Decided(version, decision, stored_reports.load_report(storage, uri))
