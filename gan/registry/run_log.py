"""The MLflow run of one pipeline run: params, metrics, report artifacts and lineage tags.

What this module is: the run-logging half of `gan.registry.publish`. One pipeline `run_id` and
checkpoint map to exactly one MLflow run, found again by its tags `gan.run_id` and
`gan.checkpoint_uri`, so registering a run twice (a retried Prefect task, a resumed flow) reuses
the run and logs nothing twice: every logging step records a `gan.logged.<step>` tag when it
completes and is skipped when the tag is there. A continued run id (a new checkpoint) gets a
new MLflow run (`open_run`).

    params    flattened config tree (`model.latent_dim`, `train.lr_g`, ...), no credentials
    metrics   per-epoch training history (`train/<key>`, step = epoch); evaluation metrics,
              `floor_<k>`, `ceiling_<k>`, `class_share_<i>`
    artifacts evaluation/ (report.json, report.md, PNGs copied from S3), records/ (the stage
              records as JSON)
    tags      gan.run_id, dataset, Ray run and checkpoint, code version, the caller's lineage
              (Prefect flow run id and URL)

What it is not: no model logging, no registry (see `gan.registry.publish`,
`gan.registry.model_format`).
"""

from __future__ import annotations

import json
import math
import re
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings

from gan.core.ids import is_run_id
from gan.core.records import DatasetRef, Report, TrainedRef
from gan.io.storage import Storage
from gan.io.uri import redact_url
from gan.registry.code_version import code_version

RUN_TAG = "gan.run_id"
CHECKPOINT_TAG = "gan.checkpoint_uri"  # with RUN_TAG, the key of an MLflow run
CONTINUES_TAG = "gan.continues"  # the MLflow run a continued run id's new run follows
# Parameter names that would hold a credential: refused, never logged.
SECRET_KEY_RE = re.compile(r"secret|password|passwd|token|credential|access_key|api_key",
                           re.IGNORECASE)
METRIC_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-. :/]")
PARAM_VALUE_MAX = 6000  # MLflow 3's limit on a param value
BATCH = 1000  # MLflow's limit on metrics per log_batch


class RunLoggingError(ValueError):
    """Bad input to run logging (an invalid run id, a credential in the params)."""


# --------------------------------------------------------------------------- params


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config tree (dicts or pydantic models) → {"model.latent_dim": "100", ...}.

    Refuses credentials outright: a `Settings` object, a `SecretStr`, or a key that names a
    secret raises RunLoggingError (naming the key), so a mistake cannot reach the server.
    URLs lose their user:password part and credential-like query parameters.
    """
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, BaseSettings):
            raise RunLoggingError(f"param {name!r}: settings objects are never logged")
        if isinstance(value, SecretStr):
            raise RunLoggingError(f"param {name!r}: a secret value is never logged")
        if SECRET_KEY_RE.search(str(key)):
            raise RunLoggingError(f"param {name!r}: names a credential; it is never logged")
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        if isinstance(value, Mapping):
            out.update(flatten_params(value, prefix=f"{name}."))
            continue
        if isinstance(value, (list, tuple)):
            text = json.dumps(list(value))
        else:
            text = redact_url(value) if isinstance(value, str) else str(value)
        out[name] = text[:PARAM_VALUE_MAX]
    return out


# --------------------------------------------------------------------------- lineage


def lineage_tags(*, run_id: str, trained: TrainedRef, dataset: DatasetRef,
                 lineage: Mapping[str, str] | None = None) -> dict[str, str]:
    """The run's lineage: ours plus the caller's (e.g. `prefect.flow_run_id`, `..._url`)."""
    code = code_version()
    tags = {
        RUN_TAG: run_id,
        "mlflow.runName": run_id,
        "gan.dataset.name": dataset.name,
        "gan.dataset.version": dataset.version,
        "gan.dataset.uri": dataset.uri,
        "gan.dataset.source": redact_url(dataset.source),
        "gan.ray.run_name": trained.ray_run_name,
        "gan.ray.storage_uri": trained.ray_storage_uri,
        CHECKPOINT_TAG: trained.checkpoint_uri,
        "gan.code_version": code,
        "gan.diverged": str(trained.diverged).lower(),
    }
    if re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", code):
        tags["mlflow.source.git.commit"] = code.removesuffix("+dirty")
    for k, v in (lineage or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise RunLoggingError(f"lineage tag {k!r}: keys and values must be strings")
        tags[k] = redact_url(v)
    return {k: v for k, v in tags.items() if v}


# --------------------------------------------------------------------------- the run


def check_run_id(run_id: str) -> str:
    if not is_run_id(run_id):
        raise RunLoggingError(f"run_id {run_id!r} is not valid: 1-64 letters, digits, _ or -")
    return run_id


def experiment_id(client: MlflowClient, name: str) -> str:
    """The experiment's id, created when missing (a concurrent creator wins harmlessly)."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:  # created meanwhile by another process: read it back
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def runs_of(client: MlflowClient, exp_id: str, run_id: str) -> list[Run]:
    """Every MLflow run tagged `gan.run_id = run_id`, oldest first (one per checkpoint)."""
    query = f"tags.`{RUN_TAG}` = '{check_run_id(run_id)}'"  # run_id checked: no quotes
    return client.search_runs([exp_id], filter_string=query,
                              order_by=["attributes.start_time ASC"], max_results=1000)


