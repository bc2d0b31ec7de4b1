"""The small typed records the four stages pass to each other by value (URIs, not tensors).

prepare_data → DatasetRef → (prepare_judge → JudgeRef) → train → TrainedRef → evaluate → Report
→ register → ModelRef (or, when nothing changed since the champion, prepare_data → DatasetRef →
Unchanged).
Each is JSON-serialisable (Prefect results, MLflow tags) and frozen.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DatasetRef(Record):
    """A prepared, versioned dataset in object storage (`gan.data.prepare.prepare`)."""

    name: str  # e.g. "digits"
    version: str  # content hash of the tensors + preparation config (hex, 16 chars)
    uri: str  # s3://<bucket>/datasets/<name>/<version>/
    source: str  # where the raw data came from (source kind + uri)
    n_train: int
    n_holdout: int
    num_classes: int
    image_size: int
    channels: int = 1
    class_hist_train: list[int] = Field(default_factory=list)
    labelled: bool = True  # False: an unlabelled source (every label 0, num_classes 1)
    class_names: list[str] = Field(default_factory=list)  # names of labels 0..K-1, if known
    n_skipped: int = 0  # bad image files left out under data.max_bad_fraction
    n_duplicates_dropped: int = 0  # exact duplicate images dropped (one of each kept)
    n_label_conflicts_dropped: int = 0  # images whose pixels came with two labels (dropped)
    reused: bool = False  # True when the version was already in storage


class JudgeRef(Record):
    """The judge of a dataset version, built (or loaded from its cache) and checked before any
    training (`gan.eval.judge_ladder.prepare_judge`); `evaluate` loads exactly this judge."""

    kind: str  # "classifier" or "self-supervised"
    uri: str  # s3://<bucket>/judges/<version>/<kind>-<key>: its weights and JSON
    key: str  # short hash of `settings`: the cache key
    settings: dict[str, Any]  # everything that shaped the judge (kind, format, epochs, seed, arch)
    dataset_version: str
    labelled: bool  # the dataset has labels (class rules are possible at all)
    accuracy: float  # holdout accuracy (classifier) or 5-NN / retrieval accuracy (label-free)
    quality: dict[str, float] = Field(default_factory=dict)  # its quality-check numbers
    weights_sha256: str
    reason: str  # why this kind, e.g. "the data has no labels"
    passed_over: list[str] = Field(default_factory=list)  # rungs tried first, and why not them
    reused: bool  # loaded from the cache (False: trained by this call)
    seconds: float = 0.0  # wall time of prepare_judge: training (or loading) and the check


class TrainedRef(Record):
    """The outcome of training (`gan.train.ray.driver.train`)."""

    run_id: str  # names everything the run writes
    checkpoint_uri: str  # s3://.../checkpoint.pt of the final (or last complete) checkpoint
    dataset_version: str
    model_cfg: dict[str, Any]  # ModelConfig.model_dump(): rebuilds G and D
    train_cfg: dict[str, Any]  # TrainConfig.model_dump()
    epochs_completed: int
    global_step: int
    history: list[dict[str, float]] = Field(default_factory=list)  # one dict per epoch
    resumed_from_epoch: int = 0  # >0 when the run continued from a checkpoint
    images_per_s: float = 0.0
    diverged: bool = False
    divergence_reason: str | None = None
    stopped_by_time_limit: bool = False  # stopped early at train_cfg.time_limit_s (checkpointed)
    ray_run_name: str = ""
    ray_storage_uri: str = ""
    ray_nodes: list[str] = Field(default_factory=list)  # the Ray node id of each rank, by rank
    data_path: str = "memory"  # how the workers read the data: "memory" (whole) or "stream"


class ChampionScore(Record):
    """The current champion re-scored in a candidate's evaluation (same judge, holdout, n and
    latent seeds), or why it could not be (`comparable` False, `reason`)."""

    version: str
    comparable: bool = True
    reason: str = ""  # why not comparable, e.g. "its images are (1, 32, 32), the data's ..."
    metrics: dict[str, float] = Field(default_factory=dict)  # means over the eval seeds
    spread: dict[str, float] = Field(default_factory=dict)  # std over the eval seeds
    per_seed: dict[str, list[float]] = Field(default_factory=dict)


class Report(Record):
    """An evaluation (`gan.eval.evaluate.evaluate`); `metrics` feed MLflow and the gate."""

    run_id: str
    dataset_version: str
    metrics: dict[str, float]  # fid, kid_mean, precision, ...: means over eval_seeds
    floors: dict[str, float]  # the same metrics real-train vs real-holdout
    ceilings: dict[str, float]  # e.g. inception_score on real data
    class_hist: list[float]  # generated class shares, len = num_classes ([]: no labels)
    classes_covered: int
    judge_accuracy: float
    conditional_accuracy: float | None = None
    n_samples: int
    seeds: dict[str, int] = Field(default_factory=dict)
    diverged: bool = False
    report_uri: str  # s3://.../report.json
    markdown_uri: str
    artifacts: dict[str, str] = Field(default_factory=dict)  # name → s3:// URI of PNGs
    markdown: str = ""
    eval_seeds: list[int] = Field(default_factory=list)  # latent seeds, one evaluation each
    spread: dict[str, float] = Field(default_factory=dict)  # std of metrics over eval_seeds
    per_seed: dict[str, list[float]] = Field(default_factory=dict)  # metric → one per seed
    champion: ChampionScore | None = None  # the champion re-scored alongside (None: none)
    divergence_reason: str | None = None  # why `diverged`, when evaluation found the evidence
    judge: str = "classifier"  # the feature space: "classifier" or "self-supervised" (no labels)
    judge_quality: dict[str, float] = Field(default_factory=dict)  # its quality-check numbers
    compute_s: float = 0.0  # seconds of evaluation compute (judge loaded, metrics, pictures)
    judge_ref: JudgeRef | None = None  # which judge, why that kind, reused or trained
    # The optional standard FID's weights and cost (uri, sha256, standard, images, seconds,
    # images_per_s, device); None when eval.inception_weights is unset. Its values are
    # metrics["fid_inception"] and floors["fid_inception"]; never read by the gate.
    inception: dict[str, Any] | None = None


class GateDecision(Record):
    promote: bool
    reasons: list[str]  # one line per rule, passed or failed
    champion_version: str | None = None
    champion_fid: float | None = None
    report_uri: str = ""  # the report it was made on ("" for decisions made before it was kept)
    number: int = 1  # 1 for a version's first decision; 2, 3, ... for each `redecide`


class ModelRef(Record):
    """A registered model version (`gan.registry.publish.register`)."""

    name: str
    version: str
    uri: str  # models:/<name>/<version>
    champion: bool
    decision: GateDecision
    mlflow_run_id: str
    mlflow_run_url: str = ""


class Unchanged(Record):
    """A run that trained nothing: the champion was trained from the same dataset version,
    recipe and code (`gan.registry.lineage`); the flow's result instead of a ModelRef."""

    run_id: str
    model_name: str
    champion_version: str
    dataset_version: str
    code_version: str
    reason: str  # "nothing changed since champion v3: dataset ..., same recipe, code ..."
