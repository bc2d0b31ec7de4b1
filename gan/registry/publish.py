"""MLflow registry: publish a trained generator and gate its promotion.

What this module is: the register stage of the pipeline.

    register(settings, run_id=..., ...) -> ModelRef
        1. the MLflow run of `run_id` (found by tag `gan.run_id`, else created): the dataset
           version as its input (`gan.registry.dataset_input`), params, metrics, report
           artifacts, lineage tags (`gan.registry.run_log`)
        2. the generator (EMA weights) + discriminator as one pyfunc model
           (`gan.registry.model_format`)
        3. a model version of `model_name` (found by its MLflow run, else created), tagged only
           with run id and dataset version, alias `challenger`; the headline metrics are
           logged on the logged model too, where MLflow shows them with the version
        4. the champion's version read right before deciding; `gan.eval.evaluate.gate`
           decides, comparing the report's re-scored champion (never numbers from its tags);
           the decision goes to the version's tags (`verdict`, `gan.gate.decision`) BEFORE
           `champion` moves (only on promote), then `gan.gate.applied`
        5. the model card (`gan.registry.model_card`) as the version's description and as the
           run's `model_card.md` artifact.
    Calling it again with the same run_id and checkpoint creates no second run, model or version
    and does not re-decide: every step is keyed and skipped once done, so a retried task is
    harmless. A decision names the report it was made on (`report_uri`) and is never replaced by
    one made on another report, except with `redecide=True`: then the gate is applied to the
    given (new) report under decision number n + 1, decision n kept as the version tag
    `gan.gate.decision.<n>`, the new report's files and metrics logged in the run
    (`evaluation/decision_<n + 1>/`), the model card rewritten. The current champion is never
    re-decided (it would be compared with itself). A continued run id (a new checkpoint: more
    epochs, or a time-limited run finished) gets a new MLflow run and a new version; the
    earlier version is never republished.
    An unfinished run (stopped by `train.time_limit_s`, fewer epochs than asked) is registered
    as `challenger` with the reason first in its decision, and never promoted.

What it is not: no loading (`gan.registry.load`), no training, no evaluation, no S3 layout of its
own (the report's URIs are copied as given), no process-wide state beyond MLflow's tracking URI,
which `client` sets from `Settings` because MLflow's `log_model` only reads that one
(`gan.registry.connect`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus, Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from gan.core.config import MODEL_NAME_RE, GateConfig
from gan.core.records import DatasetRef, GateDecision, ModelRef, Report, TrainedRef
from gan.core.settings import Settings
from gan.io.storage import Storage
from gan.registry import model_format as mlflow_model
from gan.registry import run_log as mlflow_run
from gan.registry.connect import NOT_FOUND_CODES, RegistryError, check_reachable, client
from gan.registry.dataset_input import log_dataset_input
from gan.registry.model_card import CARD_ARTIFACT, model_card, verdict
from gan.train.checkpoint import (
    discriminator_from_checkpoint,
    generator_from_checkpoint,
    load_checkpoint,
    model_config,
)

MODEL_ARTIFACT = "generator"  # the logged model's name inside the run
CHALLENGER, CHAMPION = "challenger", "champion"
DECISION_TAG, APPLIED_TAG, MODEL_ID_TAG = "gan.gate.decision", "gan.gate.applied", "gan.model_id"
VERDICT_TAG = "verdict"  # champion / rejected: the one gate tag a person reads
# Version tags that are not metrics (versions registered before the model card also carry their
# metrics as tags: everything else without a dot).
STRING_TAGS = frozenset({"dataset_version", "run_id", VERDICT_TAG})
# Run metrics that are not a version's headline metrics (history, floors, class shares).
NOT_HEADLINE = ("train/", "run/", "floor_", "ceiling_", "class_share_")
GateFn = Callable[..., GateDecision]


# --------------------------------------------------------------------------- register


def register(settings: Settings, *, run_id: str, params: Mapping[str, Any], trained: TrainedRef,
             report: Report, dataset: DatasetRef, gate_cfg: GateConfig, model_name: str,
             lineage: Mapping[str, str] | None = None, experiment: str = "gan-retrain",
             storage: Storage | None = None, gate_fn: GateFn | None = None,
             redecide: bool = False) -> ModelRef:
    """Log the run, publish the generator as a new version of `model_name`, apply the gate.

    `params`: the config tree, e.g. {"data": DataConfig, "model": ModelConfig, "train": ...,
    "eval": ..., "gate": ...} (models or dicts; flattened to `model.latent_dim`, ...).
    `lineage`: extra run tags, e.g. {"prefect.flow_run_id": ..., "prefect.flow_run_url": ...}.
    `gate_fn`: defaults to `gan.eval.evaluate.gate`. Idempotent per `run_id` (see module doc).
    `redecide`: decide again on `report` when the version was decided on another report.
    """
    _check_inputs(run_id, trained, report, dataset, model_name)
    check_reachable(settings)  # fail fast, naming the server, before anything is written
    c = client(settings)
    storage = storage or Storage.from_settings(settings)
    exp_id = mlflow_run.experiment_id(c, experiment)
    tags = mlflow_run.lineage_tags(run_id=run_id, trained=trained, dataset=dataset,
                                   lineage=lineage)
    run = mlflow_run.open_run(c, exp_id, run_id, tags)
    mlflow_run_id = run.info.run_id
    # The fluent run: log_model needs it; it ends FINISHED, or FAILED on an exception. The
    # process's active experiment must be the run's, or start_run refuses the run id ("active
    # experiment ID does not match"): a caller (a notebook, another test) may have set another.
    mlflow.set_experiment(experiment_id=exp_id)
    with mlflow.start_run(run_id=mlflow_run_id):
        log_dataset_input(c, mlflow_run_id, dataset)  # the run page's "Datasets" panel
        mlflow_run.log_params(c, run, params)
        mlflow_run.log_training(c, run, trained)
        mlflow_run.log_artifacts(c, run, storage, report,
                                 {"dataset": dataset, "trained": trained, "report": report})
        model_id = _log_model(c, run, storage, trained, dataset)
        mlflow_run.log_evaluation(c, run, report, model_id=model_id)
        mv = _model_version(c, model_name, mlflow_run_id, model_id,
                            version_tags(report, dataset, run_id) | _checkpoint_tags(trained))
        decision = _decide_and_apply(c, model_name, mv.version, report, gate_cfg,
                                     never_promote_unfinished(trained, gate_fn or _default_gate()),
                                     redecide=redecide)
        if decision.number > 1 and decision.report_uri == report.report_uri:
            mlflow_run.log_decision_report(c, run, storage, report, decision.number, model_id)
        run_url = _run_url(settings, exp_id, mlflow_run_id)
        if decision.report_uri in ("", report.report_uri):  # else: the card of its own report
            card = model_card(name=model_name, version=mv.version, report=report,
                              dataset=dataset, params=params, decision=decision, run_id=run_id,
                              run_url=run_url,
                              samples_url=_artifact_url(settings, mlflow_run_id, report),
                              flow_run_url=(lineage or {}).get("prefect.flow_run_url", ""))
            c.update_model_version(model_name, mv.version, description=card)
            mlflow.log_text(card, CARD_ARTIFACT)
    return ModelRef(
        name=model_name, version=mv.version, uri=f"models:/{model_name}/{mv.version}",
        champion=_alias_version(c, model_name, CHAMPION) == mv.version, decision=decision,
        mlflow_run_id=mlflow_run_id, mlflow_run_url=run_url)


def _check_inputs(run_id: str, trained: TrainedRef, report: Report, dataset: DatasetRef,
                  model_name: str) -> None:
    mlflow_run.check_run_id(run_id)
    if not MODEL_NAME_RE.match(model_name or ""):
        raise ValueError(f"model name {model_name!r} is not accepted: use 1-128 letters, digits, "
                         "'.', '_' or '-', starting with a letter or digit")
    for what, rid in (("trained.run_id", trained.run_id), ("report.run_id", report.run_id)):
        if rid != run_id:
            raise ValueError(f"{what} is {rid!r}, registering run {run_id!r}")
    for what, ver in (("trained.dataset_version", trained.dataset_version),
                      ("report.dataset_version", report.dataset_version)):
        if ver != dataset.version:
            raise ValueError(f"{what} is {ver!r}, dataset version is {dataset.version!r}")


def unfinished_reason(trained: TrainedRef) -> str | None:
    """Why a trained run is not finished (stopped by its time limit, or fewer epochs than
    asked), else None. Such a run is evaluated, logged and registered, never promoted."""
    wanted = trained.train_cfg.get("epochs")
    done = trained.epochs_completed
    if trained.stopped_by_time_limit:
        why = f"stopped by the time limit after epoch {done}" + (
            f" of {wanted}" if isinstance(wanted, int) else "")
    elif isinstance(wanted, int) and done < wanted:
        why = f"ended after epoch {done} of {wanted}"
    else:
        return None
    return (f"training unfinished ({why}): an unfinished run is never promoted; rerun run id "
            f"{trained.run_id} to finish it")


def never_promote_unfinished(trained: TrainedRef, gate_fn: GateFn) -> GateFn:
    """`gate_fn`, except that an unfinished run (`unfinished_reason`) never promotes: its
    decision says so first, then the gate's own lines (still measured, for information)."""
    why = unfinished_reason(trained)
    if why is None:
        return gate_fn

    def gate(*args: Any, **kwargs: Any) -> GateDecision:
        decision = gate_fn(*args, **kwargs)
        return decision.model_copy(update={"promote": False,
                                           "reasons": [f"FAIL: {why}", *decision.reasons]})

    return gate


