"""Needed work only (issue 15, points 6 and 8): smoke runs publish under `<name>-smoke`; a new
run whose dataset version, recipe and code equal the champion's trains nothing
(`gan.registry.lineage`), `--force` trains anyway.

Pure logic: an in-memory stand-in for the MlflowClient calls `champion_lineage` makes (the
real server and a real second run: tests/integration/test_run_semantics.py).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST
from typer.testing import CliRunner

import flows.retrain
from flows import params as P
from gan.cli import main as cli
from gan.core.config import RetrainParams
from gan.core.records import Unchanged
from gan.registry import lineage, run_log

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _configs(**train: Any) -> dict[str, Any]:
    _, model, tc, _ = RetrainParams(preset="smoke").resolve()
    return {"model": model, "train": tc.model_copy(update=train)}


class Registry(MlflowClient):
    """One registered model whose champion's run holds the given tags and params."""

    def __init__(self, tags: dict[str, str] | None, params: dict[str, str]) -> None:  # noqa: D107
        self.run = SimpleNamespace(data=SimpleNamespace(tags=tags or {}, params=params))
        self.has_champion = tags is not None

    def get_model_version_by_alias(self, name: str, alias: str) -> Any:
        if not self.has_champion or alias != "champion":
            raise MlflowException("no alias", error_code=RESOURCE_DOES_NOT_EXIST)
        return SimpleNamespace(version="3", run_id="m1", tags={})

    def get_model_version(self, name: str, version: str) -> Any:
        return SimpleNamespace(version=version, run_id="m1", tags={})

    def get_run(self, run_id: str) -> Any:
        return self.run


@pytest.fixture
def champion(monkeypatch: pytest.MonkeyPatch):
    """Install a fake champion trained from (dataset v1, the smoke recipe, COMMIT)."""
    def install(tags: dict[str, str] | None = None, **train: Any) -> None:
        params = run_log.flatten_params({"preset": "smoke", **_configs(**train)})
        base = {"gan.dataset.version": "v1", "gan.code_version": COMMIT}
        reg = Registry(None if tags == {} else {**base, **(tags or {})}, params)
        monkeypatch.setattr(lineage, "client", lambda settings: reg)

    monkeypatch.setattr(run_log, "code_version", lambda: COMMIT)
    return install


def _check(dataset_version: str = "v1", **train: Any) -> tuple[Any, list[str]]:
    return lineage.nothing_changed(None, model_name="m", run_id="r2",  # type: ignore[arg-type]
                                   dataset_version=dataset_version, configs=_configs(**train))


def test_same_data_recipe_and_code_is_unchanged(champion) -> None:
    champion()
    unchanged, diff = _check()
    assert diff == [] and unchanged is not None
    assert unchanged.champion_version == "3" and unchanged.run_id == "r2"
    assert unchanged.reason == (f"nothing changed since champion v3: dataset version v1, the "
                                f"same recipe, code {COMMIT}")
    # workers, CPUs, time limit and the like do not change what is learned
    assert _check(num_workers=2, time_limit_s=60.0, checkpoint_every=3)[0] is not None


def test_new_data_recipe_or_code_trains(champion, monkeypatch: pytest.MonkeyPatch) -> None:
    champion()
    assert _check("v2") == (None, ["dataset version v1 → v2"])
    assert _check(lr_g=1e-3, epochs=3) == (None, ["train.epochs 1 → 3",
                                                  "train.lr_g 0.0002 → 0.001"])
    monkeypatch.setattr(run_log, "code_version", lambda: "f" * 40)
    assert _check()[1] == [f"code version {COMMIT} → {'f' * 40}"]
    monkeypatch.setattr(run_log, "code_version", lambda: f"{COMMIT}+dirty")
    assert _check()[1] == [f"code version '{COMMIT}+dirty' cannot be compared (local changes)"]


def test_a_bare_package_version_never_counts_as_unchanged(champion,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 23, item 6: an image built without its commit reported `gan-retrain==0.1.0`,
    the same for every commit, so changed code looked unchanged."""
    champion(tags={"gan.code_version": "gan-retrain==0.1.0"})
    monkeypatch.setattr(run_log, "code_version", lambda: "gan-retrain==0.1.0")
    unchanged, diff = _check()
    assert unchanged is None and diff == [
        "code version 'gan-retrain==0.1.0' cannot be compared (a package version, not a "
        "commit: install from a git checkout, or build the image with GAN_CODE_VERSION)"]


def test_no_champion_means_train(champion) -> None:
    champion(tags={})
    assert _check() == (None, [])


def test_smoke_runs_publish_under_their_own_name() -> None:
    assert RetrainParams(preset="smoke").model_name == "gan-digits-smoke"
    assert P.params_from_options(smoke=True).model_name == "gan-digits-smoke"
    assert RetrainParams().model_name == "gan-digits"  # production name unchanged
    assert RetrainParams(preset="seed").model_name == "gan-digits"
    named = RetrainParams(preset="smoke", registry={"model_name": "mine"})
    assert named.model_name == "mine"  # an explicit name is the user's choice
    assert "gan-DATASET-smoke" in RetrainParams.model_fields["preset"].description


def test_force_option() -> None:
    assert P.params_from_options(force=True).force is True
    assert P.params_from_options().force is False
    assert RetrainParams.model_validate({"force": True}).force  # the form field


def test_gan_retrain_says_where_it_publishes_and_that_nothing_changed(
        monkeypatch: pytest.MonkeyPatch, settings_env) -> None:
    seen: list[RetrainParams] = []
    result = Unchanged(run_id="r2", model_name="gan-digits", champion_version="3",
                       dataset_version="v1", code_version=COMMIT,
                       reason="nothing changed since champion v3: dataset version v1, the same "
                              f"recipe, code {COMMIT}")
    state = SimpleNamespace(is_completed=lambda: True, result=lambda: result,
                            state_details=SimpleNamespace(flow_run_id="fr-1"))
    monkeypatch.setattr(cli, "use_api", lambda settings: "http://prefect.test/api")
    names: list[str] = []

    def run(params: RetrainParams, return_state: bool) -> SimpleNamespace:
        seen.append(params)
        return state

    def with_options(flow_run_name: str) -> object:  # the flow run is named before it starts
        names.append(flow_run_name)
        return run

    monkeypatch.setattr(flows.retrain, "retrain", SimpleNamespace(with_options=with_options))
    r = CliRunner().invoke(cli.app, ["retrain", "--smoke"])
    assert r.exit_code == 0, r.output
    assert "publishes to models:/gan-digits-smoke" in " ".join(r.output.split())
    assert seen[0].force is False and seen[0].model_name == "gan-digits-smoke"
    assert names == [seen[0].run_id]  # the flow run's name is the run id from the start
    r = CliRunner().invoke(cli.app, ["retrain", "--force"])
    out = " ".join(r.output.split())
    assert r.exit_code == 0 and seen[1].force is True, r.output
    assert ("nothing changed since champion v3" in out and "no training, no new version" in out
            and "models:/gan-digits@champion stays v3" in out)
