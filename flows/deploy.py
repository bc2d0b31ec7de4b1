"""The `retrain` deployment: served from a long-running process (`gan serve`, and the 4th
service of `gan stack up`), with a cron schedule, so runs start on time or from the Prefect
UI's Run button (with the parameters edited in the form) and execute in that process.

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

__all__ = ["DEFAULT_CRON", "DEPLOYMENT_NAME", "FLOW_NAME", "deployment_health_url", "serve"]

TAGS = ["gan"]


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


def serve(*, name: str = DEPLOYMENT_NAME, cron: str | None = DEFAULT_CRON) -> None:
    """Create/update deployment `retrain/<name>` and execute its runs here until stopped.

    `cron` None: no schedule (runs start only from the UI or the API). At most one run at a
    time: a training run takes the machine's CPUs. The entrypoint is the module path
    `flows.retrain.retrain`, so runs work whatever this process's working directory."""
    # lazy: Prefect reads its API URL once, at import; `gan serve` imports this module first
    from prefect.deployments.runner import EntrypointType

    from flows.retrain import retrain  # lazy: Prefect (as above), torch, Ray, MLflow

    if cron is not None:
        check_cron(cron)
    retrain.serve(
        name=name,
        cron=cron,
        tags=TAGS,
        description="Retrain the GAN (prepare → train → evaluate → register). Edit the "
        "parameters in the form; the preset gives the recipe, set fields override it.",
        limit=1,
        # Prefect pauses a served schedule when its server stops (default True): a stopped or
        # restarted `gan serve` would silently switch the nightly retraining off.
        pause_on_shutdown=False,
        entrypoint_type=EntrypointType.MODULE_PATH,
        print_starting_message=True,
    )
