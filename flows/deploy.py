"""The `retrain` deployment: served from a long-running process (`gan serve`, and the 4th
service of `gan stack up`), with a cron schedule, so runs start on time or from the Prefect
UI's Run button (with the parameters edited in the form) and execute in that process; next to
it, the data-change trigger `watch-source/<name>-watch` (`flows.trigger`) every 5 minutes.

What this module is: the deployment's name and default schedule, `check_cron`, `serve` (blocks
until stopped) and `deployment_health_url` (200 once the deployment exists: the stack's health
check for the serving process). Teams with a work pool use `prefect.yaml` at the repository
root instead (same entrypoint, same schedule).

What it is not: no flow logic (`flows.retrain`); reads no environment (the caller has set the
API URL with `flows.prefect_setup.use_api`).
"""

from __future__ import annotations

from gan.core.deployment import DEFAULT_CRON, DEPLOYMENT_NAME, FLOW_NAME, deployment_health_url
from gan.core.errors import problems

__all__ = ["DEFAULT_CRON", "DEPLOYMENT_NAME", "FLOW_NAME", "deployment_health_url", "serve",
           "watch_name"]

TAGS = ["gan"]
DEFAULT_WATCH_S = 300.0  # the data-change trigger checks the source every 5 minutes


class DeployError(ValueError):
    """A bad schedule or deployment name; the message names the value."""


def check_cron(cron: str) -> str:
    """`cron` if Prefect accepts it as a schedule, else DeployError naming it."""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        CronSchedule(cron=cron, timezone="UTC")
    except ValidationError as e:
        raise DeployError(f"--cron {cron!r} is not a valid cron schedule: "
                          f"{problems(e)[0]}") from None
    return cron


def serve(*, name: str = DEPLOYMENT_NAME, cron: str | None = DEFAULT_CRON,
          watch_every_s: float | None = DEFAULT_WATCH_S) -> None:
    """Create/update deployments `retrain/<name>` and `watch-source/<name>-watch` (the
    data-change trigger, `flows.trigger`) and execute their runs here until stopped.

    `cron` None: no schedule for either (runs start only from the UI or the API);
    `watch_every_s` None or 0: the watcher has no schedule. At most one run at a time: a
    training run takes the machine's CPUs (watcher runs due meanwhile wait for it, then take
    seconds). The entrypoints are module paths (`flows.retrain.retrain`), so runs work whatever
    this process's working directory."""
    # lazy: Prefect reads its API URL once, at import; `gan serve` imports this module first
    from prefect import serve as prefect_serve
    from prefect.deployments.runner import EntrypointType

    from flows.retrain import retrain  # lazy: Prefect (as above), torch, Ray, MLflow
    from flows.trigger import watch_source  # lazy: Prefect (as above)

    if cron is not None:
        check_cron(cron)
    watch = watch_every_s if cron is not None and watch_every_s else None
    prefect_serve(
        retrain.to_deployment(
            name=name, cron=cron, tags=TAGS,
            description="Retrain the GAN (prepare → train → evaluate → register). Edit the "
            "parameters in the form; the preset gives the recipe, set fields override it. "
            "A run publishes to registry.model_name, default gan-<dataset> "
            "(gan-<dataset>-smoke for the smoke preset); its log's first line names it.",
            entrypoint_type=EntrypointType.MODULE_PATH),
        watch_source.to_deployment(
            name=watch_name(name), interval=watch, tags=TAGS,
            parameters={"deployment": f"{FLOW_NAME}/{name}"},
            description=f"Start {FLOW_NAME}/{name} when the data source's content "
            "fingerprint changes (its params say which source and what to run).",
            entrypoint_type=EntrypointType.MODULE_PATH),
        limit=1,
        # Prefect pauses a served schedule when its server stops (default True): a stopped or
        # restarted `gan serve` would silently switch the nightly retraining off.
        pause_on_shutdown=False,
        print_starting_message=True,
    )


def watch_name(name: str = DEPLOYMENT_NAME) -> str:
    """The data-change trigger's deployment name next to retrain deployment `name`."""
    return f"{name}-watch"
