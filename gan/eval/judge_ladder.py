"""The judge ladder: which judge scores a dataset version, built and checked before training.

What this module is: the judge of a dataset version as the data step builds it (`prepare_judge`:
the flow's `prepare_judge` task right after `prepare_data`, and `gan data prepare`):
  - the rungs (`rungs`): with labels the classifier judge, then the label-free one; without
    labels the label-free one; `eval.judge` = classifier / self-supervised forces one rung;
  - each rung is loaded from its cache or trained (`cached_judge`), then checked; the first
    that passes is the judge and a `JudgeRef` records it (kind, cache URI, quality figures, why
    that kind, which rungs were passed over and why, reused or trained);
  - when the last rung fails, `JudgeError` names every failure and the `gan retrain` flags
    (with their form fields) to change, before anything was trained.
The cache, `s3://<bucket>/judges/<version>/<kind>-<key>/`, is keyed by everything that shapes
the judge (`judge_settings`: kind, the format version of its code, every `judge_*` or
`ssl_judge_*` field of `EvalConfig`, seed and architecture), so a judge trained with other
settings is never reused. `load_judge` rebuilds exactly the judge a `JudgeRef` names:
evaluation never trains one.

What it is not: no judge training or quality math (`gan.eval.judge`, `gan.eval.ssl_judge`), no
metrics, no Prefect (the flow's task is a call of `prepare_judge`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from gan.core.config import EvalConfig
from gan.core.records import DatasetRef, JudgeRef
from gan.data.prepare import PreparedData, load_prepared
from gan.eval import judge as J
from gan.eval import ssl_judge as S
from gan.eval.judge import FolderFiles, JudgeError, JudgeFiles, StorageFiles
from gan.nets.judge_net import JudgeArch
from gan.nets.ssl_net import SSLArch

if TYPE_CHECKING:
    from gan.io.storage import Storage

__all__ = ["CLASSIFIER", "FLAGS", "LABEL_FREE", "FolderFiles", "JudgeError", "build_judge",
           "cache_key", "cached_judge", "judge_settings", "load_judge", "prepare_judge",
           "rungs"]

CLASSIFIER, LABEL_FREE = "classifier", "self-supervised"
JUDGE_SEED = 0  # a judge depends on its data and settings, never on the evaluation's seed
KEY_CHARS = 12  # hex characters of the settings hash in the cache folder's name
MIN_HOLDOUT = 10  # the evaluation's minimum (PRDC's k = 5 neighbours, KID's subsets)
Log = Callable[[str], None]

# The `gan retrain` flag of each field a judge error tells the user to change; pinned to
# flows.params.RETRAIN_OPTIONS by tests/unit/test_judge_ladder.py (gan.eval cannot import flows).
FLAGS: dict[str, str] = {
    "eval.judge": "--judge",
    "eval.judge_epochs": "--judge-epochs",
    "eval.min_judge_accuracy": "--min-judge-accuracy",
    "eval.ssl_judge_epochs": "--ssl-judge-epochs",
    "eval.min_ssl_retrieval": "--min-ssl-retrieval",
    "eval.min_ssl_knn_accuracy": "--min-ssl-knn-accuracy",
    "data.holdout_fraction": "--holdout-fraction",
}


def knob(field: str, cfg: EvalConfig | None = None) -> str:
    """'--judge-epochs (eval.judge_epochs, now 15)': the flag, the form field, its value."""
    value = getattr(cfg, field.split(".", 1)[1]) if cfg is not None else None
    shown = "empty: sized by the data" if value is None else value
    now = f", now {shown}" if cfg is not None else ""
    return f"{FLAGS[field]} ({field}{now})"


# --------------------------------------------------------------------------- the two kinds


@dataclass(frozen=True)
class Kind:
    """What the ladder needs of one kind of judge: its code's format version, the prefix of the
    `EvalConfig` fields that shape it, its files, and how to train, (de)serialise and check it."""

    name: str
    fmt: int  # bumped in the judge's own module when its code changes: old caches then unused
    prefix: str  # EvalConfig fields named <prefix>* shape it (and enter its cache key)
    weights_file: str
    meta_file: str
    arch: Callable[[PreparedData], Any]  # the dataclass its network is built from
    train: Callable[[PreparedData, EvalConfig, int], Any]
    to_bytes: Callable[[Any], tuple[bytes, dict[str, Any]]]
    from_bytes: Callable[[bytes, dict[str, Any], str], Any]
    check: Callable[[Any, EvalConfig], None]  # raises JudgeError
    fixes: Callable[[EvalConfig], str]  # which knobs to turn when the check fails


def _shape(data: PreparedData) -> tuple[int, int]:
    return int(data.x_train.shape[1]), int(data.x_train.shape[2])


KINDS: dict[str, Kind] = {
    CLASSIFIER: Kind(
        name=CLASSIFIER, fmt=J.JUDGE_FORMAT, prefix="judge_",
        weights_file=J.WEIGHTS_FILE, meta_file=J.META_FILE,
        arch=lambda d: JudgeArch(*_shape(d), num_classes=d.num_classes),
        train=lambda d, cfg, seed: J.train_judge(d, cfg.judge_epochs, seed),
        to_bytes=J.judge_to_bytes, from_bytes=J.judge_from_bytes,
        check=lambda j, cfg: J.check_judge(j, cfg.min_judge_accuracy),
        fixes=lambda cfg: (f"raise {knob('eval.judge_epochs', cfg)} or lower "
                           f"{knob('eval.min_judge_accuracy', cfg)}")),
    LABEL_FREE: Kind(
        name=LABEL_FREE, fmt=S.SSL_FORMAT, prefix="ssl_judge_",
        weights_file=S.WEIGHTS_FILE, meta_file=S.META_FILE,
        arch=lambda d: SSLArch(*_shape(d)),
        train=lambda d, cfg, seed: S.train_ssl_judge(d, cfg.ssl_judge_epochs, seed),
        to_bytes=S.ssl_to_bytes, from_bytes=S.ssl_from_bytes, check=S.check_ssl_judge,
        fixes=lambda cfg: (f"raise {knob('eval.ssl_judge_epochs', cfg)}, or lower "
                           f"{knob('eval.min_ssl_retrieval', cfg)} or "
                           f"{knob('eval.min_ssl_knn_accuracy', cfg)}")),
}


# --------------------------------------------------------------------------- the cache key


def judge_settings(kind: str, data: PreparedData, cfg: EvalConfig,
                   seed: int = JUDGE_SEED) -> dict[str, Any]:
    """Everything that shapes a judge of `kind` on `data`: the cache key's content.

    Every `EvalConfig` field named `<prefix>*` (judge_* for the classifier, ssl_judge_* for the
    label-free judge) enters by that naming rule alone, so a field added later is part of the key
    without a change here; thresholds (min_*) only check a judge and stay out."""
    k = KINDS[kind]
    fields = {name: value for name, value in cfg.model_dump(mode="json").items()
              if name.startswith(k.prefix)}
    return {"kind": kind, "format": k.fmt, "seed": seed, "arch": asdict(k.arch(data)),
            "dataset_version": data.version, **fields}


def cache_key(settings: dict[str, Any]) -> str:
    """The first KEY_CHARS hex characters of sha256 of the settings' canonical JSON."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_CHARS]