def _default_gate() -> GateFn:
    # lazy: gan.eval.evaluate pulls in the judge and metrics stack; only the default gate needs it
    from gan.eval.evaluate import gate

    return gate


def _run_url(settings: Settings, exp_id: str, mlflow_run_id: str) -> str:
    base = settings.mlflow_tracking_uri or ""
    if not base.startswith(("http://", "https://")):
        return ""
    return f"{base}/#/experiments/{exp_id}/runs/{mlflow_run_id}"


def _artifact_url(settings: Settings, mlflow_run_id: str, report: Report) -> str:
    """A browser link to the run's sample grid (served by the MLflow server), or ""."""
    base = settings.mlflow_tracking_uri or ""
    if "samples" not in report.artifacts or not base.startswith(("http://", "https://")):
        return ""
    suffix = Path(report.artifacts["samples"]).suffix or ".png"
    return f"{base}/get-artifact?path=evaluation/samples{suffix}&run_uuid={mlflow_run_id}"


def _log_model(c: MlflowClient, run: Run, storage: Storage, trained: TrainedRef,
               dataset: DatasetRef) -> str:
    """The run's logged model id: the one logged before, else G (EMA) + D logged now, with
    the dataset's labels of its classes (`class_names`: what the model takes as `y`)."""

    known = run.data.tags.get(MODEL_ID_TAG)
    if known:
        try:
            if c.get_logged_model(known).status == LoggedModelStatus.READY:
                return known
        except MlflowException:
            pass  # deleted meanwhile: log it again
    ckpt = load_checkpoint(storage.get_bytes(trained.checkpoint_uri))
    meta = {"run_id": trained.run_id, "dataset_version": trained.dataset_version,
            "checkpoint_uri": trained.checkpoint_uri,
            "weights": "ema" if ckpt.get("generator_ema") else "raw",
            "class_names": list(dataset.class_names)}
    with tempfile.TemporaryDirectory(prefix="gan-model-") as tmp:
        bundle = mlflow_model.write_bundle(
            Path(tmp) / "gan_generator", model_config(ckpt),
            generator_from_checkpoint(ckpt, use_ema=True), discriminator_from_checkpoint(ckpt),
            meta=meta)
        info = mlflow_model.log_bundle_model(MODEL_ARTIFACT, bundle, metadata=meta)
    c.set_tag(run.info.run_id, MODEL_ID_TAG, info.model_id)
    return info.model_id


