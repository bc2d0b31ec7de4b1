"""The names of the retrain deployment, shared by the flows that serve it and the stack that
supervises the serving process (`gan serve`), so neither imports the other.

What it is not: no Prefect import; `flows.deploy` creates and serves the deployment.
"""

from __future__ import annotations

from urllib.parse import quote

FLOW_NAME = "retrain"  # the @flow's name in flows/retrain.py
DEPLOYMENT_NAME = "gan-retrain"
DEFAULT_CRON = "0 3 * * *"  # nightly at 03:00 UTC


def deployment_health_url(api_url: str, name: str = DEPLOYMENT_NAME) -> str:
    """The Prefect API URL that answers 200 once deployment `retrain/<name>` exists."""
    return f"{api_url.rstrip('/')}/deployments/name/{FLOW_NAME}/{quote(name, safe='')}"