def judge_uri(storage: Storage, settings: dict[str, Any]) -> str:
    """`s3://<bucket>/judges/<version>/<kind>-<key>`."""
    return f"{J.judge_prefix(storage, settings['dataset_version'])}/" \
           f"{settings['kind']}-{cache_key(settings)}"


def cached_judge(files: JudgeFiles, kind: str, data: PreparedData, cfg: EvalConfig,
                 log: Log | None = None) -> tuple[Any, bool]:
    """(judge, reused): the judge of `kind` whose JSON in `files` records exactly
    `judge_settings(kind, data, cfg)`, else a new one trained and written there (weights first,
    JSON last: its presence means complete). Not checked here (see `build_judge`)."""
    k, settings = KINDS[kind], judge_settings(kind, data, cfg)
    raw = files.read(k.meta_file)
    if raw is not None:
        meta = json.loads(raw)
        weights = files.read(k.weights_file)
        if meta.get("cache_key") == settings and weights is not None:
            try:
                judge = k.from_bytes(weights, meta, files.where)
                judge.meta["reused"] = True
                return judge, True
            except JudgeError as e:  # a torn or tampered cache: train again
                (log or _quiet)(f"cached {kind} judge unusable ({e}); retraining")
    judge = k.train(data, cfg, settings["seed"])
    weights, meta = k.to_bytes(judge)
    meta.update(cache_key=settings, kind=kind, dataset_name=data.name,
                n_train=len(data.x_train), n_holdout=len(data.x_holdout))
    files.write(k.weights_file, weights)  # weights first ...
    files.write(k.meta_file, json.dumps(meta, indent=2, sort_keys=True).encode())  # JSON last
    judge.meta = {**meta, "reused": False}
    return judge, False


def _quiet(_line: str) -> None:
    pass


# --------------------------------------------------------------------------- the ladder


