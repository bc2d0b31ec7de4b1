"""What a new run would train, compared with what the champion was trained from.

What this module is: `Lineage` (dataset version, recipe, code version), `candidate_lineage`
for a run about to start, `champion_lineage` read back from MLflow (the champion version's
run: its tags `gan.dataset.version`, `gan.code_version` and its params, all logged by
`gan.registry.run_log`), and `differences`, the pure comparison behind "nothing changed":

    recipe  = the `model.*` and `train.*` params, except the settings that decide how long and
              on how much hardware a run trains but not what it learns (RESUMABLE_TRAIN_FIELDS
              other than epochs: workers, CPUs, time limit, failures, checkpoint cadence)
    code    = `gan.registry.code_version`: the git commit of the checkout, or the one baked into
              the image; local changes to the code (`+dirty`), a bare package version
              (`gan-retrain==0.1.0`: every commit has it) or an unknown version never equal
              anything: that code cannot be told apart

`nothing_changed(...)` puts them together: an `Unchanged` record (the run should train nothing)
or None with the differences listed.

What it is not: no `force` or run-id logic (the flow decides when to ask), no registry writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from gan.core.records import Unchanged
from gan.core.settings import Settings
from gan.registry import publish
from gan.registry import run_log as mlflow_run
from gan.registry.connect import client
from gan.train.checkpoint import RESUMABLE_TRAIN_FIELDS

RECIPE_SECTIONS = ("model", "train")
NOT_RECIPE = frozenset(f"train.{k}" for k in RESUMABLE_TRAIN_FIELDS - {"epochs"})


class Lineage(BaseModel):
    """What a model version was (or a run would be) trained from."""

    model_config = ConfigDict(frozen=True)

    dataset_version: str
    code_version: str
    recipe: dict[str, str]  # flattened params, e.g. {"train.lr_g": "0.0002", ...}


def recipe_params(params: Mapping[str, Any]) -> dict[str, str]:
    """The recipe part of a params tree or of a run's flattened params."""
    flat = mlflow_run.flatten_params(params)
    return {k: v for k, v in flat.items()
            if k.split(".", 1)[0] in RECIPE_SECTIONS and k not in NOT_RECIPE}


def candidate_lineage(dataset_version: str, configs: Mapping[str, Any]) -> Lineage:
    """The lineage of a run about to train `configs` ({"model": ..., "train": ...}) on a
    dataset version, with this checkout's code version."""
    return Lineage(dataset_version=dataset_version, code_version=mlflow_run.code_version(),
                   recipe=recipe_params({k: configs[k] for k in RECIPE_SECTIONS}))


def champion_lineage(settings: Settings, model_name: str) -> tuple[str, Lineage] | None:
    """(version, lineage) of `model_name`@champion from its MLflow run; None when the model
    or its champion does not exist."""
    c = client(settings)
    version = publish.champion_version(c, model_name)  # None without model or alias
    if version is None:
        return None
    run = c.get_run(c.get_model_version(model_name, version).run_id)
    tags = run.data.tags
    return version, Lineage(dataset_version=tags.get("gan.dataset.version", ""),
                            code_version=tags.get("gan.code_version", ""),
                            recipe=recipe_params(run.data.params))


PACKAGE_VERSION_PREFIX = "gan-retrain=="  # code_version's last resort: no commit known


def incomparable_code(version: str) -> str | None:
    """Why a code version does not name one exact state of the code, else None."""
    if not version or version == "unknown":
        return "unknown"
    if version.endswith("+dirty"):
        return "local changes"
    if version.startswith(PACKAGE_VERSION_PREFIX):
        return ("a package version, not a commit: install from a git checkout, or build the "
                "image with GAN_CODE_VERSION")
    return None


def comparable_code(version: str) -> bool:
    """A code version that names one exact state of the code (a clean commit)."""
    return incomparable_code(version) is None


def differences(candidate: Lineage, champion: Lineage) -> list[str]:
    """What differs between a candidate run and the champion's, one line each; [] when the
    candidate would train the same recipe on the same data with the same code."""
    out = []
    if candidate.dataset_version != champion.dataset_version:
        out.append(f"dataset version {champion.dataset_version or '?'} → "
                   f"{candidate.dataset_version}")
    why = incomparable_code(candidate.code_version)
    if why is not None:
        out.append(f"code version {candidate.code_version!r} cannot be compared ({why})")
    elif candidate.code_version != champion.code_version:
        out.append(f"code version {champion.code_version or '?'} → {candidate.code_version}")
    keys = sorted(set(candidate.recipe) | set(champion.recipe))
    changed = [k for k in keys if candidate.recipe.get(k) != champion.recipe.get(k)]
    out += [f"{k} {champion.recipe.get(k, '(unset)')} → {candidate.recipe.get(k, '(unset)')}"
            for k in changed]
    return out


def nothing_changed(settings: Settings, *, model_name: str, run_id: str, dataset_version: str,
                    configs: Mapping[str, Any]) -> tuple[Unchanged | None, list[str]]:
    """(Unchanged, []) when `model_name`@champion was trained from this dataset version,
    recipe and code; else (None, what differs), [] also when there is no champion."""
    found = champion_lineage(settings, model_name)
    if found is None:
        return None, []
    version, champ = found
    cand = candidate_lineage(dataset_version, configs)
    diff = differences(cand, champ)
    if diff:
        return None, diff
    reason = (f"nothing changed since champion v{version}: dataset version "
              f"{dataset_version}, the same recipe, code {cand.code_version}")
    return Unchanged(run_id=run_id, model_name=model_name, champion_version=version,
                     dataset_version=dataset_version, code_version=cand.code_version,
                     reason=reason), []