# --------------------------------------------------------------------------- versions


def version_tags(report: Report, dataset: DatasetRef, run_id: str) -> dict[str, str]:
    """The few tags a version is created with: dataset version and run id (the metrics live in
    its run and logged model, the verdict is added by the gate)."""
    return {"dataset_version": dataset.version, "run_id": run_id}


def version_metrics(c: MlflowClient, mv: ModelVersion) -> dict[str, float]:
    """A version's headline metrics: its MLflow run's evaluation metrics, and the metric tags
    versions registered before the model card carry (they agree where both exist)."""
    metrics: dict[str, float] = {}
    if mv.run_id:
        try:
            run_metrics = c.get_run(mv.run_id).data.metrics
        except MlflowException as e:
            if e.error_code not in NOT_FOUND_CODES:
                raise
            run_metrics = {}
        metrics = {k: float(v) for k, v in run_metrics.items() if not k.startswith(NOT_HEADLINE)}
    return metrics | metrics_from_tags(mv.tags)


def _checkpoint_tags(trained: TrainedRef) -> dict[str, str]:
    """Which checkpoint a version holds, and whether its training finished."""
    return {mlflow_run.CHECKPOINT_TAG: trained.checkpoint_uri,
            "gan.epochs_completed": str(trained.epochs_completed),
            "gan.unfinished": str(unfinished_reason(trained) is not None).lower()}


def metrics_from_tags(tags: Mapping[str, str]) -> dict[str, float]:
    out = {}
    for k, v in tags.items():
        if "." in k or k in STRING_TAGS:
            continue
        try:
            out[k] = float(v)
        except ValueError:
            continue
    return out