def find_run(client: MlflowClient, exp_id: str, run_id: str,
             checkpoint_uri: str | None = None) -> Run | None:
    """The MLflow run of `run_id` (and, when given, of that checkpoint: tag
    `gan.checkpoint_uri`); the oldest, should there be several."""
    runs = runs_of(client, exp_id, run_id)
    if checkpoint_uri is not None:
        runs = [r for r in runs if r.data.tags.get(CHECKPOINT_TAG) == checkpoint_uri]
    return runs[0] if runs else None


def open_run(client: MlflowClient, exp_id: str, run_id: str, tags: Mapping[str, str]) -> Run:
    """Find the run of (`run_id`, checkpoint) or create it; (re)write the lineage tags.

    Keyed on the checkpoint too (`tags["gan.checkpoint_uri"]`): a continued run id (more
    epochs, or finishing a time-limited run) trained a new checkpoint, which gets an MLflow run
    (and so a model version) of its own, named `<run id> (epoch N)` and tagged
    `gan.continues` = the MLflow run it continues; the earlier runs are left as they were."""
    checkpoint = tags.get(CHECKPOINT_TAG)
    earlier = runs_of(client, exp_id, run_id)
    run = next((r for r in earlier if checkpoint is None
                or r.data.tags.get(CHECKPOINT_TAG) == checkpoint), None)
    # The live run of this training whose `finish` could not tag the checkpoint (MLflow away).
    run = run or _live_untagged(earlier)
    tags = dict(tags)
    if run is None:
        if earlier:  # a continuation: its own run, pointing at the one before
            tags["mlflow.runName"] = f"{run_id} (epoch {_epoch_of(checkpoint)})"
            tags[CONTINUES_TAG] = earlier[-1].info.run_id
        run = client.create_run(exp_id, run_name=tags.get("mlflow.runName", run_id),
                                tags={RUN_TAG: run_id})
    elif run.data.tags.get("mlflow.runName"):
        tags["mlflow.runName"] = run.data.tags["mlflow.runName"]  # keep the name it was given
    client.log_batch(run.info.run_id, tags=[_tag(k, v) for k, v in tags.items()])
    return client.get_run(run.info.run_id)


def _live_untagged(earlier: list[Run]) -> Run | None:
    """The latest run not FINISHED that has no checkpoint yet: a live run (training) of an
    attempt that stopped before its checkpoint was recorded."""
    return next((r for r in reversed(earlier) if r.info.status != "FINISHED"
                 and not r.data.tags.get(CHECKPOINT_TAG)), None)


def open_live_run(client: MlflowClient, exp_id: str, run_id: str,
                  tags: Mapping[str, str]) -> Run:
    """The run training logs into, opened before its checkpoint is known: the live run of an
    earlier attempt that never got a checkpoint (a crash, a resume), else a new run (named
    `<run id> (continued)` and tagged `gan.continues` when the run id has runs already).
    `tag_checkpoint` later gives it its key, so `open_run` at registration finds it."""
    earlier = runs_of(client, exp_id, run_id)
    run = _live_untagged(earlier)
    tags = dict(tags)
    if run is None:
        if earlier:
            tags["mlflow.runName"] = f"{run_id} (continued)"
            tags[CONTINUES_TAG] = earlier[-1].info.run_id
        run = client.create_run(exp_id, run_name=tags.get("mlflow.runName", run_id),
                                tags={RUN_TAG: run_id})
    elif run.data.tags.get("mlflow.runName"):
        tags["mlflow.runName"] = run.data.tags["mlflow.runName"]
    client.log_batch(run.info.run_id, tags=[_tag(k, v) for k, v in tags.items()])
    return client.get_run(run.info.run_id)


