"""The retraining flow: prepare_data → prepare_judge → train → evaluate → register.

What this module is: the `retrain` flow (its one parameter, `RetrainParams`, is the Prefect UI
form) and its tasks, each a thin call into one `gan` entry point:

    prepare_data  gan.data.prepare.prepare   cached on (DataConfig, source content fingerprint),
                  result persisted in the bucket (s3-bucket/gan-results), retried on
                  StorageError (2 s, 5 s, 10 s)
    prepare_judge gan.eval.judge_ladder.prepare_judge   the dataset version's judge, loaded from
                  its cache (keyed by its settings) or trained, and checked, BEFORE training:
                  a judge that cannot see the data ends the run here, naming the flags to
                  change; retried on StorageError like prepare_data
    train         gan.train.ray.driver.train   no Prefect retries: Ray owns fault tolerance; a
                  progress artifact is updated every epoch, and the run's MLflow run
                  (gan.registry.live_run, opened here) takes each epoch's numbers and preview
                  grids; storage lost mid-run fails it naming the endpoint (a rerun of the run
                  id resumes from its last checkpoint)
    evaluate      gan.eval.evaluate.evaluate   loads exactly prepare_judge's judge (never
                  trains one); retried on StorageError; a run the registry decided already
                  reuses the report of its decision (`redecide`: evaluated again into a new
                  numbered report, gan.eval.stored)
    register      gan.registry.publish.register   retried on StorageError or an unreachable
                  MLflow (RegistryUnavailable), 5 s, 10 s (idempotent per run id and checkpoint:
                  one MLflow run and version however often; never promotes an unfinished run;
                  `redecide`: the gate again, on the new report, under a new decision record)

then a markdown artifact (metrics vs champion and floors, gate decision, MLflow links) and the
sample grid as an image artifact. Between prepare_data and train, a new run id (not `force`)
the model takes its channels, image size and conditioning from the dataset version
(`gan.core.model_fit`; an explicit --conditional on unlabelled data fails there), and a new run id
is checked by `check_unchanged` (gan.registry.lineage.nothing_changed): when the champion
was trained from the same dataset version, recipe and code, the flow ends there with an
`Unchanged` result and a "nothing changed" summary: no training, no new version. The parameters are
validated before any task runs; a stage that fails fails the flow with "<stage> failed:
<reason>" in its state message, and a failed run registers nothing (register is the last
stage). One run id names everything a run writes.

What it is not: no tensor math, no storage layout, no MLflow logic (all in `gan.*`); the
deployment and its schedule are in `flows.deploy`.
"""


import contextlib
from collections.abc import Iterator
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import INPUTS, NO_CACHE, CachePolicy
from prefect.context import TaskRunContext
from prefect.runtime import flow_run

from flows import params as P
from flows import summary
from flows.best_effort import BestEffort
from flows.prefect_setup import RESULT_STORAGE, ensure_result_storage
from gan.core.config import DataConfig, EvalConfig, ModelConfig, RetrainParams, TrainConfig
from gan.core.model_fit import fit_model_to_data
from gan.core.records import DatasetRef, JudgeRef, ModelRef, Report, TrainedRef, Unchanged
from gan.core.settings import Settings
from gan.data import prepare as data
from gan.data.fingerprint import source_files, source_fingerprint
from gan.eval import evaluate as ev
from gan.eval import judge_ladder
from gan.eval.inception import load_inception
from gan.io.storage import ObjectMissing, Storage, StorageError
from gan.io.uri import storage_for
from gan.registry import connect as registry_connect
from gan.registry import decisions, lineage
from gan.registry import load as registry_load
from gan.registry import publish as registry
from gan.registry.live_run import LiveRun
from gan.train.ddp import format_progress
from gan.train.ray import driver as distributed


class RetrainFailed(RuntimeError):
    """A stage failed; the message is `<stage> failed: <reason>`."""


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Re-raise any error of the block as RetrainFailed naming the stage (the state message)."""
    try:
        yield
    except Exception as e:
        raise RetrainFailed(f"{name} failed: {e}") from e


def retry_on_storage_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only when object storage failed or a service did not answer (a StorageError or a
    ConnectionError, e.g. `gan.registry.connect.RegistryUnavailable`, anywhere in the cause
    chain);
    never for a missing object (`ObjectMissing`): that is a user error."""
    try:
        state.result()
    except Exception as e:  # the task's exception, re-raised by result()
        err: BaseException | None = e
        while err is not None:
            if isinstance(err, ObjectMissing):  # an answer, not an outage: retrying won't help
                return False
            if isinstance(err, (StorageError, ConnectionError)):
                return True
            err = err.__cause__
    return False


