"""Where a run's evaluation reports lie in the bucket, each written once.

What this module is: the layout of a run's reports and the rule that a report, once complete
(its `report.json` is written last), is never overwritten:

    runs/<run_id>/eval/                   the first evaluation of the run's checkpoint
    runs/<run_id>/eval/epoch_<N>/         the first of a continued run id's new checkpoint
    <either>/2/, <either>/3/, ...         each later evaluation of the same checkpoint (a rerun
                                          that evaluates again, `redecide`)

A registry decision names the report it was made on (`GateDecision.report_uri`), so the report
behind a decision stays as it was however often the run is evaluated again.

What it is not: no scoring (`gan.eval.evaluate`), no registry (which report a decision was made
on is read from MLflow by the flow).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gan.core.records import Report, TrainedRef

if TYPE_CHECKING:
    from gan.io.storage import Storage

REPORT_FILE, MARKDOWN_FILE = "report.json", "report.md"


def first_prefix(storage: Storage, trained: TrainedRef) -> str:
    """Where the first evaluation of this run's checkpoint is written."""
    prefix = storage.settings.s3_uri("runs", trained.run_id, "eval")
    if trained.resumed_from_epoch:  # a continued run id: never overwrite an earlier report
        prefix = f"{prefix}/epoch_{trained.epochs_completed:05d}"
    return prefix


def evaluated_before(storage: Storage, trained: TrainedRef) -> bool:
    """Whether this run's checkpoint has a complete report already."""
    return storage.exists(f"{first_prefix(storage, trained)}/{REPORT_FILE}")


def next_prefix(storage: Storage, trained: TrainedRef) -> str:
    """Where the next evaluation of this run's checkpoint goes: the first prefix without a
    complete report (an evaluation that died before its report.json is written over)."""
    base = first_prefix(storage, trained)
    prefix, n = base, 1
    while storage.exists(f"{prefix}/{REPORT_FILE}"):
        n += 1
        prefix = f"{base}/{n}"
    return prefix


def load_report(storage: Storage, report_uri: str) -> Report:
    """A stored report with its markdown, as `evaluate` returned it."""
    report = Report.model_validate(storage.get_json(report_uri))
    return report.model_copy(update={
        "markdown": storage.get_bytes(report.markdown_uri).decode()})
