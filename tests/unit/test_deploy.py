"""The deployment's pieces without services: schedule check, health URL, and `gan serve` as the
stack's 4th service (planned only with the stack's own Prefect server, no secrets in its env)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.deploy import (
    DEFAULT_CRON,
    DEPLOYMENT_NAME,
    DeployError,
    check_cron,
    deployment_health_url,
)
from gan.cli.main import app
from gan.stack import services


def test_cron_is_checked_and_named():
    assert check_cron(DEFAULT_CRON) == "0 3 * * *"
    with pytest.raises(DeployError, match=r"--cron '61 \* \* \* \*' is not a valid cron"):
        check_cron("61 * * * *")


def test_health_url_is_the_deployment_by_name():
    assert deployment_health_url("http://127.0.0.1:4200/api/", "gan-retrain") == (
        "http://127.0.0.1:4200/api/deployments/name/retrain/gan-retrain")


def test_stack_serves_the_deployment_with_its_own_prefect(settings_env):
    settings_env.set(GAN_S3_PORT="20000", GAN_MLFLOW_PORT="21000", GAN_PREFECT_PORT="21001")
    s = settings_env.load()
    svc = {x.name: x for x in services.plan(s, ("KEYID", "SECRETVALUE"))}
    serve = svc["serve"]
    assert serve.argv[0].endswith("gan")
    assert tuple(serve.argv[1:]) == ("serve", "--cron", "0 3 * * *")
    assert serve.health_url == "http://127.0.0.1:21001/api/deployments/name/retrain/gan-retrain"
    assert serve.needs == ("s3", "mlflow", "prefect") and serve.ports == ()
    assert serve.env["PREFECT_API_URL"] == svc["prefect"].url
    assert serve.env["MLFLOW_TRACKING_URI"] == svc["mlflow"].url
    assert serve.env["GAN_HOME"] == str(s.gan_home.resolve())
    # The local store's keys are read from GAN_HOME by the flow, never passed around.
    assert not any("SECRETVALUE" in v or "KEYID" in v for v in (*serve.env.values(), *serve.argv))


@pytest.mark.parametrize("cron, args", [("off", ("--no-schedule",)),
                                         ("0 */6 * * *", ("--cron", "0 */6 * * *"))])
def test_serve_schedule_follows_gan_serve_cron(settings_env, cron, args):
    settings_env.set(GAN_SERVE_CRON=cron)
    serve = {x.name: x for x in services.plan(settings_env.load(), ("K", "S"))}["serve"]
    assert tuple(serve.argv[1:]) == ("serve", *args)


def test_external_prefect_gets_no_served_deployment(settings_env):
    settings_env.set(PREFECT_API_URL="http://prefect.example:4200/api")
    assert "serve" not in {x.name for x in services.plan(settings_env.load())}


def test_external_store_keys_reach_the_served_flows(settings_env):
    settings_env.set(GAN_S3_ENDPOINT_URL="https://minio.example:9000",
                     AWS_ACCESS_KEY_ID="K", AWS_SECRET_ACCESS_KEY="S")
    serve = {x.name: x for x in services.plan(settings_env.load(), ("K", "S"))}["serve"]
    assert (serve.env["AWS_ACCESS_KEY_ID"], serve.env["AWS_SECRET_ACCESS_KEY"]) == ("K", "S")


def test_serve_rejects_a_bad_cron(settings_env):
    settings_env.set(PREFECT_API_URL="http://127.0.0.1:9/api")
    r = CliRunner().invoke(app, ["serve", "--cron", "not a cron"])
    assert r.exit_code == 2 and "--cron 'not a cron' is not a valid cron schedule" in r.output


def test_prefect_yaml_matches_the_served_deployment():
    import yaml

    root = Path(__file__).resolve().parents[2]
    doc = yaml.safe_load((root / "prefect.yaml").read_text())
    (dep,) = doc["deployments"]
    path, _, func = dep["entrypoint"].partition(":")
    assert (root / path).is_file() and f"def {func}(" in (root / path).read_text()
    # its own name: deploying it must not take over the stack's served `retrain/gan-retrain`
    assert dep["name"] == f"{DEPLOYMENT_NAME}-pool" and dep["enforce_parameter_schema"] is True
    assert [check_cron(s["cron"]) for s in dep["schedules"]] == [DEFAULT_CRON]
    assert dep["work_pool"]["name"] and dep["concurrency_limit"] == 1


def test_stopping_serve_keeps_the_schedule(monkeypatch):
    """Prefect's serve pauses the schedule on shutdown by default: `gan serve` must not."""
    import inspect

    import prefect

    from flows import deploy

    assert "pause_on_shutdown" in inspect.signature(prefect.serve).parameters
    seen: dict = {}
    monkeypatch.setattr(prefect, "serve", lambda *deps, **kw: seen.update(kw, deps=deps))
    deploy.serve(name="x", cron=DEFAULT_CRON)
    assert seen["pause_on_shutdown"] is False
    assert [s.schedule.cron for s in seen["deps"][0].schedules] == [DEFAULT_CRON]