class SourceContent(CachePolicy):
    """Cache key part: the content fingerprint of the source `prepare_data` reads."""

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any],
                    flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        cfg: DataConfig = inputs["cfg"]
        return source_fingerprint(cfg, storage_for(inputs["settings"], *source_files(cfg)))


# --------------------------------------------------------------------------- tasks


@task(name="prepare_data", cache_policy=INPUTS - "settings" + SourceContent(),
      persist_result=True, result_storage=RESULT_STORAGE, result_serializer="json",
      retries=3, retry_delay_seconds=[2, 5, 10], retry_condition_fn=retry_on_storage_error)
def prepare_data(settings: Settings, cfg: DataConfig) -> DatasetRef:
    """Source → validated, versioned dataset in the bucket (written once, then reused)."""
    return data.prepare(cfg, Storage.from_settings(settings))


@task(name="prepare_judge", cache_policy=NO_CACHE, persist_result=False, retries=3,
      retry_delay_seconds=[2, 5, 10], retry_condition_fn=retry_on_storage_error)
def prepare_judge(settings: Settings, dataset: DatasetRef, cfg: EvalConfig) -> JudgeRef:
    """The dataset version's judge, from its cache or trained, checked before any training;
    the optional standard FID's weight file (`eval.inception_weights`) is checked here too, so
    a bad one also ends the run before training."""
    storage = Storage.from_settings(settings)
    if cfg.inception_weights:
        load_inception(cfg.inception_weights, storage)
    return judge_ladder.prepare_judge(storage, dataset, cfg, log=get_run_logger().info)


@task(name="train", task_run_name="train {run_id}", cache_policy=NO_CACHE,
      persist_result=False)
def train(settings: Settings, dataset: DatasetRef, model_cfg: ModelConfig,
          train_cfg: TrainConfig, run_id: str, experiment: str = "gan-retrain") -> TrainedRef:
    """Ray Train on the dataset; live progress in a progress artifact and in the MLflow run
    (opened now, so MLflow shows training as it happens)."""
    live = _open_live_run(settings, run_id, experiment, dataset)
    progress = EpochProgress(run_id, train_cfg.epochs, live)
    try:
        try:
            trained = distributed.train(settings, dataset, model_cfg, train_cfg, run_id=run_id,
                                        on_epoch=progress)
        finally:
            progress.close()  # bounded: what the servers have not taken by now is dropped
    except OSError as e:  # pyarrow's S3 errors: Ray Train writes run files through pyarrow
        err: Exception = StorageError(
            f"S3 endpoint {settings.s3_endpoint_url} failed while training run {run_id}; "
            f"rerun with run id {run_id} to resume from its last complete checkpoint ({e})")
        _live_call(live, "fail", str(err))
        raise err from e
    except Exception as e:
        _live_call(live, "fail", f"training failed: {e}")
        raise
    _live_call(live, "finish", trained)
    return trained


def _open_live_run(settings: Settings, run_id: str, experiment: str,
                   dataset: DatasetRef) -> LiveRun | None:
    """The MLflow run of `run_id`, open from now; None (a warning) when MLflow does not answer:
    training goes on and `register` (which retries) logs the history afterwards."""
    try:
        return LiveRun.open(settings, run_id=run_id, experiment=experiment, lineage=_lineage(),
                            dataset=dataset)
    except Exception as e:  # noqa: BLE001 (MLflow down must not stop training)
        get_run_logger().warning("MLflow run not opened, training without live logging: %s", e)
        return None


def _live_call(live: LiveRun | None, method: str, *args: Any) -> None:
    """`live.<method>(*args)`, a failure logged as a warning (the flow's outcome stands)."""
    if live is None:
        return
    try:
        getattr(live, method)(*args)
    except Exception as e:  # noqa: BLE001 (see docstring)
        get_run_logger().warning("MLflow run %s: %s failed: %s", live.mlflow_run_id, method, e)