def tag_checkpoint(client: MlflowClient, exp_id: str, run: Run, run_id: str,
                   checkpoint_uri: str) -> str:
    """Key the live run `run` on the checkpoint training produced; return the MLflow run id
    that now holds that key.

    When another run of `run_id` has that checkpoint already (training returned a checkpoint
    logged before: a retried flow whose registration had failed), that run stays the one and
    the live run, which only re-logged its history, is deleted: one MLflow run per
    (run id, checkpoint), as `open_run` promises."""
    other = find_run(client, exp_id, run_id, checkpoint_uri)
    if other is not None and other.info.run_id != run.info.run_id:
        client.delete_run(run.info.run_id)
        return other.info.run_id
    tags = [_tag(CHECKPOINT_TAG, checkpoint_uri)]
    if run.data.tags.get(CONTINUES_TAG):
        tags.append(_tag("mlflow.runName", f"{run_id} (epoch {_epoch_of(checkpoint_uri)})"))
    client.log_batch(run.info.run_id, tags=tags)
    return run.info.run_id


def _epoch_of(checkpoint_uri: str | None) -> str:
    """`.../checkpoint_epoch_00012/checkpoint.pt` → "12" ("?" when the name says none)."""
    m = re.search(r"checkpoint_epoch_(\d+)", checkpoint_uri or "")
    return str(int(m.group(1))) if m else "?"


def _tag(k: str, v: str) -> RunTag:
    return RunTag(k, v[:8000])  # MLflow's limit on a tag value


def done(run: Run, step: str) -> bool:
    return run.data.tags.get(f"gan.logged.{step}") == "true"


def mark_done(client: MlflowClient, run: Run, step: str) -> None:
    client.set_tag(run.info.run_id, f"gan.logged.{step}", "true")


# --------------------------------------------------------------------------- logging


def log_params(client: MlflowClient, run: Run, params: Mapping[str, Any]) -> dict[str, str]:
    """Log the flattened params the run lacks. MLflow params are immutable, so on a re-run
    the first values stay (a resumed run may legitimately differ in e.g. num_workers)."""
    flat = flatten_params(params)
    new = [Param(k, v) for k, v in sorted(flat.items()) if k not in run.data.params]
    for i in range(0, len(new), 100):  # MLflow's limit on params per batch
        client.log_batch(run.info.run_id, params=new[i:i + 100])
    return flat


def metric_key(name: str) -> str:
    return METRIC_KEY_BAD.sub("_", name)


def _metrics(values: Mapping[str, Any], *, prefix: str = "", step: int = 0,
             ts: int | None = None, model_id: str | None = None) -> list[Metric]:
    ts = ts if ts is not None else int(time.time() * 1000)
    out = []
    for k, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
            continue  # NaN (e.g. loss_g of an epoch with no G step) means "not measured"
        out.append(Metric(metric_key(f"{prefix}{k}"), float(v), ts, step, model_id=model_id))
    return out


def _log_metrics(client: MlflowClient, run_id: str, metrics: list[Metric]) -> None:
    for i in range(0, len(metrics), BATCH):
        client.log_batch(run_id, metrics=metrics[i:i + BATCH])


def log_values(client: MlflowClient, mlflow_run_id: str, values: Mapping[str, Any], *,
               prefix: str = "", step: int = 0) -> None:
    """The numeric (non-NaN) entries of `values` as metrics `<prefix><key>` at `step`."""
    _log_metrics(client, mlflow_run_id, _metrics(values, prefix=prefix, step=step))


def log_training(client: MlflowClient, run: Run, trained: TrainedRef) -> None:
    """Per-epoch history as `train/<key>` at step = epoch, and the run's summary numbers."""
    if done(run, "training"):
        return
    metrics: list[Metric] = []
    for i, row in enumerate(trained.history):
        epoch = int(row.get("epoch", i + 1))
        rest = {k: v for k, v in row.items() if k not in ("epoch", "step")}
        metrics += _metrics(rest, prefix="train/", step=epoch)
    metrics += _metrics({"epochs_completed": trained.epochs_completed,
                         "global_step": trained.global_step,
                         "images_per_s": trained.images_per_s,
                         "resumed_from_epoch": trained.resumed_from_epoch},
                        prefix="run/", step=trained.epochs_completed)
    _log_metrics(client, run.info.run_id, metrics)
    mark_done(client, run, "training")


