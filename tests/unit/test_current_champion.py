"""Which champion `evaluate` re-scores (issue 23, item 5): `flows.retrain.current_champion`.

A champion that cannot be loaded must never block the run: the candidate is evaluated, the gate
says the champion "cannot be scored" and the candidate registers as @challenger. The case the
flow missed: a champion whose weights no longer fit the code (a model class changed since it
was published). `load_state_dict` raises a RuntimeError, which `current_champion` let through,
so `evaluate` failed on every run until someone moved @champion by hand.

The logic is tested with the registry's functions stubbed; the mismatched weights go through
the real load path (`gan.registry.load.load_generator` on a real MLflow model directory whose
weights were written by another model), only MLflow's download replaced by a local copy.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_model as save_weights

from flows import retrain as flow
from gan.core.config import GateConfig
from gan.core.records import Report
from gan.eval.gate import gate
from gan.nets.models import build_generator
from gan.registry import connect as registry_connect
from gan.registry import load as registry_load
from gan.registry import model_format as mm

MODEL = "gan-digits"


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Stubs for what `current_champion` asks the registry; the test sets the answers."""
    answers: dict[str, Any] = {"reachable": True, "champion": "3", "load": None}

    def reachable(settings: Any, attempts: int = 3) -> None:
        if not answers["reachable"]:
            raise registry_connect.RegistryUnavailable("MLflow tracking server http://x down")

    def load(uri: str, *, settings: Any = None) -> Any:
        answers["asked"] = uri
        if isinstance(answers["load"], BaseException):
            raise answers["load"]
        return answers["load"]

    monkeypatch.setattr(flow, "get_run_logger", lambda: logging.getLogger("test"))
    monkeypatch.setattr(flow.registry_connect, "check_reachable", reachable)
    monkeypatch.setattr(flow.registry, "champion",
                        lambda settings, name: (answers["champion"], {}))
    monkeypatch.setattr(flow.registry_load, "load_generator", load)
    return answers


def test_no_champion_yet_is_none(registry: dict[str, Any]) -> None:
    registry["champion"] = None
    assert flow.current_champion(None, MODEL) is None  # type: ignore[arg-type]


def test_a_loadable_champion_is_passed_on(registry: dict[str, Any]) -> None:
    G = torch.nn.Linear(2, 2)
    registry["load"] = G
    got = flow.current_champion(None, MODEL)  # type: ignore[arg-type]
    assert got is not None and (got.version, got.generator, got.problem) == ("3", G, "")
    assert registry["asked"] == f"models:/{MODEL}/3"


def test_registry_down_evaluates_without_the_champion(registry: dict[str, Any]) -> None:
    registry["reachable"] = False
    got = flow.current_champion(None, MODEL)  # type: ignore[arg-type]
    assert got is not None and got.generator is None
    assert got.problem.startswith("the registry could not be asked: MLflow tracking server")


@pytest.mark.parametrize("error", [
    mm.BundleError("model_config.json: format 'x', expected 'gan-generator/1'"),
    registry_connect.ModelNotFoundError("model 'models:/gan-digits/3' not found"),
    OSError("disk full"),
])
def test_an_unloadable_champion_is_a_problem_not_a_failure(registry: dict[str, Any],
                                                          error: Exception) -> None:
    registry["load"] = error
    got = flow.current_champion(None, MODEL)  # type: ignore[arg-type]
    assert got is not None and got.version == "3" and got.generator is None
    assert got.problem == f"its model could not be loaded: {error}"


def test_connection_lost_while_loading_is_raised_for_a_retry(registry: dict[str, Any]) -> None:
    registry["load"] = registry_connect.RegistryUnavailable("MLflow tracking server gone")
    with pytest.raises(registry_connect.RegistryUnavailable):
        flow.current_champion(None, MODEL)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- real load path