@task(name="evaluate", cache_policy=NO_CACHE, persist_result=False, retries=2,
      retry_delay_seconds=[5, 10], retry_condition_fn=retry_on_storage_error)
def evaluate(settings: Settings, dataset: DatasetRef, trained: TrainedRef, judge: JudgeRef,
             cfg: EvalConfig, model_name: str, experiment: str = "gan-retrain",
             redecide: bool = False) -> Report:
    """Metrics in `judge`'s feature space against the real-data floors, pictures, report in the
    bucket; the current `model_name@champion` is re-scored beside the candidate (same judge,
    holdout, seeds).

    A run the registry has decided already (a rerun of its run id) is not evaluated again:
    the report its decision was made on is reused, so report and decision agree; `redecide`
    evaluates anew (a new numbered report, never over the old one: `gan.eval.stored`)."""
    storage = Storage.from_settings(settings)
    if not redecide:
        decided = decisions.decided_report(settings, storage, model_name, trained, experiment)
        if decided is not None:
            get_run_logger().info(
                "run %s was decided before (v%s, decision %d): its report %s is reused, nothing "
                "is evaluated again; set redecide to evaluate it again and decide anew",
                trained.run_id, decided.version, decided.decision.number,
                decided.report.report_uri)
            return decided.report
    return ev.evaluate(storage, dataset, trained, cfg, judge_ref=judge,
                       champion=current_champion(settings, model_name))


def current_champion(settings: Settings, model_name: str) -> ev.Champion | None:
    """The champion's generator for re-scoring, loaded through gan.registry (None: none yet).

    A champion whose model cannot be loaded is passed on with the reason, so the gate says so
    and does not promote automatically. MLflow unreachable: evaluation goes on without the
    champion (the gate then does not promote) — registering needs MLflow anyway and fails
    naming it, and the rerun of the run id evaluates again, with the champion."""
    try:
        registry_connect.check_reachable(settings, attempts=2)
    except registry_connect.RegistryUnavailable as e:
        get_run_logger().warning("champion of %s not re-scored: %s", model_name, e)
        return ev.Champion("?", None, problem=f"the registry could not be asked: {e}")
    version, _ = registry.champion(settings, model_name)
    if version is None:
        return None
    try:
        generator = registry_load.load_generator(f"models:/{model_name}/{version}",
                                                 settings=settings)
    except (registry_connect.RegistryError, ValueError, OSError) as e:
        if isinstance(e, ConnectionError):
            raise
        get_run_logger().warning("champion v%s of %s could not be loaded: %s", version,
                                 model_name, e)
        return ev.Champion(version, None, problem=f"its model could not be loaded: {e}")
    return ev.Champion(version, generator)


@task(name="register", cache_policy=NO_CACHE, persist_result=False, retries=2,
      retry_delay_seconds=[5, 10], retry_condition_fn=retry_on_storage_error)
def register(settings: Settings, params: RetrainParams, configs: dict[str, Any],
             dataset: DatasetRef, trained: TrainedRef, report: Report) -> ModelRef:
    """MLflow run + model version (@challenger); the gate decides @champion (`redecide`: again,
    on this report, under a new decision record)."""
    model = registry.register(
        settings, run_id=trained.run_id, params=configs, trained=trained, report=report,
        dataset=dataset, gate_cfg=params.gate, model_name=params.model_name,
        lineage=_lineage(), experiment=params.registry.experiment, redecide=params.redecide)
    if model.decision.number > 1 and model.decision.report_uri == report.report_uri:
        get_run_logger().warning("v%s re-decided: decision %d, on report %s (the earlier ones "
                                 "kept in its tags)", model.version, model.decision.number,
                                 report.report_uri)
    return model


def check_unchanged(settings: Settings, model_name: str, run_id: str, dataset: DatasetRef,
                    configs: dict[str, Any]) -> Unchanged | None:
    """`Unchanged` when the champion was trained from this dataset version, recipe and code;
    None for a run id that has trained before (a resumed or retried run is never skipped).

    A plain step of the flow, not a task: it only reads (MLflow's client retries its own
    requests), and a flow's task list stays prepare_data, prepare_judge, train, evaluate,
    register."""
    if distributed.has_started(settings, run_id):
        return None
    unchanged, diff = lineage.nothing_changed(settings, model_name=model_name, run_id=run_id,
                                              dataset_version=dataset.version, configs=configs)
    if diff:
        get_run_logger().info("changed since the champion: %s", "; ".join(diff))
    return unchanged