def evaluation_metrics(report: Report) -> dict[str, float]:
    """Everything the report measured, flat: metrics, floor_*, ceiling_*, class shares."""
    out: dict[str, float] = dict(report.metrics)
    out.update({f"floor_{k}": v for k, v in report.floors.items()})
    out.update({f"ceiling_{k}": v for k, v in report.ceilings.items()})
    out.update({f"class_share_{i}": v for i, v in enumerate(report.class_hist)})
    out.update({f"spread_{k}": v for k, v in report.spread.items()})  # over the eval seeds
    if report.champion is not None and report.champion.comparable:  # re-scored alongside
        out.update({f"champion_{k}": v for k, v in report.champion.metrics.items()})
    out.update(judge_accuracy=report.judge_accuracy, classes_covered=report.classes_covered,
               n_samples=report.n_samples)
    if report.conditional_accuracy is not None:
        out["conditional_accuracy"] = report.conditional_accuracy
    return out


def headline_metrics(report: Report) -> dict[str, float]:
    """The metrics a version is judged by: the report's, class coverage, judge accuracy."""
    return dict(report.metrics) | {"classes_covered": float(report.classes_covered),
                                   "judge_accuracy": float(report.judge_accuracy)}


def log_evaluation(client: MlflowClient, run: Run, report: Report,
                   model_id: str | None = None, *, step: int = 0) -> None:
    """The evaluation metrics into the run; the headline ones also linked to the logged model
    `model_id` (MLflow 3 shows them as the model's metrics, next to its versions). `step` > 0:
    a re-decided version's report n = step + 1 (`log_decision_report`)."""
    key = "evaluation" if step == 0 else f"evaluation.decision_{step + 1}"
    if done(run, key):
        return
    headline = headline_metrics(report)
    rest = {k: v for k, v in evaluation_metrics(report).items() if k not in headline}
    _log_metrics(client, run.info.run_id,
                 _metrics(headline, model_id=model_id, step=step) + _metrics(rest, step=step))
    mark_done(client, run, key)


def _report_files(storage: Storage, report: Report, folder: Path) -> None:
    """The report (json, md) and its pictures, copied from S3 into `folder`."""
    sources = {"report.json": report.report_uri, "report.md": report.markdown_uri}
    for name, uri in report.artifacts.items():
        sources[f"{name}{Path(uri).suffix or '.png'}"] = uri
    folder.mkdir(parents=True)
    for name, uri in sources.items():
        (folder / name).write_bytes(storage.get_bytes(uri))


def log_artifacts(client: MlflowClient, run: Run, storage: Storage, report: Report,
                  records: Mapping[str, BaseModel]) -> None:
    """Copy the report and its pictures from S3 into the run; the stage records as JSON."""
    if done(run, "artifacts"):
        return
    with tempfile.TemporaryDirectory(prefix="gan-mlflow-") as tmp:
        ev, rec = Path(tmp, "evaluation"), Path(tmp, "records")
        _report_files(storage, report, ev)
        rec.mkdir()
        for name, record in records.items():
            (rec / f"{name}.json").write_text(record.model_dump_json(indent=2))
        client.log_artifacts(run.info.run_id, str(ev), "evaluation")
        client.log_artifacts(run.info.run_id, str(rec), "records")
    mark_done(client, run, "artifacts")


def log_decision_report(client: MlflowClient, run: Run, storage: Storage, report: Report,
                        number: int, model_id: str | None = None) -> None:
    """The report decision `number` (> 1, `redecide`) was made on, into the run: its files
    under `evaluation/decision_<number>/`, its metrics at step number − 1, so the run's latest
    values (what the registry shows for the version) are the decided report's. Keyed."""
    folder = f"decision_{number}"
    if not done(run, f"artifacts.{folder}"):
        with tempfile.TemporaryDirectory(prefix="gan-mlflow-") as tmp:
            _report_files(storage, report, Path(tmp, folder))
            client.log_artifacts(run.info.run_id, str(Path(tmp, folder)),
                                 f"evaluation/{folder}")
        mark_done(client, run, f"artifacts.{folder}")
    log_evaluation(client, run, report, model_id, step=number - 1)
