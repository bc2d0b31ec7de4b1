"""The retraining run's parameters outside the form: `gan retrain` options, run ids, messages.

What this module is:
  * `OPTION_FIELDS` / `params_from_options`: `gan retrain`'s flags → `RetrainParams` (the same
    model the Prefect UI form is generated from), validated by pydantic, so a bad value fails
    with the field's name before any work starts;
  * `new_run_id(model_name)`: `<model name>-<UTC timestamp>-<short uuid>`, the id that names
    everything one run writes (Ray run, checkpoints, evaluation files, MLflow run).

What it is not: no Prefect, no I/O; importing it is cheap (the CLI parses options with it).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from gan.core.config import RetrainParams
from gan.core.errors import explain
from gan.core.ids import RUN_ID_MAX_LEN

# CLI option (without `--`, `-` → `_`) → dotted RetrainParams field it sets.
OPTION_FIELDS: dict[str, str] = {
    "preset": "preset",
    "source": "data.source",
    "uri": "data.uri",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr_g": "lr_g",
    "lr_d": "lr_d",
    "arch": "arch",
    "loss": "loss",
    "conditional": "conditional",
    "workers": "num_workers",
    "gpu": "use_gpu",
    "seed": "seed",
    "model_name": "registry.model_name",
    "run_id": "run_id",
    "max_class_kl": "gate.max_class_kl",
    "fid_margin": "gate.fid_margin",
    "min_recall_ratio": "gate.min_recall_ratio",
}


class ParamsError(ValueError):
    """Parameters that do not validate; the message names each field and the problem."""


def nest(options: dict[str, Any]) -> dict[str, Any]:
    """{"data.source": "npz", "epochs": 3} → {"data": {"source": "npz"}, "epochs": 3};
    None values are dropped (an option not given keeps the preset's value)."""
    tree: dict[str, Any] = {}
    for dotted, value in options.items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def params_from_options(*, smoke: bool = False, **options: Any) -> RetrainParams:
    """`gan retrain`'s options → validated RetrainParams; raises ParamsError naming the field.

    Option names are the keys of OPTION_FIELDS; None means "not given". `smoke` is
    `--preset smoke` (given together with another preset, it is an error)."""
    unknown = sorted(set(options) - set(OPTION_FIELDS))
    if unknown:
        raise ParamsError(f"unknown retrain options: {', '.join(unknown)}")
    if smoke:
        if options.get("preset") not in (None, "smoke"):
            raise ParamsError(f"--smoke means --preset smoke, but --preset "
                              f"{options['preset']!r} was given too")
        options["preset"] = "smoke"
    tree = nest({OPTION_FIELDS[k]: v for k, v in options.items()})
    try:
        return RetrainParams.model_validate(tree)
    except ValidationError as e:
        raise ParamsError(f"invalid retrain parameters: {explain(e)}") from None


def resolve(params: RetrainParams) -> tuple[Any, Any, Any, Any]:
    """`params.resolve()` with its cross-field errors as a ParamsError naming the fields."""
    try:
        return params.resolve()
    except ValidationError as e:
        raise ParamsError(f"invalid retrain parameters: {explain(e, prefix=_section(e))}") from None
    except ValueError as e:
        raise ParamsError(f"invalid retrain parameters: {e}") from None


def _section(err: ValidationError) -> str:
    """The config section a resolve() error is in: 'ModelConfig' → 'model'."""
    return {"DataConfig": "data", "ModelConfig": "model", "TrainConfig": "train",
            "EvalConfig": "eval"}.get(err.title, "")


def new_run_id(model_name: str, now: datetime | None = None) -> str:
    """`<model name>-<YYYYmmddTHHMMSSZ>-<6 hex>`, within RetrainParams.run_id's pattern."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    suffix = f"-{stamp}-{uuid.uuid4().hex[:6]}"
    # Model names may contain '.', which run ids (and Ray run names) do not take.
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", model_name).strip("-_") or "run"
    return stem[: RUN_ID_MAX_LEN - len(suffix)] + suffix