# --------------------------------------------------------------------------- the flow


@flow(name="retrain", description="Retrain the GAN: prepare data → train (Ray) → evaluate → "
      "register in MLflow; the gate decides whether the new version becomes @champion.",
      persist_result=False)
def retrain(params: RetrainParams = RetrainParams()) -> ModelRef | Unchanged:
    """One retraining run; returns the registered model version, or `Unchanged` when a new run
    would train what the champion was trained from (same dataset version, recipe and code)
    and `params.force` is off: then nothing is trained or registered."""
    # Before any work: raises ParamsError naming the fields ("invalid retrain parameters: ...").
    data_cfg, model_cfg, train_cfg, eval_cfg = P.resolve(params)
    settings = Settings.load()
    ensure_result_storage(settings)
    run_id = params.run_id or _run_id_here(params.model_name)
    get_run_logger().info("run %s publishes to models:/%s (preset %s)", run_id,
                          params.model_name, params.preset)
    with stage("prepare_data"):
        dataset = prepare_data(settings, data_cfg)
    with stage("prepare_judge"):  # before any training: a judge failure costs no training
        judge = prepare_judge(settings, dataset, eval_cfg)
    with stage("fit_model"):  # channels, size, labels from the data (gan.core.model_fit)
        model_cfg = fit_model_to_data(model_cfg, dataset, P.explicit_model_fields(params))
    configs = {"preset": params.preset, "data": data_cfg, "model": model_cfg,
               "train": train_cfg, "eval": eval_cfg, "gate": params.gate}
    if not params.force:
        with stage("check_unchanged"):
            unchanged = check_unchanged(settings, params.model_name, run_id, dataset, configs)
        if unchanged is not None:
            publish_unchanged(settings, unchanged)
            return unchanged
    with stage("train"):
        trained = train(settings, dataset, model_cfg, train_cfg, run_id,
                        params.registry.experiment)
    with stage("evaluate"):
        report = evaluate(settings, dataset, trained, judge, eval_cfg, params.model_name,
                          params.registry.experiment, params.redecide)
    with stage("register"):
        model = register(settings, params, configs, dataset, trained, report)
    publish_summary(settings, run_id, dataset, trained, report, model)
    return model


# --------------------------------------------------------------------------- UI pieces


class EpochProgress:
    """`on_epoch` callback: one log line and a progress-artifact update per epoch, and the
    epoch's numbers (and preview grid) into the live MLflow run when there is one.

    Both go through `BestEffort` (other threads, bounded, counted), so a slow or dead Prefect
    or MLflow server never holds the epoch loop. The artifact: each epoch only records the
    latest value, and one pending update shows whatever is latest when it runs (epochs that
    pass meanwhile are folded into it). MLflow: every epoch is queued (up to 16 waiting); when
    MLflow is away they are dropped and counted. The log line goes through Prefect's own
    background log shipping."""

    def __init__(self, run_id: str, total_epochs: int, live: LiveRun | None = None) -> None:
        self.run_id, self.total, self.live = run_id, total_epochs, live
        self.log = get_run_logger()  # held: the callback runs in this task's thread
        self.artifact_id: Any = None
        self.latest: tuple[float, str] = (0.0, "starting")
        self.shown: tuple[float, str] | None = None
        self.calls = BestEffort(f"progress of run {run_id}")
        self.calls.submit(self._show)
        self.live_calls = BestEffort(f"MLflow epochs of run {run_id}", max_pending=16)

    def _show(self) -> None:  # on the BestEffort thread
        done, text = latest = self.latest
        description = f"training run {self.run_id}: {text}"
        if self.artifact_id is None:
            self.artifact_id = create_progress_artifact(progress=done, description=description)
        else:
            update_progress_artifact(self.artifact_id, progress=done, description=description)
        self.shown = latest

    def __call__(self, metrics: dict[str, Any]) -> None:
        line = format_progress(metrics, self.total)
        self.log.info(line)
        done = min(100.0, 100.0 * float(metrics.get("epoch", 0)) / max(self.total, 1))
        self.latest = (done, line)
        if self.calls.pending() == 0:  # else the pending update will show this value
            self.calls.submit(self._show)
        if self.live is not None:
            live = self.live
            self.live_calls.submit(lambda: live.log_epoch(metrics))

    def close(self, timeout_s: float = 5.0) -> None:
        """Show the final value (waiting at most `timeout_s` for each server); say so when
        something did not land."""
        if self.shown != self.latest and self.calls.pending() == 0:
            self.calls.submit(self._show)
        counts = self.calls.close(timeout_s)
        if self.shown != self.latest:
            self.log.warning("progress artifact not updated to the end (%d updates failed, %d "
                             "dropped; Prefect server away?); training was not held",
                             counts.failed, counts.dropped)
        live = self.live_calls.close(timeout_s)
        if live.done < live.submitted:
            self.log.warning("MLflow live run: %d of %d epochs not logged (%d dropped, %d "
                             "failed; MLflow away?); training was not held",
                             live.submitted - live.done, live.submitted, live.dropped,
                             live.failed)


