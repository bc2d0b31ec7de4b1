"""The retraining run's parameters outside the form: `gan retrain` options, run ids, messages.

What this module is:
  * `RETRAIN_OPTIONS` / `params_from_options`: `gan retrain`'s flags, declared once (flag,
    RetrainParams field, help; type from the field) → `RetrainParams` (the same model the
    Prefect UI form is generated from), validated by pydantic, so a bad value fails with the
    field's name before any work starts;
  * `new_run_id(model_name)`: `<model name>-<UTC timestamp>-<short uuid>`, the id that names
    everything one run writes (Ray run, checkpoints, evaluation files, MLflow run);
    `run_id_of_flow_run`: the id of a run started from Prefect (its flow run's name inside).

What it is not: no Prefect, no I/O; importing it is cheap (the CLI parses options with it).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from types import NoneType, UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from gan.core.config import RetrainParams
from gan.core.errors import explain
from gan.core.ids import RUN_ID_MAX_LEN


@dataclass(frozen=True)
class RetrainOption:
    """One `gan retrain` option: its flag(s), the RetrainParams field it sets, its help.

    Type and bounds come from the field (pydantic checks the value, naming the field); the
    default is None, "keep the preset's value". `field` None: a plain flag, off by default,
    that `params_from_options` handles itself (`--smoke`)."""

    flags: str  # "--batch-size", or "--gpu/--cpu" for an on/off pair
    field: str | None  # dotted RetrainParams field
    help: str = ""  # empty: the field's description

    @property
    def name(self) -> str:
        """The keyword of `params_from_options`: "--batch-size" → "batch_size"."""
        return self.flags.split("/")[0].removeprefix("--").replace("-", "_")


# `gan retrain`'s options, in --help order: to expose a RetrainParams field, add one row.
RETRAIN_OPTIONS: tuple[RetrainOption, ...] = (
    RetrainOption("--preset", "preset", "Starting recipe: default, seed, r3gan (RpGAN + "
                  "R1/R2, R3GAN ResNet) or smoke; the options below override it."),
    RetrainOption("--smoke", None, "Same as --preset smoke: tiny, fast."),
    RetrainOption("--source", "data.source", "digits, mnist, fashion-mnist, npz, images, "
                  "parquet, cifar10 or stacked-digits."),
    RetrainOption("--uri", "data.uri", "Where the data lies: local path, s3:// or http(s)://; "
                  "for images a folder or s3:// prefix of PNG/JPEG/WebP files (one sub-folder "
                  "per class, or flat)."),
    RetrainOption("--image-size", "data.image_size"),
    RetrainOption("--channels", "data.channels", "1 (grey) or 3 (RGB); default: from the "
                  "data."),
    RetrainOption("--max-bad-fraction", "data.max_bad_fraction", "Share of bad image files "
                  "skipped and counted; 0 (default) refuses any."),
    RetrainOption("--ignore-stray-files", "data.ignore_stray_files", "Leave out image files at "
                  "the root beside the class folders (otherwise refused, naming them)."),
    RetrainOption("--epochs", "epochs"),
    RetrainOption("--batch-size", "batch_size"),
    RetrainOption("--lr-g", "lr_g"),
    RetrainOption("--lr-d", "lr_d"),
    RetrainOption("--arch", "arch", "mlp, dcgan, dcgan-up (dcgan with resize-convolutions: "
                  "no checkerboard), dcgan-deep (from 4×4; --image-size 8-128, powers of 2), "
                  "resnet (SNGAN ResNet; --image-size 16, 32, 64 or 128) or r3gan (R3GAN "
                  "ResNet, no normalisation; --image-size 28, 32, 64, ...)."),
    RetrainOption("--loss", "loss", "bce, ns, hinge, wgan-gp or rpgan (relativistic "
                  "pairing, R3GAN)."),
    RetrainOption("--diffaugment", "diffaugment", "DiffAugment before D for small data: a "
                  "comma list of color, translation, cutout (e.g. color,translation,cutout)."),
    RetrainOption("--conditional/--unconditional", "conditional",
                  "Class-conditional generator or not."),
    RetrainOption("--workers", "num_workers"),
    RetrainOption("--stream", "stream", "How training workers read the dataset: auto "
                  "(stream its shards when bigger than --max-in-memory-mb), always, never."),
    RetrainOption("--max-in-memory-mb", "max_in_memory_mb"),
    RetrainOption("--gpu/--cpu", "use_gpu", "One GPU per worker, or CPU."),
    RetrainOption("--seed", "seed"),
    RetrainOption("--model-name", "registry.model_name", "Registered model name "
                  "(default gan-<dataset>; gan-<dataset>-smoke with --smoke)."),
    RetrainOption("--run-id", "run_id", "Names everything the run writes; reuse one to resume "
                  "a stopped run."),
    RetrainOption("--force", "force", "Train even when the dataset version, recipe and code equal "
                  "the champion's (otherwise such a run ends at once: nothing changed)."),
    RetrainOption("--redecide", "redecide", "With --run-id of a decided run: evaluate it "
                  "again and apply the gate again (a new decision record; the old one kept)."),
    RetrainOption("--holdout-fraction", "data.holdout_fraction"),
    RetrainOption("--judge", "eval.judge", "Feature space of the metrics: auto (with labels the "
                  "classifier judge if it passes its check, else the self-supervised one; "
                  "without labels the self-supervised one), classifier or self-supervised. "
                  "Built and checked before training."),
    RetrainOption("--judge-epochs", "eval.judge_epochs"),
    RetrainOption("--min-judge-accuracy", "eval.min_judge_accuracy"),
    RetrainOption("--ssl-judge-epochs", "eval.ssl_judge_epochs"),
    RetrainOption("--min-ssl-retrieval", "eval.min_ssl_retrieval"),
    RetrainOption("--min-ssl-knn-accuracy", "eval.min_ssl_knn_accuracy"),
    RetrainOption("--inception-weights", "eval.inception_weights", "Optional standard FID "
                  "for comparison with published numbers (never decides promotion): path or "
                  "s3:// URI of the FID Inception-v3 weights you supply "
                  "(pt_inception-2015-12-05-6726825d.pth); nothing is downloaded. Slow on CPU."),
    RetrainOption("--max-class-kl", "gate.max_class_kl", "Gate: how far the KL of real vs "
                  "generated class shares may exceed the real held-out images' own KL under "
                  "the same judge."),
    RetrainOption("--fid-margin", "gate.fid_margin", "Gate: FID must beat the champion's by "
                  "this much."),
    RetrainOption("--min-recall-ratio", "gate.min_recall_ratio", "Gate: recall must reach this "
                  "share of real data's (catches mode collapse); 0 = off."),
    RetrainOption("--min-class-judge-accuracy", "gate.min_class_judge_accuracy"),
)
# option keyword → dotted RetrainParams field it sets
OPTION_FIELDS: dict[str, str] = {o.name: o.field for o in RETRAIN_OPTIONS if o.field}


def field_info(dotted: str) -> FieldInfo:
    """The pydantic field behind a dotted RetrainParams path ("gate.fid_margin")."""
    model: Any = RetrainParams
    *parents, leaf = dotted.split(".")
    for p in parents:
        model = model.model_fields[p].annotation
    return model.model_fields[leaf]


def option_type(option: RetrainOption) -> Any:
    """The Python type of an option's value: the field's type without None (a Literal of
    names: str); `bool` for a `field`-less flag."""
    if option.field is None:
        return bool
    annotation = field_info(option.field).annotation
    if get_origin(annotation) in (Union, UnionType):
        annotation = next(a for a in get_args(annotation) if a is not NoneType)
    if get_origin(annotation) is Literal:
        return type(get_args(annotation)[0])
    return annotation


def option_help(option: RetrainOption) -> str:
    """The row's help, else the field's description."""
    if option.help or option.field is None:
        return option.help
    return field_info(option.field).description or ""




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
    """`params.resolve()` with its cross-field errors as a ParamsError naming the fields; also
    refused here, before any work: a model the registry could not publish (an arch the
    portable loader does not build)."""
    # lazy: torch; `gan --help` and the option table import this module
    from gan.registry.model_format import check_publishable

    try:
        resolved = params.resolve()
        check_publishable(resolved[1])
    except ValidationError as e:
        raise ParamsError(f"invalid retrain parameters: {explain(e, prefix=_section(e))}") from None
    except ValueError as e:  # also model_format.BundleError
        raise ParamsError(f"invalid retrain parameters: {e}") from None
    return resolved


def _section(err: ValidationError) -> str:
    """The config section a resolve() error is in: 'ModelConfig' → 'model'."""
    return {"DataConfig": "data", "ModelConfig": "model", "TrainConfig": "train",
            "EvalConfig": "eval"}.get(err.title, "")


def new_run_id(model_name: str, now: datetime | None = None) -> str:
    """`<model name>-<YYYYmmddTHHMMSSZ>-<6 hex>`, within RetrainParams.run_id's pattern."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return _run_id(model_name, f"{stamp}-{uuid.uuid4().hex[:6]}")


def run_id_of_flow_run(model_name: str, flow_run_name: str, flow_run_id: str) -> str:
    """`<model name>-<flow run name>-<6 hex of the flow run id>` for a run started from the
    Prefect UI or a schedule: the flow run keeps the name the server gave it at creation (the
    UI's toast and the runs list show it), and the run id contains that name; the flow run id
    makes it unique (generated names repeat). Clipped to the run-id pattern."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", flow_run_name).strip("-_")[:32]
    tail = flow_run_id.replace("-", "")[:6]
    return _run_id(model_name, f"{name}-{tail}" if name else tail)


def _run_id(model_name: str, tail: str) -> str:
    suffix = f"-{tail}"
    # Model names may contain '.', which run ids (and Ray run names) do not take.
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", model_name).strip("-_") or "run"
    return stem[: RUN_ID_MAX_LEN - len(suffix)] + suffix


def explicit_model_fields(params: RetrainParams) -> set[str]:
    """Model fields the user set on purpose (not from the preset): the data may not overrule
    them (`gan.core.model_fit.fit_model_to_data` refuses a contradiction instead)."""
    return {"conditional"} if params.conditional is not None else set()
