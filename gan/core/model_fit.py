"""The model's shape from the dataset version: channels, image size, labels → `ModelConfig`.

What this module is: `fit_model_to_data(cfg, dataset, explicit=...)`, which the retrain flow
calls between prepare_data and train. A recipe (preset + overrides) says *how* to model; the
prepared dataset version says *what*: its channels (1 or 3), its image size and whether it has
labels. So the model takes `channels` and `image_size` from the dataset, a labelled dataset's
class count as `num_classes` (conditional models), and unlabelled data gets the unconditional
model. A field the user set explicitly (named in `explicit`) that contradicts the data is an
error naming both, never silently changed.

What it is not: no I/O, no model building; the checks of a whole training request stay in
`gan.train.ray.driver`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gan.core.config import ModelConfig
from gan.core.records import DatasetRef

FITTED_FIELDS = ("channels", "image_size", "conditional", "num_classes")  # what the data decides


def data_model_fields(cfg: ModelConfig, dataset: DatasetRef) -> dict[str, Any]:
    """The model fields the dataset version decides, given the recipe's `cfg`."""
    labelled = dataset.labelled and dataset.num_classes >= 2
    wanted: dict[str, Any] = {"channels": dataset.channels, "image_size": dataset.image_size}
    if not labelled:
        wanted["conditional"] = False  # unlabelled data: the unconditional model
    elif cfg.conditional:
        wanted["num_classes"] = dataset.num_classes
    return wanted


def fit_model_to_data(cfg: ModelConfig, dataset: DatasetRef,
                      explicit: Iterable[str] = ()) -> ModelConfig:
    """`cfg` with channels, image size, conditioning and class count taken from `dataset`.

    `explicit`: model fields the user set on purpose (e.g. {"conditional"} for
    --conditional); such a field that the data contradicts raises ValueError naming the
    field, its value and what the dataset has. Other fields are replaced silently."""
    unknown = set(explicit) - set(ModelConfig.model_fields)
    if unknown:
        raise ValueError(f"unknown model fields {sorted(unknown)}")
    wanted = data_model_fields(cfg, dataset)
    where = f"dataset {dataset.name}@{dataset.version}"
    clashes = [f"model.{k}={getattr(cfg, k)!r} but {where} {_has(k, v, dataset)}"
               for k, v in wanted.items() if k in set(explicit) and getattr(cfg, k) != v]
    if clashes:
        raise ValueError("the model was set explicitly against the data: " + "; ".join(clashes))
    # Validated again: e.g. resnet needs an image size the data may not have.
    return ModelConfig(**{**cfg.model_dump(), **wanted})


def _has(field: str, value: Any, dataset: DatasetRef) -> str:
    if field == "conditional":
        return ("is unlabelled: a conditional model needs class labels (drop --conditional, "
                "or give the images one sub-folder per class)")
    if field == "num_classes":
        return f"has {dataset.num_classes} classes"
    if field == "channels":
        return f"has {value}-channel images (--channels chooses them when preparing the data)"
    return f"has {value}×{value} images (--image-size chooses it when preparing the data)"
