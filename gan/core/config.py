"""One frozen config tree for every knob.

What this module is: pydantic models (frozen, extra fields forbidden) whose field names are
at once the Prefect UI form, the MLflow params and the CLI flags; `PRESETS` and
`resolve_configs`.

What it is not: it reads no environment variable (that is `gan.core.settings.Settings`),
builds no model and opens no connection.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gan.core.form_schema import for_form
from gan.core.ids import RUN_ID_PATTERN

SMOKE_SUFFIX = "-smoke"  # the smoke preset's default model name: gan-DATASET-smoke
# Names MLflow's registry accepts without surprises in URIs (`models:/<name>@alias`).
BUNDLED_SOURCES = ("digits", "stacked-digits")  # made by code from scikit-learn: no data.uri
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class Frozen(BaseModel):
    """Base for config records: immutable, unknown fields rejected (typos fail loudly)."""

    # json_schema_extra: the Prefect form's schema (plain optional fields, bounds described).
    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra=for_form)


# --------------------------------------------------------------------------- data


class DataConfig(Frozen):
    """Where images come from and how they are prepared (see `gan.data.prepare`)."""

    source: Literal["digits", "mnist", "fashion-mnist", "npz", "images", "parquet",
                    "cifar10", "stacked-digits"] = Field(
        "digits",
        description="Dataset source: bundled scikit-learn digits, MNIST/Fashion-MNIST IDX "
        "files, an .npz with x (and optional y), a folder of image files (images), a Parquet "
        "table of image bytes (parquet), the CIFAR-10 binary release (cifar10), or "
        "stacked-digits (three bundled digits as R, G, B: 25,600 unlabelled 28 px images, "
        "1,000 modes; see docs/modes.md).",
    )
    uri: str | None = Field(
        None,
        description="For mnist/fashion-mnist: base URL, s3:// prefix or local folder holding "
        "the four IDX .gz files. For npz: path or s3:// URI of the .npz file. For images: a "
        "folder or s3:// prefix of PNG/JPEG/WebP files (one sub-folder per class, or flat), or "
        "a .zip/.tar of one. For parquet: a .parquet file, or a folder/prefix of them. For "
        "cifar10: cifar-10-binary.tar.gz or a folder/prefix/URL of its .bin files.",
    )
    name: str | None = Field(
        None,
        description="Dataset name used in storage paths and model names; defaults to the "
        "source (or the npz file's stem).",
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
    )
    image_size: int | None = Field(
        None, ge=8, le=128, description="Images are resized to this H=W. Empty: from the "
        "data: the images' median shorter side if it is 28, 32, 64 or 128, else the next of "
        "those up, capped at 128 (digits and MNIST → 28, CIFAR-10 → 32).")
    holdout_fraction: float = Field(
        0.2, gt=0.0, lt=0.9, description="Share of images held out for evaluation: each image "
        "by a hash of its pixels, so an image stays in its half as the data grows."
    )
    split_seed: int = Field(0, ge=0, description="Salt of the hash that puts each image in the "
                            "train or holdout split (another seed: another split).")
    limit: int | None = Field(
        None, ge=20, description="Keep at most this many images, in the classes' proportions, "
        "chosen by a hash of their pixels (smoke runs); empty keeps all."
    )
    channels: Literal[1, 3] | None = Field(
        None, description="Image channels: 1 (grey) or 3 (RGB); empty: from the data (grey "
        "when every image is grey)."
    )
    max_bad_fraction: float = Field(
        0.0, ge=0.0, lt=1.0, description="Share of image files that may be bad (truncated, "
        "not an image, ...) and are then skipped and counted; 0 refuses any bad file."
    )
    image_column: str = Field("image", min_length=1, max_length=200,
                              description="parquet: the column of encoded image bytes.")
    label_column: str = Field("label", max_length=200, description="parquet: the column of "
                              "integer or string labels, if the table has it; '' = unlabelled.")
    ignore_stray_files: bool = Field(
        False, description="images: leave out image files lying at the root beside the class "
        "folders (e.g. a cover.png); without it such files are refused, naming them, since "
        "they would make the whole set unlabelled.")

    @model_validator(mode="after")
    def _uri_required(self) -> DataConfig:
        if self.source not in BUNDLED_SOURCES and not self.uri:
            raise ValueError(f"data.uri is required for source {self.source!r}")
        return self

    @property
    def dataset_name(self) -> str:
        if self.name:
            return self.name
        if self.source in ("npz", "images", "parquet") and self.uri:
            stem = Path(self.uri.rstrip("/")).name
            for suffix in (".npz", ".parquet", ".zip", ".tar", ".tar.gz", ".tgz"):
                stem = stem.removesuffix(suffix)
            stem = re.sub(r"[^a-z0-9_-]", "-", stem.lower()).strip("-_")[:64]
            return stem or self.source
        return self.source


# --------------------------------------------------------------------------- model

ArchName = Literal["mlp", "dcgan", "dcgan-up", "dcgan-deep", "resnet", "r3gan"]


class ModelConfig(Frozen):
    """Architecture of G and D; stored in every checkpoint so `build()` can rebuild it."""

    arch: ArchName = Field(
        "dcgan", description="mlp: the seed GAN; dcgan: conv, two doublings from H/4; "
        "dcgan-up: dcgan with resize-convolutions in G (no checkerboard); "
        "dcgan-deep: Radford et al.'s DCGAN from 4×4 (image_size 8-128, powers of 2); resnet: "
        "the SNGAN ResNet G and D (Miyato et al. 2018; image_size 16, 32, 64 or 128); r3gan: "
        "the R3GAN ResNet without normalisation (Huang et al. 2024; image_size s·2^k, s 4..7: "
        "28, 32, 64, ...).")
    conditional: bool = Field(False, description="Class-conditional G and D (labelled samples).")
    latent_dim: int = Field(100, ge=2, le=1024, description="Size of z.")
    image_size: int = Field(28, ge=8, le=128, description="H=W of generated images.")
    channels: int = Field(1, ge=1, le=4, description="Image channels.")
    num_classes: int = Field(10, ge=2, le=1000, description="Classes, for conditional models.")
    g_hidden: tuple[int, ...] = Field((256, 512, 1024), description="MLP G hidden widths.")
    d_hidden: tuple[int, ...] = Field((1024, 512, 256), description="MLP D hidden widths.")
    base_channels: int = Field(64, ge=4, le=512, description="DCGAN width (channels at 1/4 "
                               "res); resnet and r3gan: the width of every stage.")
    blocks_per_stage: int = Field(1, ge=1, le=4, description="r3gan: residual blocks per "
                                  "resolution (the paper: 2).")
    spectral_norm: bool = Field(False, description="Spectral normalisation on D's layers.")
    leaky_slope: float = Field(0.2, ge=0.0, lt=1.0, description="LeakyReLU slope.")
    d_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout in the MLP D.")

    @model_validator(mode="after")
    def _size_fits_arch(self) -> ModelConfig:
        if self.arch in ("dcgan", "dcgan-up") and self.image_size % 4:
            raise ValueError(f"model.image_size {self.image_size} must be divisible by 4 for "
                             f"{self.arch}")
        if self.arch == "r3gan":
            side = self.image_size
            while side % 2 == 0 and side // 2 >= 4:
                side //= 2
            if not 4 <= side <= 7:
                raise ValueError(f"model.image_size {self.image_size} must be s·2^k with s in "
                                 "4..7 for r3gan (e.g. --image-size 28, 32 or 64)")
        if self.arch == "dcgan-deep" and self.image_size not in (8, 16, 32, 64, 128):
            raise ValueError(f"model.image_size {self.image_size} must be 8, 16, 32, 64 or 128 "
                             "for dcgan-deep (e.g. --image-size 32)")
        if self.arch == "resnet" and self.image_size not in (16, 32, 64, 128):
            raise ValueError(f"model.image_size {self.image_size} must be 16, 32, 64 or 128 for "
                             "resnet (e.g. --image-size 32)")
        return self


# --------------------------------------------------------------------------- training

LossName = Literal["bce", "ns", "hinge", "wgan-gp", "rpgan"]
_DA_OP = "(color|translation|cutout)"
DIFFAUGMENT_RE = rf"^({_DA_OP}(,{_DA_OP})*)?$"  # "" or e.g. "color,translation,cutout"


class TrainConfig(Frozen):
    """Optimisation, loop and distribution knobs (see `gan.train.loop`, `gan.train.ray.driver`)."""

    loss: LossName = Field(
        "hinge",
        description="bce: the seed's BCE with one-sided label smoothing; ns: non-saturating; "
        "hinge; wgan-gp: Wasserstein with gradient penalty; rpgan: relativistic pairing "
        "(R3GAN; pair it with r1r2_gamma > 0).",
    )
    real_label: float = Field(
        0.9, gt=0.5, le=1.0, description="Target for real images in bce (one-sided smoothing)."
    )
    epochs: int = Field(30, ge=1, le=10_000, description="Passes over the train split.")
    batch_size: int = Field(64, ge=1, le=8192, description="Global batch size (all workers).")
    lr_g: float = Field(2e-4, gt=0.0, le=1.0, description="Adam learning rate of G.")
    lr_d: float = Field(2e-4, gt=0.0, le=1.0, description="Adam learning rate of D.")
    beta1: float = Field(0.5, ge=0.0, lt=1.0,
                         description="Adam beta1 of G (and of D unless set).")
    beta2: float = Field(0.999, ge=0.0, lt=1.0,
                         description="Adam beta2 of G (and of D unless set).")
    beta1_d: float | None = Field(None, ge=0.0, lt=1.0,
                                  description="Adam beta1 of D; empty: beta1.")
    beta2_d: float | None = Field(None, ge=0.0, lt=1.0,
                                  description="Adam beta2 of D; empty: beta2.")
    d_steps: int = Field(1, ge=1, le=10, description="D steps per G step.")
    gp_weight: float = Field(10.0, ge=0.0, description="Gradient-penalty weight (wgan-gp).")
    r1r2_gamma: float = Field(
        0.0, ge=0.0, le=1000.0, description="γ of the zero-centred gradient penalties R1 (real) "
        "and R2 (fake) in D's loss, (γ/2)·(‖∇D(x)‖² + ‖∇D(G(z))‖²), every D step, any loss; "
        "0 = off. R3GAN: 0.05 on CIFAR-10, 2 on FFHQ-64.")
    r1r2_every: int = Field(
        1, ge=1, le=64, description="R1/R2 on every k-th D step only, weighted γ·k (lazy "
        "regularisation, Karras et al. 2020, StyleGAN2 §B): cheaper D steps; R3GAN: 1.")
    schedule: Literal["constant", "r3gan-cosine"] = Field(
        "constant", description="constant: lr, betas and γ as set; r3gan-cosine: R3GAN's "
        "cosine decay over schedule_kimg: lr to lr/4, r1r2_gamma to γ/10, beta2 to 0.99.")
    schedule_kimg: float | None = Field(
        None, gt=0.0, le=1e7, description="r3gan-cosine: thousands of images over which the "
        "cosine runs (then the final values hold); empty: the run's planned images, epochs × "
        "train images (R3GAN: 20,000 kimg).")
    mode_seeking: float = Field(
        0.0, ge=0.0, le=100.0, description="Weight of the mode-seeking term (MSGAN) in G's loss; "
        "0 = off. Keeps a conditional G from ignoring z (one image per class)."
    )
    ema_decay: float = Field(
        0.999, ge=0.0, lt=1.0, description="EMA decay of G weights; 0 switches EMA off."
    )
    diffaugment: str = Field(
        "", pattern=DIFFAUGMENT_RE, description="DiffAugment (Zhao et al. 2020) before D, on "
        "real and fake alike: a comma list of color, translation, cutout; '' = off. For small "
        "datasets (a few thousand images)."
    )
    seed: int = Field(0, ge=0, description="Seed of weights, noise and shuffling.")
    divergence_patience: int = Field(
        200, ge=1, description="Stop after this many consecutive saturated-D steps."
    )
    checkpoint_every: int = Field(5, ge=1, description="Checkpoint every K epochs (and at end).")
    num_workers: int = Field(1, ge=1, le=256, description="Ray Train workers.")
    use_gpu: bool = Field(False, description="One GPU per worker, NCCL.")
    cpus_per_worker: int = Field(1, ge=1, le=256, description="CPUs reserved per worker.")
    bf16: bool = Field(False, description="bf16 autocast (GPU only).")
    max_failures: int = Field(2, ge=0, le=100, description="Worker-group restarts Ray allows.")
    time_limit_s: float | None = Field(
        None, gt=0, description="Wall-clock limit of training, enforced on the Ray side."
    )
    stream: Literal["auto", "always", "never"] = Field(
        "auto", description="How Ray Train workers get the dataset version: never = load it "
        "whole into memory; always = stream its Parquet shards with Ray Data; auto = stream "
        "only when it would take more than max_in_memory_mb in memory."
    )
    max_in_memory_mb: int = Field(
        2048, ge=1, le=10_000_000, description="auto: a dataset version whose float32 images "
        "(train + holdout) take more MiB than this is streamed instead of loaded whole."
    )

    @property
    def betas_g(self) -> tuple[float, float]:
        return (self.beta1, self.beta2)

    @property
    def betas_d(self) -> tuple[float, float]:
        return (
            self.beta1 if self.beta1_d is None else self.beta1_d,
            self.beta2 if self.beta2_d is None else self.beta2_d,
        )

    @model_validator(mode="after")
    def _bf16_needs_gpu(self) -> TrainConfig:
        if self.bf16 and not self.use_gpu:
            raise ValueError("train.bf16 needs train.use_gpu")
        return self


# --------------------------------------------------------------------------- evaluation


class EvalConfig(Frozen):
    """How a generator is judged (see `gan.eval.evaluate`) and by which judge
    (`gan.eval.judge_ladder`).

    Naming rule: a field named `judge_*` shapes the classifier judge and one named
    `ssl_judge_*` the label-free judge: such fields enter that judge's cache key
    (`gan.eval.judge_ladder.judge_settings`), so a judge trained with other values is never
    reused. Thresholds (`min_*`) only check a judge and stay out of the key.
    """

    n_samples: int | None = Field(
        None, ge=100, le=100_000, description="Generated samples; empty: max(holdout, 1000)."
    )
    seed: int = Field(1234, ge=0, description="Seed of the evaluation latents.")
    min_judge_accuracy: float = Field(
        0.95, ge=0.0, le=1.0, description="The classifier judge needs this holdout accuracy; "
        "below it the label-free judge is tried (eval.judge auto), or the run stops before "
        "training."
    )
    judge_epochs: int = Field(15, ge=1, le=200,
                              description="Epochs to train the classifier judge.")
    class_share_threshold: float = Field(
        0.02, ge=0.0, lt=1.0, description="A class is covered when its share exceeds this."
    )
    n_seeds: int = Field(
        3, ge=2, le=20, description="Evaluation repeats, latent seeds seed, seed+1, ...: each "
        "metric is reported as mean ± spread over them, and the gate's noise is that spread."
    )
    judge: Literal["auto", "classifier", "self-supervised"] = Field(
        "auto", description="Feature space of the metrics: the classifier judge (needs labels) "
        "or a self-supervised encoder (any data); auto = classifier when the data has labels."
    )
    ssl_judge_epochs: int | None = Field(
        None, ge=1, le=200, description="Epochs to train the self-supervised (label-free) "
        "judge; empty: sized by the data (about 1,500 steps, 20-60 epochs: "
        "gan.eval.ssl_train.ssl_recipe)."
    )
    min_ssl_retrieval: float = Field(
        0.3, ge=0.0, le=1.0, description="Label-free judge check: share of augmented holdout "
        "images whose nearest feature is their own original (untrained ≈ 0.2, trained "
        "0.45-0.9), and 0.1 above the untrained encoder's; 0 = off (the smoke preset)."
    )
    min_ssl_knn_accuracy: float = Field(
        0.2, ge=0.0, le=1.0, description="Label-free judge check where labels exist: 5-NN "
        "holdout accuracy in its feature space, and 0.1 of the way from chance (the largest "
        "class's share) to 1; 0 = off. Labels only check this judge, never train it."
    )
    inception_weights: str | None = Field(
        None, max_length=1024, description="Optional standard FID (Inception-v3 pool3, for "
        "comparison with published numbers; it does not decide promotion): local path or "
        "s3:// URI of the FID Inception weights you supply (pytorch-fid's "
        "pt_inception-2015-12-05-6726825d.pth; nothing is downloaded). Empty: off. Costs one "
        "Inception pass per image: n samples × seeds + holdout + n, slow on CPU."
    )

    @field_validator("inception_weights", mode="before")
    @classmethod
    def _weights_not_url(cls, v: Any) -> Any:
        """'' (an empty form field) is off; an http(s) URL is refused: nothing is downloaded."""
        if isinstance(v, str) and not v.strip():
            return None
        if isinstance(v, str) and v.strip().lower().startswith(("http://", "https://")):
            raise ValueError("a URL: nothing is downloaded at run time; download the file "
                             "once and give its local path or an s3:// URI")
        return v.strip() if isinstance(v, str) else v


class GateConfig(Frozen):
    """Promotion rules (see `gan.eval.evaluate.gate`)."""

    max_class_kl: float = Field(
        0.1, ge=0.0, description="Class KL(real classes || generated) may exceed the real "
        "held-out images' own class KL under the same judge by at most this much."
    )
    min_class_judge_accuracy: float = Field(
        0.9, ge=0.0, le=1.0, description="Class rules (classes covered, class KL) apply only "
        "under a classifier judge whose holdout accuracy reaches this; below it its class "
        "figures are mostly its own error, and the rules are reported, not applied."
    )
    fid_margin: float = Field(
        0.0, ge=0.0, description="Candidate FID must be below champion FID minus this margin."
    )
    require_all_classes: bool = Field(
        True, description="Every class that the real held-out images cover under the judge "
        "must be covered.")
    min_recall_ratio: float = Field(
        0.25, ge=0.0, le=1.0, description="Diversity: recall (Kynkäänniemi et al. 2019) must "
        "reach this share of real data's recall. Catches mode collapse, e.g. a conditional G "
        "that draws one image per class, which FID and class coverage barely see; 0 = off."
    )
    noise_k: float = Field(
        2.0, ge=0.0, le=10.0, description="Candidate FID must beat the re-scored champion's by "
        "more than noise_k × the measured spread of the difference (plus fid_margin)."
    )
    max_nonfinite_fraction: float = Field(
        0.01, ge=0.0, le=1.0, description="Max share of generated samples with a NaN/inf pixel."
    )
    min_copy_ct: float | None = Field(
        -3.0, le=0.0, description="Memorisation, Meehan et al. 2020's data-copying test: C_T, "
        "the holdout-weighted mean over k-means cells of the Z score of samples' against "
        "held-out images' distances to the training images, must not fall below this (fresh "
        "samples ≈ 0 ± 1; ≪ 0: samples sit nearer to training images than new real images "
        "do); empty = off."
    )
    min_copy_distance_ratio: float = Field(
        0.5, ge=0.0, le=1.0, description="Memorisation: median sample-to-nearest-training-image "
        "distance over the holdout's must reach this (fresh samples ≈ 1, 0 once half the "
        "samples are training images); 0 = off."
    )


class RegistryConfig(Frozen):
    """Where a generator is published (see `gan.registry.publish`)."""

    model_name: str | None = Field(
        None, description="Registered model name the run publishes to; default "
        "gan-DATASET (gan-DATASET-smoke for the smoke preset). Letters, digits, . _ -"
    )
    experiment: str = Field("gan-retrain", min_length=1, max_length=200,
                            description="MLflow experiment the run is logged in.")

    @field_validator("model_name")
    @classmethod
    def _valid_name(cls, v: str | None) -> str | None:
        if v is not None and not MODEL_NAME_RE.match(v):
            raise ValueError(
                f"model name {v!r} is not accepted: use 1-128 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        return v


# --------------------------------------------------------------------------- presets

# Each preset is a partial config tree; user values override it (see `RetrainParams.resolve`).
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The classic MLP GAN exactly as the seed describes it.
    "seed": {
        "model": {"arch": "mlp", "conditional": False, "spectral_norm": False},
        "train": {
            "loss": "bce", "real_label": 0.9, "lr_g": 2e-4, "lr_d": 2e-4,
            "beta1": 0.5, "beta2": 0.999, "ema_decay": 0.0, "batch_size": 128,
            "epochs": 210,  # ≈ 5 min on one idle core (gan.tools.recipes calibrate), as the default
        },
    },
    # Chosen from measurements on digits (README "Default recipe"; `python -m gan.tools.recipes`).
    # Without the mode-seeking term this conditional G drew one image per class (recall 0.06).
    "default": {
        "model": {"arch": "dcgan", "conditional": True, "spectral_norm": True, "base_channels": 32},
        "train": {"loss": "hinge", "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.0, "beta2": 0.9,
                  "ema_decay": 0.999, "batch_size": 64, "mode_seeking": 0.5,
                  "epochs": 100},  # ≈ 4-5 min on one core, the seed preset's budget
    },
    # R3GAN (Huang et al. 2024): RpGAN + R1 + R2 (γ 0.05, the paper's CIFAR-10 value), its
    # ResNet without normalisation, Adam β1 0, and the cosine decay of lr, γ and β2 over the
    # run's planned images. Widths for 2 CPU cores; docs/recipes.md has the GPU sizing.
    "r3gan": {
        "model": {"arch": "r3gan", "conditional": True, "spectral_norm": False,
                  "base_channels": 32, "blocks_per_stage": 1},
        "train": {"loss": "rpgan", "r1r2_gamma": 0.05, "schedule": "r3gan-cosine",
                  "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.0, "beta2": 0.9,
                  "ema_decay": 0.999, "batch_size": 64, "mode_seeking": 0.0,
                  "epochs": 20},  # ≈ 4-5 min on one core for the digits (~110 img/s)
    },
    # Tiny and fast: for tests and `--smoke` runs.
    "smoke": {
        "data": {"limit": 200},
        "model": {"arch": "mlp", "g_hidden": (32, 64), "d_hidden": (64, 32)},
        "train": {"epochs": 1, "batch_size": 32, "checkpoint_every": 1},
        "eval": {"n_samples": 200, "judge_epochs": 2, "min_judge_accuracy": 0.0,
                 "ssl_judge_epochs": 3, "min_ssl_retrieval": 0.0, "min_ssl_knn_accuracy": 0.0},
    },
}


class RetrainParams(Frozen):
    """Everything one retraining run takes: the Prefect UI form and `gan retrain`'s flags.

    The preset gives a full recipe; each field left empty keeps the preset's value.
    """

    preset: Literal["default", "seed", "r3gan", "smoke"] = Field(
        "default", description="Starting recipe: default (measured best), seed (classic MLP "
        "GAN), r3gan (RpGAN + R1/R2 and the R3GAN ResNet, Huang et al. 2024), smoke (tiny, "
        "seconds; publishes to gan-DATASET-smoke unless a model name is "
        "given, never to the production model). Fields below override it."
    )
    data: DataConfig = Field(default_factory=DataConfig, description="Dataset source.")
    arch: ArchName | None = Field(
        None, description="Model architecture.")
    conditional: bool | None = Field(None, description="Class-conditional generator.")
    loss: LossName | None = Field(None, description="GAN loss.")
    epochs: int | None = Field(None, ge=1, le=10_000, description="Training epochs.")
    batch_size: int | None = Field(None, ge=1, le=8192, description="Global batch size.")
    lr_g: float | None = Field(None, gt=0.0, le=1.0, description="Generator learning rate.")
    lr_d: float | None = Field(None, gt=0.0, le=1.0, description="Discriminator learning rate.")
    num_workers: int | None = Field(None, ge=1, le=256, description="Ray Train workers.")
    use_gpu: bool | None = Field(None, description="Train on GPUs (one per worker).")
    seed: int | None = Field(None, ge=0, description="Training seed.")
    time_limit_s: float | None = Field(None, gt=0, description="Training wall-clock limit (s).")
    diffaugment: str | None = Field(None, pattern=DIFFAUGMENT_RE, description="DiffAugment "
                                    "before D: e.g. color,translation,cutout; '' = off.")
    stream: Literal["auto", "always", "never"] | None = Field(
        None, description="Workers stream the dataset's shards (always), load it whole "
        "(never), or stream above max_in_memory_mb (auto, the default).")
    max_in_memory_mb: int | None = Field(
        None, ge=1, le=10_000_000, description="auto: stream a dataset bigger than this "
        "in memory (MiB of float32 images; default 2048).")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation settings.")
    gate: GateConfig = Field(default_factory=GateConfig, description="Promotion thresholds.")
    registry: RegistryConfig = Field(default_factory=RegistryConfig, description="Model name.")
    run_id: str | None = Field(
        None,
        pattern=RUN_ID_PATTERN,
        description="Names everything this run writes; reuse one to resume a stopped run. "
        "Empty: `<model name>-<flow run name>-<6 hex of the flow run id>`, so the run id "
        "starts with the name the UI gave the flow run.",
    )
    force: bool = Field(
        False, description="Train even when nothing changed: a new run whose dataset version, "
        "recipe and code equal those of the champion's run otherwise ends at once, training "
        "nothing and registering no version."
    )
    redecide: bool = Field(
        False, description="With run_id of a decided run: evaluate it again (a new numbered "
        "report) and apply the gate again under a new decision record, the earlier one kept. "
        "Without it, a rerun of a decided run reuses the report its decision was made on."
    )

    @model_validator(mode="after")
    def _redecide_names_a_run(self) -> RetrainParams:
        if self.redecide and not self.run_id:
            raise ValueError("redecide needs run_id: the run whose decision to make again")
        return self

    def resolve(self) -> tuple[DataConfig, ModelConfig, TrainConfig, EvalConfig]:
        """Preset + overrides → validated configs. Raises ValueError naming the field."""
        p = PRESETS[self.preset]
        model_over = {"arch": self.arch, "conditional": self.conditional,
                      "image_size": self.data.image_size or self._placeholder_size(p),
                      "channels": self.data.channels}
        train_over = {k: getattr(self, k) for k in (
            "loss", "epochs", "batch_size", "lr_g", "lr_d", "num_workers", "use_gpu", "seed",
            "time_limit_s", "diffaugment", "stream", "max_in_memory_mb")}
        if self.use_gpu is False:
            train_over["bf16"] = False
        # exclude_defaults, not exclude_unset: params that went through JSON (the Prefect UI,
        # a deployment run) arrive with every field set, which must not erase the preset.
        data = DataConfig(**{**p.get("data", {}), **self.data.model_dump(exclude_defaults=True)})
        ev = EvalConfig(**{**p.get("eval", {}), **self.eval.model_dump(exclude_defaults=True)})
        return (
            data,
            ModelConfig(**{**p.get("model", {}), **_given(model_over)}),
            TrainConfig(**{**p.get("train", {}), **_given(train_over)}),
            ev,
        )

    def _placeholder_size(self, preset: dict[str, dict[str, Any]]) -> int | None:
        """An empty data.image_size is decided by the data after preparation
        (`gan.core.model_fit`); until then an architecture that needs a power of two gets 32
        (any size it accepts), the others the preset's."""
        arch = self.arch or preset.get("model", {}).get("arch")
        return 32 if arch in ("resnet", "dcgan-deep") else None

    @property
    def model_name(self) -> str:
        """Where the run publishes: `registry.model_name`, else `gan-<dataset>`, and for the
        smoke preset `gan-DATASET-smoke`, so smoke runs never add versions to the
        production model."""
        if self.registry.model_name:
            return self.registry.model_name
        return f"gan-{self.data.dataset_name}" + (SMOKE_SUFFIX if self.preset == "smoke" else "")


def _given(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def resolve_configs(
    preset: str, model: dict[str, Any] | None = None, train: dict[str, Any] | None = None
) -> tuple[ModelConfig, TrainConfig]:
    """Preset + overrides → validated (ModelConfig, TrainConfig); for the library and tests."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    p = PRESETS[preset]
    return (
        ModelConfig(**{**p.get("model", {}), **(model or {})}),
        TrainConfig(**{**p.get("train", {}), **(train or {})}),
    )