def publish_summary(settings: Settings, run_id: str, dataset: DatasetRef, trained: TrainedRef,
                    report: Report, model: ModelRef) -> None:
    """The summary markdown and the sample grid as artifacts of this flow run.

    The model is registered by now, so a failure here is logged, not raised: the run's outcome
    (registered, promoted or not) stands either way."""
    log = get_run_logger()
    try:
        links = summary.mlflow_links(settings.mlflow_tracking_uri, model)
        text = summary.summary_markdown(
            run_id=run_id, dataset=dataset, trained=trained, report=report, model=model,
            champion=_champion_metrics(settings, model, report), links=links)
        create_markdown_artifact(text, key=summary.artifact_key(model.name, "report"),
                                 description=f"run {run_id}: {model.uri}")
        if links.samples_png:
            create_image_artifact(links.samples_png,
                                  key=summary.artifact_key(model.name, "samples"),
                                  description=f"samples of {model.uri} (run {run_id})")
    except Exception as e:  # noqa: BLE001 (see docstring)
        log.warning("could not publish the run summary artifacts: %s", e)
    verdict = "promoted to @champion" if model.champion else "not promoted (stays @challenger)"
    log.info("registered %s: %s", model.uri, verdict)
    for reason in model.decision.reasons:
        log.info("gate: %s", reason)


def publish_unchanged(settings: Settings, result: Unchanged) -> None:
    """The "nothing changed" summary as this flow run's markdown artifact (logged, not raised,
    on failure: nothing was trained or registered either way)."""
    log = get_run_logger()
    log.info("%s: no training, no new version (force to train anyway)", result.reason)
    try:
        base = (settings.mlflow_tracking_uri or "").rstrip("/")
        url = (f"{base}/#/models/{result.model_name}/versions/{result.champion_version}"
               if base.startswith(("http://", "https://")) else "")
        create_markdown_artifact(summary.unchanged_markdown(result, url),
                                 key=summary.artifact_key(result.model_name, "report"),
                                 description=f"run {result.run_id}: nothing changed")
    except Exception as e:  # noqa: BLE001 (see docstring)
        log.warning("could not publish the run summary artifact: %s", e)


def _champion_metrics(settings: Settings, model: ModelRef,
                      report: Report | None = None) -> dict[str, float] | None:
    """Metrics of the version the gate compared against (None when there was none): its
    re-scored numbers from this evaluation when it was re-scored, else its version tags."""
    version = model.decision.champion_version
    if not version:
        return None
    score = report.champion if report is not None else None
    if score is not None and score.version == version and score.comparable:
        return dict(score.metrics)
    c = registry_connect.client(settings)
    return registry.version_metrics(c, c.get_model_version(model.name, version))


def _lineage() -> dict[str, str]:
    """MLflow run tags pointing back at this Prefect flow run."""
    tags = {"prefect.flow_run_id": str(flow_run.id or ""),
            "prefect.flow_run_url": str(flow_run.ui_url or "")}
    return {k: v for k, v in tags.items() if v}


def _run_id_here(model_name: str) -> str:
    """A new run id that contains this flow run's name. The flow run is never renamed: the name
    it got at creation (the UI's toast, the runs list) stays; `gan retrain` passes its run id
    as the flow run name from the start (`flow_run_name`)."""
    if flow_run.id and flow_run.name:
        return P.run_id_of_flow_run(model_name, flow_run.name, str(flow_run.id))
    return P.new_run_id(model_name)
