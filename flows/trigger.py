"""The data-change trigger: a light flow that starts the retrain deployment when the source's
content fingerprint changes.

What this module is: the `watch-source` flow. Each run computes the fingerprint of the source
that `params` names (`gan.data.fingerprint.source_fingerprint`: metadata only, a HEAD per
file, no download), compares it with the one it saw last (a Prefect Variable per deployment and
data config) and, when it changed (`gan.data.fingerprint.fingerprint_change`), starts a run of
the retrain deployment with `prefect.deployments.run_deployment(timeout=0)`, then remembers the
fingerprint. `gan serve` serves it as `watch-source/<retrain name>-watch` every few minutes,
next to the retrain deployment (`flows.deploy`).

Why `run_deployment` and not Prefect events/automations: the check is a poll anyway (S3 and
HTTP sources emit no events to Prefect), and a direct call keeps the whole rule in this file,
works the same on the open-source server and Prefect Cloud, needs no automation object created
and kept in sync on the server, and is tested like any function. The retrain run itself
decides whether there is work (`check_unchanged`): a start for data the champion was already
trained on ends in seconds. The Variable holds the fingerprint and a count of the changes seen
(`{"fingerprint": ..., "changes": n}`); the idempotency key `<deployment>:<n + 1>:<fingerprint>`
keeps two watchers that saw the same change from starting two runs, and still starts one when a
state comes back (A → B → A → B: three changes, three runs; a key of the fingerprint alone
returned the first B's run for the second B and started nothing).

What it is not: no training or data logic (a retrain run does it all), no schedule (`flows.deploy`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.deployments import run_deployment
from prefect.variables import Variable

from flows import params as P
from gan.core.config import DataConfig, RetrainParams
from gan.core.deployment import DEPLOYMENT_NAME, FLOW_NAME
from gan.core.settings import Settings
from gan.data.fingerprint import (
    UNREADABLE,
    fingerprint_change,
    source_files,
    source_fingerprint,
)
from gan.io.uri import storage_for

WATCH_FLOW_NAME = "watch-source"


def variable_name(deployment: str, data_cfg: DataConfig) -> str:
    """The Prefect Variable holding the last fingerprint seen for this deployment and source
    (letters, digits, dashes and underscores, as Prefect requires)."""
    key = json.dumps([deployment, data_cfg.model_dump(mode="json")], sort_keys=True)
    return f"gan_source_{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def seen_state(value: Any) -> tuple[str | None, int]:
    """(last fingerprint, changes seen so far) from the Variable's value: a dict written by
    `check_and_start`, a bare fingerprint string (written before the count existed: 0 changes),
    or nothing yet."""
    if isinstance(value, dict) and isinstance(value.get("fingerprint"), str):
        changes = value.get("changes")
        return value["fingerprint"], changes if isinstance(changes, int) else 0
    return (value, 0) if isinstance(value, str) else (None, 0)


def check_and_start(params: RetrainParams, deployment: str, *, current: str,
                    last_seen: Any, start: Callable[[dict[str, Any], str], str],
                    remember: Callable[[dict[str, Any]], None]) -> str | None:
    """The watcher's step: start `deployment` with `params` when the fingerprint changed
    (`start(parameters, idempotency_key)` → flow run id), remember the fingerprint and the
    number of changes seen (also the first fingerprint, as a baseline); the started flow run's
    id, or None. `last_seen`: the Variable's value (see `seen_state`)."""
    last, changes = seen_state(last_seen)
    started = None
    if fingerprint_change(last, current) is not None:
        changes += 1
        # exclude_none: the deployment's schema takes an empty field as absent, not null.
        body = {"params": params.model_dump(mode="json", exclude_none=True)}
        # The change's number makes a state that comes back a new key; two watchers that saw
        # the same change (same count, same fingerprint) still share one.
        started = start(body, f"{deployment}:{changes}:{current}")
    if not current.startswith(UNREADABLE) and current != last:
        # after the start: a failed start is retried by the next check
        remember({"fingerprint": current, "changes": changes})
    return started


@task(name="source_fingerprint", cache_policy=NO_CACHE, persist_result=False, retries=2,
      retry_delay_seconds=[5, 10])
def fingerprint(settings: Settings, cfg: DataConfig) -> str:
    return source_fingerprint(cfg, storage_for(settings, *source_files(cfg)))


@flow(name=WATCH_FLOW_NAME, description="Start the retrain deployment when the data source's "
      "content fingerprint changes (checked on a short schedule by `gan serve`).",
      persist_result=False)
def watch_source(params: RetrainParams = RetrainParams(),
                 deployment: str = f"{FLOW_NAME}/{DEPLOYMENT_NAME}") -> str | None:
    """Check the source once; returns the id of the retrain run it started, or None."""
    log = get_run_logger()
    data_cfg, *_ = P.resolve(params)
    current = fingerprint(Settings.load(), data_cfg)
    name = variable_name(deployment, data_cfg)
    last = Variable.get(name, default=None)

    def start(parameters: dict[str, Any], key: str) -> str:
        run = run_deployment(deployment, parameters=parameters, timeout=0, as_subflow=False,
                             idempotency_key=key)
        log.info("source %s changed: started %s run %s", data_cfg.source, deployment, run.name)
        return str(run.id)

    started = check_and_start(params, deployment, current=current, last_seen=last,
                              start=start,
                              remember=lambda seen: Variable.set(name, seen, overwrite=True))
    if started is None:
        log.info("source %s: fingerprint %s (last seen %s): nothing to start", data_cfg.source,
                 current, seen_state(last)[0])
    return started