def rungs(data: PreparedData, cfg: EvalConfig) -> list[tuple[str, str]]:
    """[(kind, why this kind)] in the order to try them; JudgeError (naming --judge) when
    `eval.judge` asks for the classifier judge on data without labels."""
    labelled = data.labelled and data.num_classes >= 2
    if cfg.judge == CLASSIFIER and not labelled:
        raise JudgeError(f"eval.judge='classifier' needs labels; dataset {data.name!r} has "
                         f"none: use {FLAGS['eval.judge']} auto or self-supervised "
                         "(eval.judge)")
    if cfg.judge != "auto":
        return [(cfg.judge, f"eval.judge={cfg.judge!r} ({FLAGS['eval.judge']}) asks for it")]
    if not labelled:
        return [(LABEL_FREE, "the data has no labels")]
    return [(CLASSIFIER, "the data has labels"),
            (LABEL_FREE, "the data has labels, but the classifier judge failed its check")]


def _check_sizes(data: PreparedData) -> None:
    if len(data.x_holdout) < MIN_HOLDOUT:
        raise JudgeError(
            f"dataset {data.name!r} has {len(data.x_holdout)} holdout images; a judge's check "
            f"and the evaluation need at least {MIN_HOLDOUT}: bring more images, or raise "
            f"{FLAGS['data.holdout_fraction']} (data.holdout_fraction)")


def build_judge(files_of: Callable[[dict[str, Any]], JudgeFiles], data: PreparedData,
                cfg: EvalConfig, log: Log | None = None) -> tuple[Any, JudgeRef]:
    """Climb the ladder (`rungs`): the first judge that passes its check, and its `JudgeRef`
    (`files_of(settings)`: where that judge is cached; the ref's uri is its `where`).

    Raises JudgeError, before any generator is trained, when the last rung fails: the message
    names each rung's failure and the flags (and form fields) that change it."""
    log = log or _quiet
    _check_sizes(data)
    passed_over: list[str] = []
    for kind, why in rungs(data, cfg):
        start = time.perf_counter()
        files = files_of(judge_settings(kind, data, cfg))
        try:
            judge, reused = cached_judge(files, kind, data, cfg, log)
            KINDS[kind].check(judge, cfg)
        except (JudgeError, ValueError) as e:
            passed_over.append(f"{kind} judge: {e} ({KINDS[kind].fixes(cfg)})")
            log(f"{kind} judge refused: {e}")
            continue
        settings = judge_settings(kind, data, cfg)
        ref = JudgeRef(
            kind=kind, uri=files.where, key=cache_key(settings), settings=settings,
            dataset_version=data.version, labelled=data.labelled and data.num_classes >= 2,
            accuracy=float(judge.accuracy), quality=dict(judge.quality),
            weights_sha256=str(judge.meta["weights_sha256"]), reason=why,
            passed_over=passed_over, reused=reused,
            seconds=round(time.perf_counter() - start, 3))
        log(describe(ref))
        return judge, ref
    raise JudgeError(
        f"no judge of dataset version {data.version!r} passes its check, so no generator "
        f"trained on it could be scored; nothing was trained. {' | '.join(passed_over)}. "
        f"{FLAGS['eval.judge']} (eval.judge) picks one judge; lower thresholds make its "
        "numbers less trustworthy.")


def prepare_judge(storage: Storage, dataset: DatasetRef | PreparedData, cfg: EvalConfig,
                  log: Log | None = None) -> JudgeRef:
    """The data step's judge: `build_judge` on the dataset version (read from storage, or
    given loaded), cached in object storage (`judges/<version>/<kind>-<key>/`)."""
    data = dataset if isinstance(dataset, PreparedData) else load_prepared(storage, dataset)
    _, ref = build_judge(lambda s: StorageFiles(storage, judge_uri(storage, s)), data, cfg, log)
    return ref


def load_judge(storage: Storage, ref: JudgeRef) -> Any:
    """Exactly the judge `ref` names, from its cache (never trained here); JudgeError when its
    files are gone or are not the weights that were checked."""
    k = KINDS[ref.kind]
    files = StorageFiles(storage, ref.uri)
    raw, weights = files.read(k.meta_file), files.read(k.weights_file)
    if raw is None or weights is None:
        raise JudgeError(f"the {ref.kind} judge at {ref.uri} is gone: run the flow again "
                         "(its prepare_judge step rebuilds it)")
    meta = json.loads(raw)
    if meta.get("weights_sha256") != ref.weights_sha256:
        raise JudgeError(f"the {ref.kind} judge at {ref.uri} is not the one checked before "
                         f"training (weights {str(meta.get('weights_sha256'))[:12]}…, expected "
                         f"{ref.weights_sha256[:12]}…)")
    judge = k.from_bytes(weights, meta, ref.uri)
    judge.meta["reused"] = True
    return judge


def describe(ref: JudgeRef) -> str:
    """One line: kind, why, quality, reused or trained, seconds (CLI and logs)."""
    q = ", ".join(f"{k} {v:.4g}" for k, v in sorted(ref.quality.items()))
    how = "reused from the cache" if ref.reused else "trained"
    return (f"{ref.kind} judge ({ref.reason}): {q}; {how} in {ref.seconds:.1f} s, "
            f"{ref.uri}")