@pytest.fixture
def misfit_model_dir(tiny_cond_model_dir: Path, tmp_path: Path) -> Path:
    """A copy of a real MLflow model directory whose generator weights were written by another
    model (wider layers): what a champion published by older code looks like to new code."""
    model_dir = tmp_path / "misfit"
    shutil.copytree(tiny_cond_model_dir, model_dir)
    bundle = next(model_dir.rglob(mm.GENERATOR_FILE)).parent
    cfg = mm.read_model_config(bundle)
    other = build_generator(cfg.model_copy(update={"base_channels": cfg.base_channels * 2}))
    save_weights(other, str(bundle / mm.GENERATOR_FILE), metadata={"format": mm.FORMAT})
    return model_dir


def test_weights_that_do_not_fit_raise_the_registrys_error_naming_the_model(
        misfit_model_dir: Path) -> None:
    with pytest.raises(registry_connect.RegistryError) as info:
        registry_load.load_generator(str(misfit_model_dir))
    text = str(info.value)
    assert text.startswith(f"model {str(misfit_model_dir)!r}: its weights "
                           f"({mm.GENERATOR_FILE}) do not fit the DCGANGenerator this code builds")
    assert "size mismatch" in text  # torch's own words: which tensor, which shapes


def test_a_champion_whose_weights_do_not_fit_cannot_be_scored(
        monkeypatch: pytest.MonkeyPatch, misfit_model_dir: Path) -> None:
    """The real load path under `current_champion`, MLflow's download replaced by the copy;
    then the gate, fed what evaluation makes of that champion, says it cannot be scored."""
    real_download = registry_load.download_model
    monkeypatch.setattr(flow, "get_run_logger", lambda: logging.getLogger("test"))
    monkeypatch.setattr(flow.registry_connect, "check_reachable", lambda s, attempts=3: None)
    monkeypatch.setattr(flow.registry, "champion", lambda settings, name: ("3", {}))
    monkeypatch.setattr(registry_load, "download_model",
                        lambda uri, dst, settings=None: real_download(str(misfit_model_dir), dst))
    got = flow.current_champion(None, MODEL)  # type: ignore[arg-type]
    assert got is not None and got.version == "3" and got.generator is None
    assert got.problem.startswith(f"its model could not be loaded: model 'models:/{MODEL}/3':")
    report = _report_with_unscorable_champion(got.problem)
    decision = gate(report, None, GateConfig(), champion_version="3")
    assert not decision.promote
    assert (f"FAIL: champion v3 cannot be scored on this data ({got.problem}): not promoted "
            "automatically") in decision.reasons


def _report_with_unscorable_champion(problem: str) -> Report:
    """A report that passes every absolute rule, its champion not comparable (`problem`), as
    `gan.eval.evaluate` writes it for a `Champion(version, None, problem)`."""
    from gan.core.records import ChampionScore

    return Report(run_id="r1", dataset_version="v1",
                  metrics={"fid": 1.0, "class_kl": 0.01, "recall": 0.6, "copy_ct": 0.2,
                           "copy_distance_ratio": 1.0},
                  floors={"recall": 0.7}, ceilings={}, class_hist=[0.1] * 10,
                  classes_covered=10, judge_accuracy=0.97, n_samples=100,
                  report_uri="s3://b/runs/r1/eval/report.json",
                  markdown_uri="s3://b/runs/r1/eval/report.md",
                  champion=ChampionScore(version="3", comparable=False, reason=problem))


def test_the_mismatch_is_told_in_one_line(misfit_model_dir: Path) -> None:
    """The reason lands in the gate's decision (a registry tag): torch's first mismatch and a
    count, not one line per tensor."""
    with pytest.raises(registry_connect.ModelIncompatibleError) as info:
        registry_load.load_generator(str(misfit_model_dir))
    text = str(info.value)
    assert "\n" not in text and len(text) < 700
    assert re.search(r"size mismatch for \S+: copying a param with shape .* \(and \d+ more\)$",
                     text), text