def _model_version(c: MlflowClient, name: str, mlflow_run_id: str, model_id: str,
                   tags: dict[str, str]) -> ModelVersion:
    """The version this MLflow run registered before, else a new one."""
    try:
        c.create_registered_model(name, description="GAN generator; `champion` passed the gate.")
    except MlflowException as e:
        if e.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise RegistryError(f"cannot create registered model {name!r}: {e.message}") from e
    found = c.search_model_versions(f"name = '{name}' and run_id = '{mlflow_run_id}'")
    if found:
        return min(found, key=lambda v: int(v.version))
    return c.create_model_version(name, source=f"models:/{model_id}", run_id=mlflow_run_id,
                                  tags=tags, model_id=model_id)


def _alias_version(c: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return c.get_model_version_by_alias(name, alias).version
    except MlflowException as e:
        if e.error_code in NOT_FOUND_CODES:
            return None
        raise


def champion(settings_or_client: Settings | MlflowClient, name: str
             ) -> tuple[str | None, dict[str, float] | None]:
    """(version, headline metrics) of `name`@champion, or (None, None) when none."""
    c = (settings_or_client if isinstance(settings_or_client, MlflowClient)
         else client(settings_or_client))
    version = champion_version(c, name)
    if version is None:
        return None, None
    return version, version_metrics(c, c.get_model_version(name, version))


def champion_version(c: MlflowClient, name: str) -> str | None:
    """The version `name`@champion points at, or None (no model, or no champion yet)."""
    return _alias_version(c, name, CHAMPION)


def _decide_and_apply(c: MlflowClient, name: str, version: str, report: Report,
                      gate_cfg: GateConfig, gate_fn: GateFn, *,
                      redecide: bool = False) -> GateDecision:
    """Challenger → gate against the current champion → champion (on promote).

    Order for crash safety: the decision is written before `champion` moves and
    `gan.gate.applied` after, so a re-run either returns the applied decision or re-applies a
    written one (re-deciding only when the champion changed meanwhile). `redecide` with a
    report other than the stored decision's: that decision is set aside first (`_set_aside`),
    and this one is numbered after it.
    """
    tags = c.get_model_version(name, version).tags
    stored = (GateDecision.model_validate_json(tags[DECISION_TAG])
              if DECISION_TAG in tags else None)
    number = 1
    if stored is not None and redecide and stored.report_uri != report.report_uri:
        _set_aside(c, name, version, stored, tags[DECISION_TAG])
        number, stored = stored.number + 1, None
    elif stored is not None and tags.get(APPLIED_TAG) == "true":
        return stored
    c.set_registered_model_alias(name, CHALLENGER, version)
    champ_version, champ_metrics = champion(c, name)  # read right before deciding

    def decide() -> GateDecision:  # the gate's decision, naming its report and number
        made = gate_fn(report, champ_metrics, gate_cfg, champion_version=champ_version)
        return made.model_copy(update={"report_uri": report.report_uri, "number": number})

    if stored is not None and champ_version in (stored.champion_version, version):
        decision = stored
    else:
        number = stored.number if stored is not None else number
        decision = decide()
        _write_decision(c, name, version, decision)
    for _ in range(3):
        # A concurrent run may have moved `champion` while this one decided (MLflow has no
        # compare-and-set on aliases): re-read it and judge again against the new champion,
        # so the better of two concurrent candidates ends as champion. See README Reliability.
        now = _alias_version(c, name, CHAMPION) if decision.promote else None
        if not decision.promote or now in (decision.champion_version, version):
            break
        champ_version, champ_metrics = champion(c, name)
        decision = decide()
        _write_decision(c, name, version, decision)
    if decision.promote:
        c.set_registered_model_alias(name, CHAMPION, version)
    c.set_model_version_tag(name, version, APPLIED_TAG, "true")
    return decision


def _set_aside(c: MlflowClient, name: str, version: str, stored: GateDecision,
               stored_json: str) -> None:
    """Before `redecide`: keep decision n as the tag `gan.gate.decision.<n>` and mark the
    version undecided. Refused for the current champion (it would be compared with itself)."""
    if _alias_version(c, name, CHAMPION) == version:
        raise RegistryError(
            f"v{version} of {name} is @champion: re-deciding it would compare it with itself; "
            "move @champion by hand first if it should not be (see README, 'The gate')")
    c.set_model_version_tag(name, version, f"{DECISION_TAG}.{stored.number}", stored_json)
    c.set_model_version_tag(name, version, APPLIED_TAG, "false")


def _write_decision(c: MlflowClient, name: str, version: str, decision: GateDecision) -> None:
    """The decision in the version's tags (the reasons read as the model card, written after)."""
    c.set_model_version_tag(name, version, VERDICT_TAG, verdict(decision))
    c.set_model_version_tag(name, version, DECISION_TAG, decision.model_dump_json())
